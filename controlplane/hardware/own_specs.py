"""GPUs and models of one's own: a config's ``cluster.gpus`` and ``cluster.model_specs``, described with the
fields of `GPUSpec` and `ModelSpec` (in the units a datasheet and a Hugging Face ``config.json`` give), so that a
deployment's ``gpu`` and ``model_spec`` (and a latency model's ``gpu`` and ``model``: `roofline`) can name them
as they name the catalogue's: the memory plan, the cold start, the roofline and the cost use them.

While a config is validated its own specs alone are known besides the catalogue (`validating`: another config's
are not); once it is valid they are registered for the process (`register`), where a run's lookups by name find
them (a later config's definition of a name replaces an earlier one's).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from controlplane.hardware import specs
from controlplane.hardware.specs import GiB, GPUSpec, ModelSpec

__all__ = ["OwnGPU", "OwnGPUs", "OwnModel", "OwnModels", "check_own_names", "register", "validated_cluster", "validating", "with_own_prices"]


class _Own(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class OwnGPU(_Own):
    """``cluster.gpus.NAME``: one GPU's memory and peak rates (a `GPUSpec`), and its price."""

    memory_gib: float = Field(gt=0)  # device memory, GiB (GPUSpec.memory_bytes / 2**30): 48 for an L40S
    fp16_tflops: float = Field(gt=0)  # dense fp16/bf16 tensor-core peak, TFLOP/s (GPUSpec.fp16_flops / 1e12)
    memory_bandwidth_gb_s: float = Field(gt=0)  # GB/s (GPUSpec.memory_bandwidth_bytes_s / 1e9)
    interconnect_gb_s: float = Field(64.0, gt=0)  # per-GPU bus bandwidth for TP all-reduce, GB/s
    price_per_hour: float | None = Field(None, ge=0)  # USD per GPU-hour (as cluster.gpu_prices.NAME)

    def spec(self, name: str) -> GPUSpec:
        return GPUSpec(name, int(self.memory_gib * GiB), self.fp16_tflops * 1e12, self.memory_bandwidth_gb_s * 1e9,
                       self.interconnect_gb_s * 1e9)


class OwnModel(_Own):
    """``cluster.model_specs.NAME``: a dense decoder-only transformer's shape (a `ModelSpec`; the keys of a Hugging
    Face config: ``num_hidden_layers`` is ``num_layers``, ``num_attention_heads`` ``num_heads``,
    ``num_key_value_heads`` ``num_kv_heads``)."""

    num_layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    num_heads: int = Field(gt=0)
    num_kv_heads: int | None = Field(None, gt=0)  # None: num_heads (no grouped-query attention)
    intermediate_size: int = Field(gt=0)  # one MLP branch's width (a gated MLP's up projection)
    vocab_size: int = Field(gt=0)
    gated_mlp: bool = True  # SwiGLU (Llama, Mistral, Qwen): three MLP matrices; false: two (GPT-2, OPT)
    tie_word_embeddings: bool = False
    max_position_embeddings: int = Field(4096, gt=0)

    @model_validator(mode="after")
    def _shape(self) -> OwnModel:
        """Heads that divide the hidden size, and KV heads that divide the heads (`ModelSpec`'s checks)."""
        try:
            self.spec("model")
        except ValueError as exc:
            raise PydanticCustomError("model_shape", str(exc)) from None
        return self

    def spec(self, name: str) -> ModelSpec:
        return ModelSpec(name, self.num_layers, self.hidden_size, self.num_heads, self.num_kv_heads or self.num_heads,
                         self.intermediate_size, self.vocab_size, self.gated_mlp, self.tie_word_embeddings,
                         self.max_position_embeddings)


_KINDS = (("gpu", "gpus", OwnGPU), ("model", "model_specs", OwnModel))


def _specs_of(cluster: Any) -> dict[str, dict[str, Any]]:
    """{"gpu": {name: GPUSpec}, "model": {name: ModelSpec}} of a cluster section, valid or not (an entry that is not
    valid is left out: the section's own validation names it)."""
    out: dict[str, dict[str, Any]] = {"gpu": {}, "model": {}}
    for kind, key, section in _KINDS:
        given = cluster.get(key) if isinstance(cluster, Mapping) else getattr(cluster, key, None)
        for name, value in (given or {}).items() if isinstance(given, Mapping) else ():
            try:
                out[kind][str(name)] = (value if isinstance(value, section) else section.model_validate(value)).spec(
                    str(name))
            except ValueError:  # (pydantic's ValidationError too)
                continue
    return out


@contextmanager
def validating(cluster: Any) -> Iterator[None]:
    """The cluster section's own GPUs and models (alone, besides the catalogue) known while it is validated."""
    token = specs._OWN.set(_specs_of(cluster))
    try:
        yield
    finally:
        specs._OWN.reset(token)


def register(cluster: Any) -> None:
    """A valid cluster section's own GPUs and models known to this process's lookups (a run's, after its config)."""
    for kind, found in _specs_of(cluster).items():
        registered = specs._REGISTERED[kind]
        for name in [n for n in registered if n.lower() in {f.lower() for f in found}]:
            del registered[name]  # (one name in another case: the later definition)
        registered.update(found)


def _names_checked(kind: str) -> Any:
    """A validator of a section of own specs by name: `check_own_names`."""
    def check(section: dict[str, Any]) -> dict[str, Any]:
        check_own_names(section, kind)
        return section

    return AfterValidator(check)


#: ``cluster.gpus`` and ``cluster.model_specs``: own specs by name, none a name the catalogue has.
OwnGPUs = Annotated[dict[str, OwnGPU], _names_checked("gpu")]
OwnModels = Annotated[dict[str, OwnModel], _names_checked("model")]


def check_own_names(names: Any, kind: str) -> None:
    """A pydantic error for a name of one's own that the catalogue already has (``a100``: the catalogue's
    ``a100-80gb``, which it would not replace) or that is given twice in two cases."""
    lookup = specs.get_gpu if kind == "gpu" else specs.get_model
    seen: dict[str, str] = {}
    for name in names:
        token = specs._OWN.set({"gpu": {}, "model": {}})  # (the catalogue alone)
        try:
            known = lookup(name).name
        except KeyError:
            known = None
        finally:
            specs._OWN.reset(token)
        if known is not None:
            raise PydanticCustomError("catalogue_name", f"{name!r} is the catalogue's {kind} {known}: give your own "
                                      f"{kind} another name, or leave it out to use the catalogue's")
        if name.lower() in seen:
            raise PydanticCustomError("same_name", f"{seen[name.lower()]!r} and {name!r} are one {kind} (names match "
                                      "in any case): give it once")
        seen[name.lower()] = name


def with_own_prices(prices: dict[str, float], gpus: Mapping[str, OwnGPU]) -> dict[str, float]:
    """``cluster.gpu_prices`` with each own GPU's ``price_per_hour`` (under its name); a pydantic error where
    ``gpu_prices`` prices it otherwise."""
    out = dict(prices)
    for name, gpu in gpus.items():
        if gpu.price_per_hour is None:
            continue
        given = {k: p for k, p in out.items() if k.lower() == name.lower()}
        if any(p != gpu.price_per_hour for p in given.values()):
            key, price = next(iter(given.items()))
            raise PydanticCustomError("two_prices", f"gpus.{name}.price_per_hour ({gpu.price_per_hour}) and "
                                      f"gpu_prices.{key} ({price}) price one GPU: give one price")
        for key in given:
            del out[key]
        out[name] = gpu.price_per_hour
    return out


def validated_cluster(data: Any, handler: Any) -> Any:
    """``ClusterConfig``'s validation (``handler``: pydantic's) with the section's own GPUs and models known to its
    deployments' checks, and its own GPUs' prices in ``gpu_prices`` (`with_own_prices`); once valid, its own specs
    registered for the run (`register`)."""
    with validating(data):
        cluster = handler(data)
    cluster.gpu_prices = with_own_prices(cluster.gpu_prices, cluster.gpus)
    register(cluster)
    return cluster
