"""Iteration latency from Vidur's real GPU operator profiles, with Vidur's arithmetic.

Vidur (microsoft/vidur, vidur/execution_time_predictor/sklearn_execution_time_predictor.py
and vidur/entities/execution_time.py) predicts a batch's time as

    layers_per_stage * ( pre_proj + post_proj + rope + kv_cache_save
                         + attn_prefill + attn_decode + input_layernorm
                         + mlp_up + mlp_down + mlp_act + post_attention_layernorm + add
                         + 2 * tp_comm )                       [ms]

where the linear-layer ops are looked up at the batch's token count rounded up to a
multiple of 8; ``tp_comm`` is the all-reduce at that many tokens (Vidur converts a
profiled message of ``size`` fp16 elements to ``size / hidden / 2`` tokens) plus a
0.02 ms NCCL launch overhead; prefill attention aggregates the batch's prefills into
one (sum of KV sizes rounded up to 64, sqrt of the sum of squared chunk sizes) and
decode attention uses (batch size, mean KV length rounded up to 64). Both attention
terms get +10% when several requests share the kernel on a GQA model. Embedding and
LM head are not counted; CPU overheads are off unless asked for (the anchors ran
without them). Vidur's KV length for a decode counts the token being decoded, so it
is ``decode_context_tokens + 1`` here.

Instead of training Vidur's random forests (minutes), the 1-D operator curves
(linear layers, all-reduce) use the closed-form expectation of a deep bagged forest
(``op_fit="forest"``, default: weights p(1-p)^j on the j-th nearest profiled point,
which is what Vidur's forests converge to and matters on noisy small all-reduces) or
plain piecewise-linear interpolation (``op_fit="linear"``); attention uses a
parametric base times an interpolated correction grid. Everything is tabulated on
Vidur's own prediction grid once per configuration, so iteration_s is a few lookups;
unlike Vidur, each table is a running maximum (`vidur_tables`): more tokens, sequences or
context never cost less.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._interp import Curve1D
from .base import IterationShape, LatencyModel, decode_run_args
from .vidur_tables import ceil_to as _ceil_to
from .vidur_tables import linear_ms as _linear_ms
from .vidur_tables import running_max_past, tables
from .vidur_files import (
    CPU_OVERHEAD_FILE,
    OVERHEAD_SETTINGS,
    LINEAR_OPS,
    NETWORK_FILE,
    NO_POST_ATTN_NORM,
    PROFILES_DIR,
    ProfileNotFoundError,
    load_all_reduce_curve,
    attention_candidates,
    load_attention_fit,
    attention_shapes,
    check_settings,
    load_compute_curves,
    load_cpu_curves,
    find_compute_file,
    fit_attention_surfaces,
    fit_op_curves,
    gpu_dir,
    default_network,
    list_vidur_profiles,
    networks_for,
)
from controlplane.hardware.specs import GPUS, GPUSpec, ModelSpec, get_gpu, get_model, get_precision

__all__ = [
    "PROFILES_DIR",
    "LINEAR_OPS",
    "VidurProfileModel",
    "ProfileNotFoundError",
    "list_vidur_profiles",
    "fit_op_curves",
    "fit_attention_surfaces",
]


# --------------------------------------------------------------------------- tables (cached)


@dataclass(frozen=True, slots=True)
class _AttentionScale:
    prefill: float = 1.0
    decode: float = 1.0


#: Off-grid terms a model remembers before it starts over (``VidurProfileModel._remember``).
_MAX_REMEMBERED = 1 << 16
#: The most steps of 8 tokens the linear ops are tabulated past the profile (`VidurProfile._lin_past_ms`).
_LIN_PAST_MAX = 1 << 16


# --------------------------------------------------------------------------- the model


class VidurProfileModel(LatencyModel):
    """Vidur's per-operator execution-time model, fitted by interpolation.

    ``op_fit`` picks "forest" (Vidur-faithful, default) or "linear" interpolation for
    the 1-D operator curves. ``attention="profile"`` (default) requires an attention profile matching the
    model's shape and TP exactly (today: A100, 64 q / 8 kv heads, hidden 8192, TP2 —
    Llama-2-70B and CodeLlama-34B); ``attention="scaled"`` instead rescales that A100
    profile by heads per GPU and by the GPU's FLOP/s (prefill) or bandwidth (decode),
    which is an approximation, useful for other models and for H100.
    """

    name = "vidur"
    # Slots for the attributes past CPython 3.11's 29 inline ones (tests/sim/test_instance_attributes.py: a 30th
    # gives the instance a dict of its own, and its method calls are no longer specialised); the rest stay in it.
    __slots__ = ("_prefill_grid", "_decode_grid", "_lin_past", "_max_batch", "_max_chunk", "monotone")

    def __init__(
        self,
        model: str | ModelSpec = "meta-llama/Llama-2-70b-hf",
        gpu: str | GPUSpec = "a100",
        tensor_parallel: int = 2,
        network: str | None = None,
        precision: str = "fp16",
        *,
        attention: str = "profile",
        pipeline_stages: int = 1,
        block_size: int = 16,
        kv_cache_granularity: int = 64,
        max_tokens: int = 4096,
        max_batch_size: int = 128,
        attention_batching_overhead: float = 0.1,
        nccl_launch_overhead_ms: float = 0.02,
        nccl_skew_overhead_per_device_ms: float = 0.0,
        cpu_overhead: bool = False,
        op_fit: str = "forest",
        monotone: bool | None = None,
        profiles_dir: str | Path | None = None,
    ) -> None:
        kw = check_settings({k: v for k, v in locals().items() if k != "self"})  # at load, naming the setting
        pipeline_stages, attention_batching_overhead, nccl_launch_overhead_ms, nccl_skew_overhead_per_device_ms = (
            kw[k] for k in ("pipeline_stages", *OVERHEAD_SETTINGS))
        self.model = get_model(model)
        self.gpu = get_gpu(gpu)
        self.tensor_parallel = int(tensor_parallel)
        prec = get_precision(precision)
        if prec.name not in ("fp16", "bf16"):
            raise ValueError(f"Vidur profiles were measured in fp16; precision {prec.name!r} is not profiled (use the 'roofline' model)")
        self.precision = prec.name
        if pipeline_stages != 1:
            raise ValueError("pipeline_stages > 1 is not supported yet (needs send_recv profiles)")
        if attention not in ("profile", "scaled"):
            raise ValueError(f"attention must be 'profile' or 'scaled', got {attention!r}")
        if self.model.num_layers % pipeline_stages:
            raise ValueError("num_layers must divide by pipeline_stages")
        root = Path(profiles_dir or PROFILES_DIR)
        gdir = gpu_dir(self.gpu)
        m = self.model
        self.layers = m.num_layers // pipeline_stages
        self.granularity = int(kv_cache_granularity)
        self.max_tokens = int(max_tokens)
        self.max_batch_size = int(max_batch_size)

        compute_file = find_compute_file(root, gdir, m)
        if op_fit not in ("forest", "linear"):
            raise ValueError(f"op_fit must be 'forest' or 'linear', got {op_fit!r}")
        self.op_fit = op_fit
        shape = (m.num_heads, m.num_kv_heads, m.hidden_size, m.intermediate_size)
        ops = load_compute_curves(str(compute_file), self.tensor_parallel, shape, op_fit)
        if m.name in NO_POST_ATTN_NORM:
            ops = {k: v for k, v in ops.items() if k != "post_attention_layernorm"}
        self.op_curves = ops

        self.network = None
        self.all_reduce: Curve1D | None = None
        comm_const = 0.0
        if self.tensor_parallel > 1:
            self.network = network or default_network(root, gdir, self.tensor_parallel)
            net_file = root / NETWORK_FILE.format(self.network)
            if not net_file.exists():
                have = sorted(p.parent.name for p in (root / "vidur" / "network").glob("*/all_reduce.csv"))
                raise ProfileNotFoundError(f"no all_reduce profile for network {self.network!r}; available: {have}")
            try:
                self.all_reduce = load_all_reduce_curve(str(net_file), self.tensor_parallel, m.hidden_size, op_fit)
            except ProfileNotFoundError as exc:  # (the message named no network that has the rows)
                fits = networks_for(root, gdir, self.tensor_parallel)
                hint = (f"network={fits[0]!r} has them (networks with rows for tensor_parallel={self.tensor_parallel} "
                        f"on {gdir!r}: {fits})" if fits else
                        f"no network of {gdir!r} has rows for tensor_parallel={self.tensor_parallel}")
                raise ProfileNotFoundError(f"{exc}; {hint}") from None
            comm_const = nccl_launch_overhead_ms + nccl_skew_overhead_per_device_ms * self.tensor_parallel**1.25

        self.attention_mode = attention
        # Running maxima (`vidur_tables`) only when asked: by default the profiles' measured prices, dips included,
        # as Vidur's simulator prices them (the anchors check that; the bundled replay's figures were measured so).
        self.monotone = bool(monotone)
        self.attn_scale = _AttentionScale()
        self.prefill_surface, self.decode_surface, self.kv_save = self._load_attention(root, gdir, block_size, attention)
        gqa = m.num_heads > m.num_kv_heads
        self.batching_overhead = float(attention_batching_overhead) if gqa else 0.0

        self.cpu_curves = None
        if cpu_overhead:
            self.cpu_curves = load_cpu_curves(str(root / CPU_OVERHEAD_FILE), m.name, self.tensor_parallel)

        self._comm_const = comm_const
        self._build_tables()

    @property
    def max_context(self) -> int:
        """The model's context window (tokens, its ``max_position_embeddings``): the profiles price a longer request
        all the same, so a replay counts and warns of those it is sent (`sim.replay_trace.context_limits`)."""
        return int(self.model.max_position_embeddings)

    # ------------------------------------------------------------------ fitting helpers

    def _load_attention(self, root: Path, gdir: str, block: int, mode: str):
        m, tp = self.model, self.tensor_parallel
        if mode == "profile":
            files = attention_candidates(root, gdir)
            for f in files:
                try:
                    return load_attention_fit(str(f), m.hidden_size, m.num_heads, m.num_kv_heads, block, tp)
                except ProfileNotFoundError:
                    continue
            have = attention_shapes(files) if files else []
            raise ProfileNotFoundError(
                f"no Vidur attention profile on {gdir!r} for {m.name} (hidden={m.hidden_size}, q_heads={m.num_heads}, "
                f"kv_heads={m.num_kv_heads}, block={block}, tp={tp}); profiled shapes: {have or 'none'}. "
                "Pass attention='scaled' to rescale the A100 reference profile."
            )
        ref_files = attention_candidates(root, "a100")
        if not ref_files:
            raise ProfileNotFoundError("attention='scaled' needs the A100 reference attention profile")
        ref = attention_shapes(ref_files[:1])[0]
        ref_q = ref["n_q_head"] // ref["num_tensor_parallel_workers"]
        ref_kv = max(1, ref["n_kv_head"] // ref["num_tensor_parallel_workers"])
        ref_dim = ref["n_embd"] // ref["n_q_head"]
        q_per = m.num_heads // tp
        kv_per = math.ceil(m.num_kv_heads / tp)
        a100 = GPUS["a100-80gb"]
        self.attn_scale = _AttentionScale(
            prefill=(q_per * m.head_dim) / (ref_q * ref_dim) * a100.fp16_flops / self.gpu.fp16_flops,
            decode=(kv_per * m.head_dim) / (ref_kv * ref_dim) * a100.memory_bandwidth_bytes_s / self.gpu.memory_bandwidth_bytes_s,
        )
        return load_attention_fit(ref["file"], 0, 0, 0, block, None)

    def _build_tables(self) -> None:
        """Tabulate every term on Vidur's prediction grid, as running maxima if `monotone` (`vidur_tables`;
        shared between equal configs)."""
        t = tables(
            tuple(self.op_curves.items()),
            self.all_reduce,
            self._comm_const,
            self.prefill_surface,
            self.decode_surface,
            self.kv_save,
            (self.attn_scale.prefill, self.attn_scale.decode),
            self.layers,
            self.max_tokens,
            self.max_batch_size,
            self.granularity,
            self.monotone,
        )
        self._lin_list = t.lin_list
        self._prefill_rows = t.prefill_rows
        self._decode_tab = t.decode_tab
        self._decode_rows = t.decode_rows
        self._n_lin = t.n_lin
        self._prefill_grid, self._decode_grid = t.prefill, t.decode
        self._n_kv_levels = t.decode_tab.shape[1]  # (KV levels of both attention tables)
        self._max_chunk = t.prefill.table.shape[1] - 1
        self._max_batch = t.decode_tab.shape[0] - 1
        self._kvsave_list = None if t.kvsave_ms is None else t.kvsave_ms.tolist()
        # Terms past the tabulated grid, remembered by their exact arguments (numpy on one value
        # costs ~20 µs; a replay asks for the same few thousand token counts over and over).
        self._beyond: dict[tuple[str, int, int], float] = {}
        self._lin_past = np.zeros(0)  # linear ops past the table, every 8 tokens from its last (`_lin_past_ms`)
        self._decode_rows_beyond: dict[int, np.ndarray] = {}  # batch size -> decode ms per KV level (`_decode_row`)

    def _linear_ms(self, n: np.ndarray) -> np.ndarray:
        return _linear_ms(n, tuple(self.op_curves.values()), self.all_reduce, self._comm_const, self.layers)

    # ------------------------------------------------------------------ per-term lookups

    def _remember(self, key: tuple[str, int, int], value: float) -> float:
        beyond = self._beyond
        if len(beyond) >= _MAX_REMEMBERED:
            beyond.clear()  # bounded by the grid's shape, not by the run's length
        beyond[key] = value
        return value

    def _lin_past_ms(self, nr: int) -> float:
        """Linear ops at ``nr`` tokens (a multiple of 8) past the table, every 8 tokens and grown by doubling: the
        fitted curves (their running maximum from the table's last value on, if `monotone`). Past
        ``_LIN_PAST_MAX`` steps (half a million tokens past the table) a count is priced alone, at least the
        tabulated maximum: a request of millions of tokens costs one evaluation, not a table as long as it."""
        k = (nr - self._n_lin) // 8
        if k >= _LIN_PAST_MAX:
            if len(self._lin_past) < _LIN_PAST_MAX:
                self._lin_past_ms(self._n_lin + 8 * (_LIN_PAST_MAX - 1))
            far = self._beyond.get(("linear", nr, 0))
            if far is None:
                at = float(self._linear_ms(np.array([float(nr)]))[0])
                far = self._remember(("linear", nr, 0), max(at, float(self._lin_past[-1])) if self.monotone else at)
            return far
        if k >= len(self._lin_past):
            count = min(max(k + 1, 2 * len(self._lin_past), 64), _LIN_PAST_MAX)
            top = self._lin_list[self._n_lin] if self.monotone else -np.inf
            self._lin_past = running_max_past(top, self._linear_ms, float(self._n_lin), 8.0, count, self.monotone)
        return float(self._lin_past[k])

    def _tokens_ms(self, num_tokens: int) -> float:
        nr = (num_tokens + 7) // 8 * 8
        ms = self._lin_list[nr] if nr <= self._n_lin else self._lin_past_ms(nr)
        if self._kvsave_list is not None:
            if num_tokens <= self._n_lin:
                ms += self._kvsave_list[num_tokens]
            else:  # (past the KV-save profile's last point: its curve rises linearly)
                kv = self._beyond.get(("kvsave", num_tokens, 0))
                if kv is None:
                    kv = self.layers * float(self.kv_save(float(num_tokens)))
                    kv = self._remember(("kvsave", num_tokens, 0),
                                        max(kv, self._kvsave_list[self._n_lin]) if self.monotone else kv)
                ms += kv
        return ms

    def _prefill_ms(self, chunks: Sequence[int], contexts: Sequence[int]) -> float:
        g = self.granularity
        if len(chunks) == 1:
            kv = _ceil_to(int(contexts[0]), g) if len(contexts) else 0
            c = int(chunks[0])
            factor = 1.0
        else:
            kv = sum(_ceil_to(int(x), g) for x in contexts) if len(contexts) else 0
            c = round(math.sqrt(sum(int(x) * int(x) for x in chunks)))
            factor = 1.0 + self.batching_overhead
        if kv // g < self._n_kv_levels and c <= self._max_chunk:
            t = self._prefill_rows[kv // g][c]
        else:
            t = self._beyond.get(("prefill", kv, c))
            if t is None:
                t = self._remember(("prefill", kv, c), float(self._prefill_grid.at(kv // g, np.array([c]))[0]))
        return t * factor

    def _decode_table(self, b: int, kvq: np.ndarray) -> np.ndarray:
        levels = kvq // self.granularity
        if b <= self._max_batch and kvq.size and levels[-1] < self._n_kv_levels:
            return self._decode_tab[b, levels]
        if not kvq.size:
            return np.zeros(0)
        return self._decode_row(b, int(levels.max()))[levels]

    def _decode_row(self, b: int, top_level: int) -> np.ndarray:
        """Decode attention (ms) of batch size ``b`` at every KV level up to ``top_level`` at least, from the fitted
        surface as its running maximum (`MonotoneGrid`): what a batch past the tabulated grid (a larger batch, or
        contexts past ``max_tokens``) costs. Kept per batch size and grown by doubling: evaluating the surface
        with numpy costs ~150 µs a call, and a long-context trace (Mooncake) asks for most of its decode runs."""
        row = self._decode_rows_beyond.get(b)
        if row is None or len(row) <= top_level:
            n = max(top_level + 1, 2 * (0 if row is None else len(row)), self._n_kv_levels)
            row = self._decode_grid.at(b, np.arange(n))
            self._decode_rows_beyond[b] = row
        return row

    def _decode_ms(self, b: int, mean_kv: int) -> float:
        kvq = _ceil_to(mean_kv, self.granularity)
        if b <= self._max_batch and kvq // self.granularity < self._n_kv_levels:
            t = self._decode_rows[b][kvq // self.granularity]
        else:
            t = float(self._decode_table(b, np.array([kvq]))[0])
        return t * (1.0 + self.batching_overhead) if b > 1 else t

    def _cpu_ms(self, batch_size: int) -> float:
        if self.cpu_curves is None:
            return 0.0
        return float(sum(float(c(float(batch_size))) for c in self.cpu_curves.values()))

    # ------------------------------------------------------------------ LatencyModel API

    def iteration_s(self, shape: IterationShape) -> float:
        chunks = shape.prefill_chunk_tokens
        dec = shape.decode_context_tokens
        np_ = len(chunks)
        nd = len(dec)
        n = (int(sum(chunks)) if np_ else 0) + nd
        if n == 0:
            return 0.0
        ms = self._tokens_ms(n)
        if np_:
            ctx = shape.prefill_context_tokens
            if len(ctx) and len(ctx) != np_:
                raise ValueError("prefill_context_tokens must be empty or match prefill_chunk_tokens in length")
            ms += self._prefill_ms(chunks, ctx)
        if nd:
            ms += self._decode_ms(nd, (int(sum(dec)) + nd) // nd)  # Vidur's kv = context + 1
        if self.cpu_curves is not None:
            ms += self._cpu_ms(np_ + nd)
        return ms * 1e-3

    def decode_run_s(self, decode_context_tokens: np.ndarray, num_iterations: int) -> np.ndarray:
        ctx, k = decode_run_args(decode_context_tokens, num_iterations)
        b = int(ctx.size)
        if b == 0 or k == 0:
            return np.zeros(k)
        base = self._tokens_ms(b)
        mean_kv = (int(ctx.sum()) + b) // b + np.arange(k, dtype=np.int64)  # contexts all grow by one
        kvq = -(-mean_kv // self.granularity) * self.granularity
        att = self._decode_table(b, kvq)
        if b > 1:
            att = att * (1.0 + self.batching_overhead)
        ms = base + att
        if self.cpu_curves is not None:
            ms = ms + self._cpu_ms(b)
        return ms * 1e-3

    # ------------------------------------------------------------------ introspection

    def breakdown_ms(self, shape: IterationShape) -> dict[str, float]:
        """Per-term milliseconds of one iteration (for debugging and docs)."""
        n = int(sum(shape.prefill_chunk_tokens)) + len(shape.decode_context_tokens)
        nr = float((n + 7) // 8 * 8)
        out = {op: self.layers * float(c(nr)) for op, c in self.op_curves.items()} if n else {}
        if self.all_reduce is not None and n:
            out["tp_comm"] = self.layers * 2.0 * (float(self.all_reduce(nr)) + self._comm_const)
        if n:
            lin = self._lin_list[int(nr)] if nr <= self._n_lin else self._lin_past_ms(int(nr))
            if self._kvsave_list is not None:
                out["attn_kv_cache_save"] = self._tokens_ms(n) - lin
            out["running_max"] = lin - sum(out.get(k, 0.0) for k in (*self.op_curves, "tp_comm"))  # (>= 0)
        if shape.prefill_chunk_tokens:
            out["attn_prefill"] = self._prefill_ms(shape.prefill_chunk_tokens, shape.prefill_context_tokens)
        nd = len(shape.decode_context_tokens)
        if nd:
            out["attn_decode"] = self._decode_ms(nd, (int(sum(shape.decode_context_tokens)) + nd) // nd)
        return out

    def __repr__(self) -> str:
        return (
            f"VidurProfileModel(model={self.model.name!r}, gpu={self.gpu.name!r}, tensor_parallel={self.tensor_parallel}, "
            f"network={self.network!r}, attention={self.attention_mode!r}, monotone={self.monotone})"
        )
