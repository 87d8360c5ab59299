"""Money next to GPU-hours: a price per GPU-hour per GPU type (`cluster.gpu_prices` in the run
config) and a run's cost from the GPU-seconds each GPU type was held.

A replica costs its ``gpus_per_replica`` GPUs from the moment it is requested (through its cold
start) until it has drained and stopped; the core accumulates those GPU-seconds per GPU type
(``gpu_seconds_by_gpu`` in a run's summary) and this module prices them.

The defaults are rounded on-demand cloud list prices (USD per GPU-hour, 2025); set your own in
the config, e.g. ``cluster: {gpu_prices: {a100-80gb: 1.8}}``.

Guardians hold GPUs too: `add_guardian_cost` prices the GPU-seconds their replicas held
(``guardian_held_gpu_seconds``) into ``guardian_gpu_hours``, ``guardian_cost_usd`` and
``total_cost_usd`` (the served models' ``cost_usd`` plus the guardians'), leaving the served
models' ``gpu_seconds``, ``gpu_hours`` and ``cost_usd`` as they were.

Stable API (the sweeps use it): `DEFAULT_GPU_PRICES`, `gpu_price_per_hour`, `run_cost`,
`cost_per_1k_requests`, `add_guardian_cost`, `NoPriceError`.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["DEFAULT_GPU_PRICES", "NoPriceError", "add_guardian_cost", "canonical_prices", "cost_per_1k_requests",
           "gpu_price_per_hour", "run_cost", "unknown_gpu_names"]

#: USD per GPU-hour, by the GPU names of `controlplane.hardware.specs.GPUS`.
DEFAULT_GPU_PRICES: dict[str, float] = {
    "a100-80gb": 2.50,
    "h100-80gb": 4.00,
    "h200": 5.00,
    "l4": 0.80,
    "a10g": 1.20,
    "cpu": 0.05,
}


class NoPriceError(KeyError):
    """A GPU type neither the config's prices nor the defaults price. A KeyError (callers catch it to
    leave a run's cost unknown) whose text is the message: a KeyError's own is quoted, which the CLI showed."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _canonical(gpu: str) -> str:
    """The catalogue name of ``gpu`` (aliases such as "A100" resolved); unknown names unchanged."""
    from controlplane.hardware.specs import get_gpu

    try:
        return get_gpu(gpu).name
    except (KeyError, ValueError):
        return gpu


def _same_gpu_key(gpu: str) -> str:
    """What two names of one GPU share: the catalogue's name of it, else the name in lower case (``L40S`` and
    ``l40s`` are one GPU of one's own, as ``H100`` and ``h100`` are one of the catalogue)."""
    name = _canonical(gpu)
    return name if name != gpu else gpu.lower()


def canonical_prices(prices: Mapping[str, float]) -> dict[str, float]:
    """A config's ``cluster.gpu_prices`` over the defaults, each under the catalogue's name of its GPU (``h100``,
    ``H100`` and ``h100-80gb`` are one GPU, priced ``h100-80gb``): a price given under an alias replaces the
    default's (merged under the given key, the default's exact key won every lookup). Names the catalogue lacks stay
    as given (matched in any case: `gpu_price_per_hour`). ValueError where two keys of one GPU give it two
    prices."""
    given: dict[str, tuple[str, float]] = {}
    first_key: dict[str, str] = {}
    for key, price in prices.items():
        name = _same_gpu_key(key)
        first_key.setdefault(name, key)
        if name in given and given[name][1] != price:
            raise ValueError(f"{first_key[name]!r} ({given[name][1]}) and {key!r} ({price}) price one GPU, "
                             f"{_canonical(key)}: give one price")
        given[name] = (_canonical(key), price)
    return {**DEFAULT_GPU_PRICES, **{key: price for key, price in given.values()}}


def _priced(gpu: str, prices: Mapping[str, float]) -> bool:
    """Whether ``prices`` has a price of ``gpu`` (by any of its names, in any case)."""
    name = _same_gpu_key(gpu)
    return any(_same_gpu_key(key) == name for key in prices)


def unknown_gpu_names(prices: Mapping[str, float], used: Mapping[str, str]) -> list[str]:
    """What is wrong with a config's GPU names, for a warning each: a GPU a deployment or guardian runs on (``used``:
    {its config key: the name}) that the catalogue lacks and ``prices`` do not price (its cost would be unknown), and
    a price for a GPU the catalogue lacks that nothing of the config runs on (it prices nothing); each with the
    catalogue's names it is probably a typo of. A GPU of ``cluster.gpus`` is known, and warned of without a price."""
    from controlplane.errors import did_you_mean
    from controlplane.hardware.specs import GPUS, _GPU_ALIASES, own_specs

    own = own_specs("gpu")  # (cluster.gpus: known, but priced only where given a price)
    known = (*GPUS, *_GPU_ALIASES, *own)
    out = []
    names = set()
    for key, gpu in used.items():
        names.add(_same_gpu_key(gpu))
        if _canonical(gpu) in own and not _priced(gpu, prices):
            out.append(f"{key}: gpu {gpu!r} (cluster.gpus.{_canonical(gpu)}) has no price, so the run's cost is "
                       f"unknown; give cluster.gpus.{_canonical(gpu)}.price_per_hour")
        elif _canonical(gpu) not in GPUS and _canonical(gpu) not in own and not _priced(gpu, prices):
            out.append(f"{key}: unknown gpu {gpu!r}{did_you_mean(gpu, known, cutoff=0.85)}: neither the GPU "
                       f"catalogue ({', '.join(sorted(GPUS))}) nor cluster.gpu_prices has it, so the run's cost is "
                       f"unknown; give a catalogue GPU, or its price as cluster.gpu_prices.{gpu}")
    for gpu in prices:
        if gpu not in GPUS and _same_gpu_key(gpu) not in names:
            what = "a GPU of cluster.gpus" if gpu in own else f"unknown gpu{did_you_mean(gpu, known, cutoff=0.85)}"
            out.append(f"cluster.gpu_prices.{gpu}: {what}, and no model or guardian of this config runs on it: the "
                       "price prices nothing")
    return out


def gpu_price_per_hour(gpu: str, prices: Mapping[str, float] | None = None) -> float:
    """Price of one hour of one ``gpu``: from ``prices`` (a run's ``cluster.gpu_prices``), else the
    defaults; by any name of the GPU (the catalogue's aliases), in any case (``l40s`` is priced by ``L40S``).
    Raises `NoPriceError` (a KeyError) naming the GPU, the config key and the GPU of one's own priced in ``prices``
    it is probably a typo of, when neither has it."""
    for table in (prices or {}, DEFAULT_GPU_PRICES):
        if gpu in table:
            return float(table[gpu])
        name = _same_gpu_key(gpu)
        for key, value in table.items():
            if _same_gpu_key(key) == name:
                return float(value)
    from controlplane.errors import did_you_mean

    own = [key for key in prices or {} if key not in DEFAULT_GPU_PRICES]  # (prices of one's own GPUs)
    meant = did_you_mean(gpu, own, cutoff=0.75, ignore_case=True)
    raise NoPriceError(f"no price for GPU {gpu!r}{meant}: set cluster.gpu_prices.{gpu} (USD per GPU-hour) in the "
                       "config")


def run_cost(gpu_seconds_by_gpu: Mapping[str, float], prices: Mapping[str, float] | None = None) -> float:
    """Money cost (USD with the default prices) of holding GPUs for ``gpu_seconds_by_gpu``
    ({gpu type: GPU-seconds}, as in a run summary's ``gpu_seconds_by_gpu``)."""
    total = 0.0
    for gpu, seconds in gpu_seconds_by_gpu.items():
        if seconds < 0:
            raise ValueError(f"negative GPU-seconds for {gpu!r}: {seconds}")
        if seconds:
            total += seconds / 3600.0 * gpu_price_per_hour(gpu, prices)
    return total


def cost_per_1k_requests(cost: float, num_requests: int) -> float | None:
    """Cost of 1,000 requests at a run's cost and request count (None without requests). A run's summary
    (``cost_per_1k_requests_usd``) counts its completed requests: those refused, failed, blocked or left
    unfinished bought nothing, and a run that completed none has no cost per request."""
    return cost * 1000.0 / num_requests if num_requests else None


def add_guardian_cost(summary: dict, held_by_gpu: Mapping[str, float], prices: Mapping[str, float] | None = None) -> None:
    """Put the guardians' held GPU-seconds (``held_by_gpu``: {gpu type: GPU-seconds}) and their
    price into a run's ``summary``: ``guardian_held_gpu_seconds``, ``guardian_gpu_hours``,
    ``guardian_cost_usd`` and ``total_cost_usd`` (``cost_usd`` + ``guardian_cost_usd``; None when
    either is unknown, with ``guardian_cost_error`` naming the GPU without a price)."""
    held = sum(held_by_gpu.values())
    summary["guardian_held_gpu_seconds"] = _round(held)
    summary["guardian_gpu_hours"] = _round(held / 3600.0)
    try:
        cost = run_cost(held_by_gpu, prices)
    except KeyError as exc:
        summary["guardian_cost_usd"] = summary["total_cost_usd"] = None
        summary["guardian_cost_error"] = str(exc.args[0])
        return
    summary["guardian_cost_usd"] = _round(cost)
    served = summary.get("cost_usd")
    summary["total_cost_usd"] = _round(served + cost) if served is not None else None


def _round(x: float) -> float:
    return float(f"{x:.9g}")
