"""Vidur's profile files: where they are, which one fits a (model, GPU, tensor parallel) and
the operator curves fitted from them (cached per file and shape).

The model that adds these curves up into an iteration's time is ``vidur_profile.VidurProfileModel``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import functools
import math
import os
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ._interp import Curve1D, RatioSurface
from .fit_cache import disk_cached
from controlplane.hardware.specs import GPUSpec, ModelSpec

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "PROFILES_DIR",
    "LINEAR_OPS",
    "DEFAULT_NETWORK",
    "NETWORK_FILE",
    "default_network",
    "networks_for",
    "CPU_OVERHEAD_FILE",
    "NO_POST_ATTN_NORM",
    "ProfileNotFoundError",
    "gpu_dir",
    "list_vidur_profiles",
    "find_compute_file",
    "fit_op_curves",
    "fit_attention_surfaces",
    "load_compute_curves",
    "load_all_reduce_curve",
    "load_attention_fit",
    "load_cpu_curves",
    "attention_candidates",
    "attention_shapes",
    "cached_per_file_version",
]

PROFILES_DIR = Path(__file__).resolve().parent.parent / "profiles"

LINEAR_OPS: tuple[str, ...] = (
    "attn_pre_proj",
    "attn_post_proj",
    "mlp_up_proj",
    "mlp_down_proj",
    "mlp_act",
    "input_layernorm",
    "post_attention_layernorm",
    "attn_rope",
    "add",
)
_GPU_DIRS = {"a100-80gb": "a100", "h100-80gb": "h100"}
DEFAULT_NETWORK = {"a100": "a100_pairwise_nvlink", "h100": "h100_pairwise_nvlink"}
#: Where an all-reduce profile of a network lives, under the profiles folder.
NETWORK_FILE = "vidur/network/{}/all_reduce.csv"
# Attention profiles that live outside compute/<gpu>/<model>/ (only the legacy one today).
_EXTRA_ATTENTION = {"a100": ("vidur/legacy_a100_2024-05/attention.csv",)}
CPU_OVERHEAD_FILE = "vidur/legacy_a100_2024-05/cpu_overheads.csv"
_CPU_OPS = ("schedule_median", "sampler_e2e_median", "prepare_inputs_e2e_median", "process_model_outputs_median", "ray_comm_time_mean")
NO_POST_ATTN_NORM = {"microsoft/phi-2"}  # parallel attention/MLP block, one norm
F = TypeVar("F", bound=Callable[..., Any])


class ProfileNotFoundError(LookupError):
    """No profile for the requested (model, gpu, tensor_parallel, network)."""


# --------------------------------------------------------------------------- discovery


def gpu_dir(gpu: GPUSpec) -> str:
    return _GPU_DIRS.get(gpu.name, gpu.name)


def list_vidur_profiles(profiles_dir: Path | str | None = None) -> dict[tuple[str, str], list[int]]:
    """{(gpu_dir, model_name): [tensor_parallel, ...]} for every shipped mlp.csv: the degrees its compute profile
    has, above 1 only those a network of that GPU has all-reduce rows for (`networks_for`), so each one builds."""
    import pandas as pd  # slow to import: only when a profile is read

    top = Path(profiles_dir or PROFILES_DIR)
    root = top / "vidur" / "compute"
    out: dict[tuple[str, str], list[int]] = {}
    for f in sorted(root.glob("*/*/*/mlp.csv")):
        rel = f.relative_to(root).parts
        tps = pd.read_csv(f, usecols=["num_tensor_parallel_workers"])["num_tensor_parallel_workers"]
        out[(rel[0], f"{rel[1]}/{rel[2]}")] = sorted(
            int(t) for t in tps.unique() if t == 1 or networks_for(top, rel[0], int(t)))
    return out


def networks_for(root: Path, gpu_dir: str, tp: int) -> list[str]:
    """The networks of ``gpu_dir`` (``<gpu_dir>_*``) whose all-reduce profile has rows for ``tp`` workers on ``tp``
    devices per node (what `load_all_reduce_curve` reads), the GPU's default network first."""
    names = sorted(p.parent.name for p in (root / "vidur" / "network").glob(f"{gpu_dir}_*/all_reduce.csv"))
    names.sort(key=lambda n: n != DEFAULT_NETWORK.get(gpu_dir))
    return [n for n in names if (tp, tp) in _all_reduce_sizes(str(root / NETWORK_FILE.format(n)))]


def default_network(root: Path, gpu_dir: str, tp: int) -> str | None:
    """The network a model on ``gpu_dir`` with ``tp`` workers uses when none is named: the GPU's default
    (`DEFAULT_NETWORK`, pairwise NVLink, profiled for 2 and 4 workers) where it has rows for ``tp``, else the first
    network of that GPU that has them (the DGX profile, for 8)."""
    have = networks_for(root, gpu_dir, tp)
    return have[0] if have else DEFAULT_NETWORK.get(gpu_dir)


def _describe_profiles(profiles_dir: Path) -> str:
    lines = [f"  {gpu:5s} {model:40s} tp={tps}" for (gpu, model), tps in list_vidur_profiles(profiles_dir).items()]
    return "available compute profiles:\n" + "\n".join(lines)


#: Vidur settings that count something (whole numbers, at least 1) and those that add time (numbers, at least 0).
COUNT_SETTINGS = ("tensor_parallel", "pipeline_stages", "block_size", "kv_cache_granularity", "max_tokens",
                  "max_batch_size")
OVERHEAD_SETTINGS = ("attention_batching_overhead", "nccl_launch_overhead_ms", "nccl_skew_overhead_per_device_ms")


def check_settings(settings: dict) -> dict:
    """The Vidur model's settings checked once, at load, each error naming the setting (not a ZeroDivisionError
    from a granularity of 0, an AttributeError from ``model: 123``, "Negative delay" from a negative NCCL overhead
    in the middle of a replay); returns them with the counts as ints and the overheads as floats."""
    from .base import setting_number

    out = dict(settings)
    for key, kind in (("model", ModelSpec), ("gpu", GPUSpec)):
        if not isinstance(settings[key], (str, kind)):
            raise ValueError(f"{key} must be a name (a string), got {settings[key]!r}")
    for key in COUNT_SETTINGS:
        v = settings[key]
        try:
            n = int(v) if not isinstance(v, (bool, float)) else None
        except (TypeError, ValueError):
            n = None
        if n is None or n < 1:
            raise ValueError(f"{key} must be a whole number of at least 1, got {v!r}")
        out[key] = n
    for key in OVERHEAD_SETTINGS:
        x = setting_number(key, settings[key])
        if not math.isfinite(x) or x < 0:
            raise ValueError(f"{key} must be a finite non-negative number, got {settings[key]!r}")
        out[key] = x
    if settings.get("monotone") is not None and not isinstance(settings["monotone"], bool):
        raise ValueError(f"monotone must be true, false or null (the default for the attention), "
                         f"got {settings['monotone']!r}")
    if settings.get("profiles_dir") is not None:
        root = Path(settings["profiles_dir"])
        if not root.is_dir():
            raise ValueError(f"profiles_dir {str(root)!r} is not a directory")
        if not (root / "vidur" / "compute").is_dir():
            hint = f" (it holds compute/ itself: give its parent, {str(root.parent)!r})" \
                if (root / "compute").is_dir() else ""
            raise ValueError(f"profiles_dir {str(root)!r} has no vidur/compute/ folder: it must hold "
                             f"vidur/compute/GPU/ORG/MODEL/mlp.csv, as {PROFILES_DIR} does{hint}")
    return out


def find_compute_file(root: Path, gpu_dir: str, model: ModelSpec) -> Path:
    base = root / "vidur" / "compute" / gpu_dir
    exact = base / model.name / "mlp.csv"
    if exact.exists():
        return exact
    want = model.name.split("/")[-1].lower()
    for f in base.glob("*/*/mlp.csv"):
        if f.parent.name.lower() == want:
            return f
    raise ProfileNotFoundError(f"no Vidur compute profile for model {model.name!r} on {gpu_dir!r}.\n{_describe_profiles(root)}")


# --------------------------------------------------------------------------- fitting (cached)


def cached_per_file_version(maxsize: int) -> Callable[[F], F]:
    """``lru_cache`` for ``fn(path, *args)`` keyed also by the file's stat signature (size, mtime,
    ctime, inode): a profile file edited (or replaced) while the process runs is read again, not
    answered from memory for the rest of the process (a library user re-running a replay after
    editing mlp.csv got the old curves). The ``os.stat`` costs microseconds per call; the disk
    cache under it (`fit_cache.disk_cached`) keys entries by the file's content."""

    def wrap(fn: F) -> F:
        @lru_cache(maxsize=maxsize)
        def by_version(path: str, version: tuple[int, ...], *args: Any) -> Any:
            return fn(path, *args)

        @functools.wraps(fn)
        def cached(path: str, *args: Any) -> Any:
            st = os.stat(path)
            return by_version(path, (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino), *args)

        cached.cache_clear = by_version.cache_clear  # type: ignore[attr-defined]
        cached.cache_info = by_version.cache_info  # type: ignore[attr-defined]
        return cached  # type: ignore[return-value]

    return wrap


def fit_op_curves(df: pd.DataFrame, ops: Sequence[str] = LINEAR_OPS, method: str = "linear") -> dict[str, Curve1D]:
    """One num_tokens -> ms curve per operator (median column; missing ops are zero)."""
    x = df["num_tokens"].to_numpy(dtype=np.float64)
    out = {}
    for op in ops:
        col = f"time_stats.{op}.median"
        y = df[col].fillna(0.0).to_numpy(dtype=np.float64) if col in df else np.zeros_like(x)
        out[op] = Curve1D.fit(x, y, method)
    return out


def _prefill_features(kv: np.ndarray, c: np.ndarray) -> np.ndarray:
    c = c / 1e3
    return np.stack([np.ones_like(c), c, c * c, c * kv / 1e3], axis=-1)


def _decode_features(b: np.ndarray, kv: np.ndarray) -> np.ndarray:
    return np.stack([np.ones_like(b), b / 100.0, b * kv / 1e5, kv / 1e4], axis=-1)


def fit_attention_surfaces(df: pd.DataFrame) -> tuple[RatioSurface, RatioSurface, Curve1D | None]:
    """(prefill(kv_cache_size, chunk), decode(batch_size, kv_cache_size), kv_save(num_tokens))."""
    pre = df[df["prefill_chunk_size"] > 0]
    dec = df[df["prefill_chunk_size"] == 0]
    if pre.empty or dec.empty:
        raise ProfileNotFoundError("attention profile needs both prefill and decode rows")
    prefill = RatioSurface(
        pre["kv_cache_size"].to_numpy(), pre["prefill_chunk_size"].to_numpy(), pre["time_stats.attn_prefill.median"].to_numpy(), _prefill_features
    )
    decode = RatioSurface(
        dec["batch_size"].to_numpy(), dec["kv_cache_size"].to_numpy(), dec["time_stats.attn_decode.median"].to_numpy(), _decode_features
    )
    kv_save = None
    col = "time_stats.attn_kv_cache_save.median"
    if col in df and df[col].notna().any():
        n = np.maximum(df["prefill_chunk_size"].to_numpy(), df["batch_size"].to_numpy())
        kv_save = Curve1D.fit(n, df[col].fillna(0.0).to_numpy())
    return prefill, decode, kv_save


@cached_per_file_version(maxsize=64)
@disk_cached
def load_compute_curves(path: str, tp: int, shape: tuple[int, int, int, int], method: str) -> dict[str, Curve1D]:
    import pandas as pd  # slow to import: only when a profile is read

    df = pd.read_csv(path).drop_duplicates()
    heads, kv_heads, hidden, inter = shape
    match = df[(df["n_head"] == heads) & (df["n_kv_head"] == kv_heads) & (df["n_embd"] == hidden) & (df["n_expanded_embd"] == inter)]
    if match.empty:
        have = df[["n_head", "n_kv_head", "n_embd", "n_expanded_embd"]].drop_duplicates().to_dict("records")
        raise ProfileNotFoundError(f"{path}: no rows with model shape (heads, kv_heads, hidden, intermediate)={shape}; file has {have}")
    sub = match[match["num_tensor_parallel_workers"] == tp]
    if sub.empty:
        raise ProfileNotFoundError(
            f"{path}: no rows for tensor_parallel={tp}; profiled: {sorted(int(t) for t in match['num_tensor_parallel_workers'].unique())}"
        )
    return fit_op_curves(sub, method=method)


@cached_per_file_version(maxsize=32)
@disk_cached
def load_all_reduce_curve(path: str, tp: int, hidden: int, method: str) -> Curve1D:
    import pandas as pd  # slow to import: only when a profile is read

    df = pd.read_csv(path).drop_duplicates()
    sub = df[(df["num_workers"] == tp) & (df["devices_per_node"] == tp) & (df["collective"] == "all_reduce")]
    if sub.empty:
        have = sorted({(int(a), int(b)) for a, b in zip(df["num_workers"], df["devices_per_node"])})
        raise ProfileNotFoundError(f"{path}: no all_reduce rows for {tp} workers on {tp} devices/node; (workers, devices_per_node) profiled: {have}")
    tokens = sub["size"].to_numpy(dtype=np.float64) / hidden / 2  # Vidur's conversion
    return Curve1D.fit(tokens, sub["time_stats.all_reduce.median"].to_numpy(dtype=np.float64), method)


@cached_per_file_version(maxsize=16)
@disk_cached
def _all_reduce_sizes(path: str) -> frozenset[tuple[int, int]]:
    """The (workers, devices per node) an all-reduce profile has rows for."""
    import pandas as pd  # slow to import: only when a profile is read (cached on disk after)

    df = pd.read_csv(path, usecols=["num_workers", "devices_per_node", "collective"])
    df = df[df["collective"] == "all_reduce"]
    return frozenset((int(a), int(b)) for a, b in zip(df["num_workers"], df["devices_per_node"]))


@cached_per_file_version(maxsize=32)
@disk_cached
def load_attention_fit(path: str, hidden: int, heads: int, kv_heads: int, block: int, tp: int | None) -> tuple[RatioSurface, RatioSurface, Curve1D | None]:
    import pandas as pd  # slow to import: only when a profile is read

    df = pd.read_csv(path).drop_duplicates()
    if tp is not None:
        df = df[
            (df["n_embd"] == hidden)
            & (df["n_q_head"] == heads)
            & (df["n_kv_head"] == kv_heads)
            & (df["block_size"] == block)
            & (df["num_tensor_parallel_workers"] == tp)
        ]
    else:  # 'scaled' mode: take the reference shape's rows as they are
        df = df[df["block_size"] == block]
    if df.empty:
        raise ProfileNotFoundError(f"{path}: no attention rows for this shape")
    return fit_attention_surfaces(df)


@cached_per_file_version(maxsize=8)
@disk_cached
def load_cpu_curves(path: str, model: str, tp: int) -> dict[str, Curve1D]:
    import pandas as pd  # slow to import: only when a profile is read

    df = pd.read_csv(path)
    sub = df[(df["model_name"] == model) & (df["tensor_parallel_degree"] == tp)]
    if sub.empty:
        have = sorted({(m, int(t)) for m, t in zip(df["model_name"], df["tensor_parallel_degree"])})
        raise ProfileNotFoundError(f"no CPU-overhead profile for ({model}, tp={tp}); profiled: {have}")
    return {op: Curve1D.fit(sub["batch_size"].to_numpy(), sub[op].to_numpy()) for op in _CPU_OPS}


def attention_candidates(root: Path, gpu_dir: str) -> list[Path]:
    files = sorted((root / "vidur" / "compute" / gpu_dir).glob("*/*/attention.csv"))
    files += [root / p for p in _EXTRA_ATTENTION.get(gpu_dir, ()) if (root / p).exists()]
    return files


def attention_shapes(files: list[Path]) -> list[dict]:
    """The model shapes each attention profile covers (one dict per shape, with its file)."""
    return [{"file": str(f), **shape} for f in files for shape in _shapes_in(str(f))]


@cached_per_file_version(maxsize=64)
@disk_cached
def _shapes_in(path: str) -> tuple[dict, ...]:
    import pandas as pd  # slow to import: only when a profile is read (cached on disk after)

    cols = ["n_embd", "n_q_head", "n_kv_head", "block_size", "num_tensor_parallel_workers"]
    return tuple({k: int(v) for k, v in rec.items()}
                 for rec in pd.read_csv(path, usecols=cols).drop_duplicates().to_dict("records"))
