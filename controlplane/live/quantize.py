"""Weight quantization of a loaded model, and honest byte counts of the result.

int8 on CPU is torch's dynamic quantization (int8 weights, activations quantized per call; the
fbgemm/x86 kernels make it the real CPU speed-up). nf4 is bitsandbytes 4-bit with double
quantization. Each has a probe that says *why* it cannot run on a device, so callers can skip
with a reason instead of crashing.
"""

from __future__ import annotations

import logging
import warnings
from functools import lru_cache

import torch
from torch import nn

# Linear layers kept in full precision: the output head is small next to the body and
# quantizing it costs most of the accuracy (the bitsandbytes/transformers default too).
KEEP_FULL_PRECISION = ("lm_head",)


class PrecisionUnavailable(RuntimeError):
    """The requested precision cannot run on this device; the message says why."""


def _quantize_dynamic():
    """torch's dynamic quantization entry point (deprecated in favour of torchao, still shipped)."""
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError:  # pragma: no cover - removed in some future torch
        return None
    return quantize_dynamic


def int8_unavailable_reason(device: torch.device) -> str | None:
    """None when torch dynamic int8 can run on ``device``; else a reason."""
    if device.type != "cpu":
        return f"int8 uses torch dynamic quantization, which has CPU kernels only (device is {device})"
    if _quantize_dynamic() is None:
        return "torch.ao.quantization.quantize_dynamic is not available in this torch build"
    engines = torch.backends.quantized.supported_engines
    if not any(e in engines for e in ("x86", "fbgemm", "qnnpack", "onednn")):
        return f"no quantized CPU engine in this torch build (engines: {engines})"
    return None


#: What bitsandbytes logs when importing it fails to fetch an optional faster CPU kernel (logger, message start):
#: on a CPU with AVX-512 bf16 it asks the Hugging Face Hub for ``kernels-community/quantization-bitsandbytes``,
#: which offline (or never downloaded) is not there, and falls back to its own 4-bit kernels; nf4 works. Both
#: lines were printed on every nf4 load as if something had failed.
OPTIONAL_KERNEL_NOISE = (
    ("kernels._internals.hf_hub", "Skipping publisher trust check for 'kernels-community/"),
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward from kernels-community"),
)


class _DropOptionalKernelNoise(logging.Filter):
    def __init__(self, start: str) -> None:
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.start)


def silence_optional_kernel_noise() -> None:
    """Drop `OPTIONAL_KERNEL_NOISE` from its loggers (once; their other records pass)."""
    for name, start in OPTIONAL_KERNEL_NOISE:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropOptionalKernelNoise) and f.start == start for f in logger.filters):
            logger.addFilter(_DropOptionalKernelNoise(start))


@lru_cache(maxsize=8)
def nf4_unavailable_reason(device_str: str) -> str | None:
    """None when bitsandbytes 4-bit runs on ``device_str``; else a reason (probed once per device)."""
    silence_optional_kernel_noise()  # (before bitsandbytes is first imported: it logs them then)
    try:
        import bitsandbytes as bnb  # noqa: F401
        from bitsandbytes.nn import Linear4bit
    except Exception as exc:  # ImportError, or a broken native library
        return f"bitsandbytes is not importable: {exc.__class__.__name__}: {exc}"
    device = torch.device(device_str)
    dtype = nf4_compute_dtype(device)
    try:
        layer = Linear4bit(64, 64, bias=False, compute_dtype=dtype, compress_statistics=True, quant_type="nf4")
        layer = layer.to(device)
        out = layer(torch.ones(2, 64, dtype=dtype, device=device))
        if not torch.isfinite(out).all():
            return f"bitsandbytes 4-bit produced non-finite output on {device}"
    except Exception as exc:
        return f"bitsandbytes {getattr(bnb, '__version__', '?')} cannot run 4-bit on {device}: {exc}"
    return None


def nf4_compute_dtype(device: torch.device) -> torch.dtype:
    """bf16 where the device does bf16 well (CPU, Ampere+), else fp16."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def quantize_int8(model: nn.Module) -> nn.Module:
    """Dynamic int8 quantization of every Linear except the output head (CPU only)."""
    quantize_dynamic = _quantize_dynamic()
    if quantize_dynamic is None:
        raise PrecisionUnavailable(int8_unavailable_reason(torch.device("cpu")) or "int8 unavailable")
    targets = {name for name, mod in model.named_modules() if type(mod) is nn.Linear and not _kept(name)}
    with warnings.catch_warnings():
        # torch marks torch.ao.quantization deprecated (move to torchao) but it is the
        # kernel-backed CPU path in this torch; the warning is noise for every load.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
        warnings.filterwarnings("ignore", message=".*deprecated.*")
        return quantize_dynamic(model, targets, dtype=torch.qint8, inplace=True)


def quantize_nf4(model: nn.Module, device: torch.device) -> nn.Module:
    """Swap Linear layers (except the head) for bitsandbytes NF4 layers and quantize on ``device``."""
    reason = nf4_unavailable_reason(str(device))
    if reason:
        raise PrecisionUnavailable(reason)
    from bitsandbytes.nn import Linear4bit, Params4bit

    compute_dtype = nf4_compute_dtype(device)
    for name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if type(child) is not nn.Linear or _kept(full):
                continue
            new = Linear4bit(
                child.in_features,
                child.out_features,
                bias=child.bias is not None,
                compute_dtype=compute_dtype,
                compress_statistics=True,  # double quantization of the absmax statistics
                quant_type="nf4",
                device="meta",
            )
            new.weight = Params4bit(
                child.weight.data.to("cpu"),
                requires_grad=False,
                compress_statistics=True,
                quant_type="nf4",
                module=new,
            )
            if child.bias is not None:
                new.bias = nn.Parameter(child.bias.data.to(compute_dtype), requires_grad=False)
            setattr(parent, child_name, new.to(device))  # .to(device) performs the quantization
    return model


def _kept(module_name: str) -> bool:
    return any(module_name == k or module_name.endswith("." + k) for k in KEEP_FULL_PRECISION)


def _tensor_bytes(t: torch.Tensor | None) -> int:
    if t is None or not isinstance(t, torch.Tensor):
        return 0
    return t.numel() * t.element_size()


def _quant_state_bytes(state) -> int:
    """Bytes of a bitsandbytes QuantState: absmax, code, and the nested (double-quant) state."""
    if state is None:
        return 0
    total = _tensor_bytes(getattr(state, "absmax", None)) + _tensor_bytes(getattr(state, "code", None))
    total += _quant_state_bytes(getattr(state, "state2", None))
    offset = getattr(state, "offset", None)
    return total + _tensor_bytes(offset)


def model_bytes(model: nn.Module) -> int:
    """Bytes held by weights and buffers, counting packed quantized weights at their real size.

    ``parameters()`` misses torch's dynamic-quantized weights (they live in packed params), and
    a bitsandbytes 4-bit weight is a uint8 tensor plus its quantization statistics.
    """
    model = getattr(model, "_orig_mod", model)  # unwrap torch.compile
    seen: set[int] = set()
    total = 0

    def add(t: torch.Tensor | None) -> None:
        nonlocal total
        if t is None or not isinstance(t, torch.Tensor):
            return
        if not t.is_quantized:  # packed weights come back as fresh tensors: nothing to share
            key = t.data_ptr() or id(t)
            if key in seen:  # tied weights count once
                return
            seen.add(key)
        total += _tensor_bytes(t)
        if t.is_quantized:  # plus the scale / zero-point metadata
            if t.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
                total += 16
            else:
                total += _tensor_bytes(t.q_per_channel_scales()) + _tensor_bytes(t.q_per_channel_zero_points())

    for module in model.modules():
        weight_fn = getattr(module, "weight", None)
        if callable(weight_fn) and hasattr(module, "_packed_params"):  # torch dynamic quantized Linear
            add(weight_fn())
            add(module.bias() if callable(getattr(module, "bias", None)) else None)
        for p in module.parameters(recurse=False):
            add(p)
            total += _quant_state_bytes(getattr(p, "quant_state", None))
        for b in module.buffers(recurse=False):
            add(b)
    return total
