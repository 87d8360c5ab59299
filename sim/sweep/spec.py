"""A sweep's spec (``SPEC.yaml``): a base config, a trace, a space of config keys, seeds.

The space maps dotted config keys (``cluster.models.0.replicas``, ``plugins.enabled``,
``plugins.settings.continuous-batching.policy``) to the values to try. A key without a dot
whose values are mappings is a *bundle*: each value sets several keys together (a GPU type
and its latency model's GPU). ``mode: grid`` tries every combination; ``mode: random`` draws
``samples`` points (values from the lists, or from ``{low, high, log, int}`` ranges). Every
point runs once per seed in ``seeds``. See docs/sweeps.md.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from controlplane.config import RunConfig, StorageConfig, load_config, read_config_file
from controlplane.config_dotted import apply_dotted
from controlplane.errors import ConfigError
from controlplane.plugin_manager import ALLOW_ENV
from sim.replay import TraceTransforms
from sim.sweep.spec_checks import check_points
from sim.sweep.spec_options import check_trace_options
from sim.sweep.spec_plugins import check_plugin_names
from sim.sweep.spec_settings import check_plugin_settings
from sim.sweep.spec_trace import check_point_traces, check_trace_axes, config_overrides
from sim.traces import FORMAT_OPTIONS, FORMATS, parse_rate_profile, rate_profile_points
from sim.traces.transforms import TransformValueError

__all__ = ["Point", "RangeSpec", "SearchSettings", "SweepSpec", "TraceSpec", "apply_dotted", "load_spec",
           "point_key"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RangeSpec(_Section):
    """A continuous or integer range for random search."""

    low: float
    high: float
    log: bool = False
    int: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> RangeSpec:
        if not self.low <= self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self

    def draw(self, rng: np.random.Generator) -> float | int:
        if self.log:
            x = float(np.exp(rng.uniform(np.log(self.low), np.log(self.high))))
        else:
            x = float(rng.uniform(self.low, self.high))
        return int(round(x)) if self.int else x


class TraceSpec(_Section):
    """The trace every run replays, and its transforms (as `controlplane sim replay`'s flags).

    The transforms' values are checked by `sim.replay.TraceTransforms` itself when the spec loads
    (`_transforms_checked`), so a sweep refuses what a replay would refuse, named by the spec's key,
    instead of failing mid-sweep when its traces are read."""

    path: str | None = None  # None: the bundled Azure code trace
    format: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)  # reader options (docs/traces.md)
    window_start_s: float | None = None
    window_end_s: float | None = None
    speed_up: float | None = None
    repeat: int | None = None
    rate_scale: float | None = None
    # (time_s, factor) points, or the text `sim replay --rate-profile` takes ("0:1,14400:2")
    rate_profile: list[tuple[float, float]] | None = None
    # where the rate change puts copies (`sim.traces.scale_rate`)
    copies: Literal["clumped", "shuffled", "shifted"] | None = None
    limit: int | None = Field(None, ge=1)  # (a sweep of no requests is refused, unlike `sim replay --limit 0`)
    # multiply each request's prompt / output tokens by this (rounded, at least 1: `sim.traces.scale_lengths`)
    prompt_scale: float | None = None
    output_scale: float | None = None
    # cut each request's prompt / output to at most this many tokens (`sim.traces.cap_lengths`)
    max_prompt_tokens: int | None = None
    max_output_tokens: int | None = None

    @field_validator("rate_profile", mode="before")
    @classmethod
    def _profile_points(cls, value: Any) -> Any:
        """Checked as ``sim.traces.rate_profile`` checks them; text read as ``--rate-profile`` reads it."""
        if value is None:
            return None
        if isinstance(value, str):
            points = parse_rate_profile(value, "")
        else:
            points = rate_profile_points(value, lambda i: f"point {i}")
        return [list(p) for p in points]

    def transforms(self, *, limit: int | None = None) -> TraceTransforms:
        """The replay's transforms these keys set (``limit`` replacing the spec's, as a search's rungs do)."""
        return TraceTransforms(window_start_s=self.window_start_s, window_end_s=self.window_end_s,
                               speed_up=self.speed_up, repeat=self.repeat, rate_scale=self.rate_scale,
                               copies=self.copies,
                               limit=limit if limit is not None else self.limit, rate_profile=self.rate_profile,
                               prompt_scale=self.prompt_scale, output_scale=self.output_scale,
                               max_prompt_tokens=self.max_prompt_tokens, max_output_tokens=self.max_output_tokens)

    @model_validator(mode="after")
    def _transforms_checked(self) -> TraceSpec:
        """Every transform value checked as a replay checks it (`TraceTransforms.apply` checks its
        arguments before reading anything): ``trace.speed_up must be a finite number > 0, got inf``."""
        try:
            self.transforms().apply([], 0)  # (a list: `repeat` reads the trace again for each copy)
        except TransformValueError as exc:
            raise ValueError(exc.named(_TRANSFORM_KEYS, shown=_as_written)) from None
        return self

    @model_validator(mode="after")
    def _known_format(self) -> TraceSpec:
        """A misspelt format or option fails when the spec loads, not when its traces are read."""
        if self.format is None:
            return self  # (detected from the file; its options are checked when it is read)
        if self.format not in FORMATS:
            raise ValueError(f"format: unknown trace format {self.format!r}; valid formats: {', '.join(FORMATS)}")
        unknown = sorted(set(self.options) - set(FORMAT_OPTIONS[self.format]))
        if unknown:
            valid = ', '.join(FORMAT_OPTIONS[self.format])
            raise ValueError(f"options: unknown option(s) {', '.join(map(repr, unknown))} for trace format "
                             f"{self.format!r}; " + (f"valid options: {valid}" if valid else "it takes none"))
        return self


#: A transform's keyword (`TransformValueError`) as the spec's key it came from.
_TRANSFORM_KEYS = {**{k: f"trace.{k}" for k in ("speed_up", "repeat", "rate_scale", "copies", "limit", "prompt_scale",
                                                "output_scale", "max_prompt_tokens", "max_output_tokens")},
                   "start_s": "trace.window_start_s", "end_s": "trace.window_end_s"}


def _as_written(value: object) -> str:
    """A bad value as the spec most likely wrote it (``got 0``, not the ``0.0`` it became)."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else repr(value)


class SearchSettings(_Section):
    """How `controlplane sim search` narrows the candidates (docs/sweeps.md, "Search")."""

    screen_fraction: float = Field(0.25, gt=0, le=1)  # share of the trace's requests the screen replays
    eta: int = Field(3, ge=2)  # each rung replays eta times more of the trace than the one before
    chunk: int = Field(32, ge=1)  # candidates screened per round, cheapest (estimated) first
    cost_bound: bool = True  # skip candidates estimated above the cheapest one found meeting the target
    slack: float = Field(0.03, ge=0, lt=1)  # attainment allowance below the target on a partial trace
    select_seed: int = 0  # the seed the screen, the rungs and the full trace choose the candidates under
    #: full replays confirming the winner: seeds other than ``select_seed``, so that the seed that chose a candidate
    #: (and favoured it by its luck) does not also vouch for it (`sim.sweep.search_seeds`)
    confirm_seeds: list[int] = Field(default_factory=lambda: [1, 2, 3])
    neighbours: int = Field(3, ge=0)  # next-cheaper rejected candidates confirmed over the seeds too


Value = Any


class SweepSpec(_Section):
    name: str | None = None
    config: str | None = None  # a run config file, relative to the spec's folder
    base: dict[str, Any] = Field(default_factory=dict)  # overrides on top of it (dotted or nested keys)
    trace: TraceSpec = Field(default_factory=TraceSpec)
    mode: Literal["grid", "random"] = "grid"
    samples: int | None = Field(None, ge=1)  # random: how many points
    sample_seed: int = 0  # random: seed of the draws
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    record: Literal["full", "summary"] = "full"  # full: every request, decision and metric; summary: the run row
    space: dict[str, list[Value] | RangeSpec] = Field(default_factory=dict)
    search: SearchSettings = Field(default_factory=SearchSettings)

    model_config = ConfigDict(extra="forbid")

    @field_validator("space", mode="before")
    @classmethod
    def _lists_or_ranges(cls, space: Any) -> Any:
        """A key's values must be a list (or a range): ``replicas: 4`` is named as such, not as a union's two errors."""
        for key, values in (space.items() if isinstance(space, dict) else ()):
            if not isinstance(values, (list, dict)):
                raise ValueError(f"space.{key}: {values!r} is one value; give a list of values to try ([{values!r}] "
                                 "for one), or a range {low, high} with mode: random")
        return space

    @model_validator(mode="after")
    def _check_space(self) -> SweepSpec:
        check_trace_axes(self.space)  # (`trace.rate_scale` and the other transforms; not the path, format, options)
        for key, values in self.space.items():
            if isinstance(values, RangeSpec):
                if self.mode == "grid":
                    raise ValueError(f"space.{key}: a range needs mode: random (a grid takes a list of values)")
                continue
            if not values:
                raise ValueError(f"space.{key}: no values")
            if key in ("seed", "seeds"):  # (a run's seed is not a point: each point runs once per seed)
                raise ValueError(f"space.{key}: seeds are not a space key; list them as `seeds: {values!r}` "
                                 "(every point runs once per seed)")
            if "." not in key and not all(isinstance(v, dict) for v in values):
                raise ValueError(f"space.{key}: a key without a dot is a bundle, its values must be mappings "
                                 "of dotted keys (e.g. {cluster.models.0.gpu: h100-80gb})")
            texts = [json.dumps(v, sort_keys=True, default=str) for v in values]
            if self.mode == "grid" and len(set(texts)) < len(texts):  # (random draws may weigh a value so)
                twice = next(v for v, t in zip(values, texts) if texts.count(t) > 1)
                raise ValueError(f"space.{key}: {twice!r} listed more than once (a grid runs each value once)")
        if repeated := sorted({s for s in self.seeds if self.seeds.count(s) > 1}):
            raise ValueError(f"seeds: {', '.join(map(str, repeated))} listed more than once (each seed runs every "
                             "point once)")
        if self.mode == "random" and self.samples is None:
            raise ValueError("mode: random needs samples (how many points to draw)")
        if self.mode == "grid" and self.samples is not None:  # (it was ignored: the whole grid ran)
            raise ValueError(f"samples: {self.samples} is for mode: random (draw that many points); a grid runs every "
                             "combination: drop samples, or set mode: random")
        return self

    def repeated_draws(self) -> int:
        """How many of mode random's ``samples`` draws repeated an earlier point (run once): 0 for a grid."""
        return 0 if self.mode == "grid" else (self.samples or 0) - len(self.points())

    # -- points -----------------------------------------------------------------------------

    def points(self) -> list[dict[str, Any]]:
        """The space's points as flat ``{dotted key: value}`` overrides, bundles expanded."""
        keys = list(self.space)
        if self.mode == "grid":
            combos = itertools.product(*(self.space[k] for k in keys))
            raw = [dict(zip(keys, combo)) for combo in combos]
        else:
            rng = np.random.default_rng(self.sample_seed)
            raw = []
            for _ in range(self.samples or 0):
                point = {}
                for k in keys:
                    v = self.space[k]
                    point[k] = v.draw(rng) if isinstance(v, RangeSpec) else v[int(rng.integers(len(v)))]
                raw.append(point)
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        for point in raw:
            flat: dict[str, Any] = {}
            for k, v in point.items():
                if "." in k:
                    flat[k] = v
                else:
                    flat.update(v)
            key = point_key(flat, None)
            if key not in seen:  # random draws may repeat a point
                seen.add(key)
                out.append(flat)
        return out

    def spec_hash(self, base_config: dict[str, Any]) -> str:
        """Identifies what the sweep computes: the spec and the base config's content, not where its runs
        are stored (``storage.url``, which ``CONTROLPLANE_STORAGE__URL`` sets and ``--db`` does not: one
        spec resumes, and holds its lock, however the database is named, a password in it or not)."""
        # (a trace without a rate profile, copies' placement, length scales or length caps hashes as before
        # those keys existed: such sweeps still resume)
        later = {k for k in ("rate_profile", "copies", "prompt_scale", "output_scale", "max_prompt_tokens",
                             "max_output_tokens") if getattr(self.trace, k) is None}
        unset = {"trace": later} if later else {}
        storage = base_config.get("storage")
        if isinstance(storage, dict) and "url" in storage:  # (as the default: a sweep hashed so before resumes)
            base_config = {**base_config, "storage": {**storage, "url": _DEFAULT_STORAGE_URL}}
        data = {"spec": self.model_dump(mode="json", exclude={"name": True, **unset}), "base": base_config}
        search = data["spec"]["search"]  # (as before select_seed existed and confirm_seeds' default became 1, 2, 3:
        if search["select_seed"] == 0:  # a sweep replays none of them, and one stored before still resumes)
            del search["select_seed"]
        if "confirm_seeds" not in self.search.model_fields_set:
            search["confirm_seeds"] = [0, 1, 2]
        if self.mode == "random" and list(self.space) != sorted(self.space):  # (the draws follow the keys' order)
            data["space_order"] = list(self.space)
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:24]


#: ``storage.url``'s default, which `SweepSpec.spec_hash` hashes in place of the URL given.
_DEFAULT_STORAGE_URL = StorageConfig.model_fields["url"].default


def error_lines(exc: ValidationError) -> str:
    """Pydantic's errors as ``" key: message"`` on the same line for one error, else one indented line each."""
    lines = []
    for e in exc.errors():
        msg = e["msg"].removeprefix("Value error, ")  # (a validator's own message names its key already)
        loc = ".".join(str(p) for p in e["loc"])
        lines.append(f"{loc}: {msg}" if loc and not msg.startswith(f"{loc}") else msg)
    return f" {lines[0]}" if len(lines) == 1 else "".join(f"\n  {line}" for line in lines)


class Point:
    """One run of a sweep: a point's overrides and a seed, with the key it is stored under."""

    __slots__ = ("index", "overrides", "seed", "key")

    def __init__(self, index: int, overrides: dict[str, Any], seed: int, key: str | None = None) -> None:
        self.index = index
        self.overrides = overrides
        self.seed = seed
        self.key = key or point_key(overrides, seed)

    def __repr__(self) -> str:
        return f"Point({self.index}, {self.overrides}, seed={self.seed})"


def point_key(overrides: dict[str, Any], seed: int | None) -> str:
    """A stable key of a point's overrides (and seed): the same point always gets the same key."""
    text = json.dumps({"o": overrides, "s": seed}, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as ``{dotted key: value}`` (lists and empty mappings are values)."""
    out: dict[str, Any] = {}
    for k, v in values.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def trace_identity(trace: str) -> str:
    """What a sweep's resume matches its trace by: the file's content hash (read once per sweep), so
    other rows under the same name start a new sweep and the same file named from another folder
    (a relative path, a link) resumes; a path that is not a file, by its resolved path."""
    path = Path(trace)
    if not path.is_file():
        return str(path.resolve())
    with path.open("rb") as f:
        return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()


class LoadedSpec:
    """A parsed spec with its base config resolved (a full config dict every point starts from)."""

    def __init__(self, spec: SweepSpec, path: Path | None, base_config: dict[str, Any],
                 base_given: dict[str, Any] | None = None) -> None:
        self.spec = spec
        self.path = path
        self.base_config = base_config  # (what the spec's hash and the sweep's settings read)
        # the keys the base was given, which the points are built on: a key derived from another (gpus_per_replica
        # from latency.tensor_parallel, gpu from latency.gpu) follows that key's swept value, not the base's
        self.base_given = base_given if base_given is not None else base_config
        self.name = spec.name or (path.stem if path else "sweep")
        self.hash = spec.spec_hash(base_config)

    def with_base(self, overrides: dict[str, Any]) -> LoadedSpec:
        """This spec with ``{dotted key: value}`` set in its base config (``--slo-ttft`` and the like)."""
        try:
            config = RunConfig(**apply_dotted(self.base_given, overrides))
        except ValidationError as exc:
            raise ConfigError(f"invalid configuration:{error_lines(exc)}") from None
        out = LoadedSpec(self.spec, self.path, config.model_dump(mode="json"), _given(config))
        out.name = self.name
        return out

    def run_hash(self, trace: str, trace_format: str | None) -> str:
        """The spec's hash with the trace it replays (a ``--trace`` flag may replace the spec's),
        identified by its content (`trace_identity`), not by the path naming it."""
        text = f"{self.hash}|{trace_identity(trace)}|{trace_format if trace_format is not None else self.trace_format()}"
        if allow := os.environ.get(ALLOW_ENV):  # (runs made under an allow-list are other runs: not resumed without)
            text += f"|{ALLOW_ENV}={','.join(sorted({n.strip() for n in allow.split(',') if n.strip()}))}"
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def trace_path(self) -> str:
        from sim.traces import bundled_trace_path

        t = self.spec.trace
        if t.path is None:
            return str(bundled_trace_path())
        p = Path(t.path).expanduser()  # (~ as the user's home, as `sim replay`'s trace argument takes it)
        if not p.is_absolute() and self.path is not None and (self.path.parent / p).exists():
            p = self.path.parent / p  # relative to the spec first, then to the working directory
        return str(p)

    def trace_format(self) -> str | None:
        t = self.spec.trace
        return "azure" if t.path is None and t.format is None else t.format

    def run_config(self, overrides: dict[str, Any], seed: int, *, db_url: str | None = None,
                   name: str | None = None) -> dict[str, Any]:
        """The validated config dict of one point (``ConfigError`` naming the point and key)."""
        data = apply_dotted(self.base_given, config_overrides(overrides))  # (its `trace.*` keys: `point_trace`)
        data["seed"] = seed
        if name is not None:
            data["name"] = name
        if db_url is not None:
            data.setdefault("storage", {})["url"] = db_url
        try:
            config = RunConfig(**data)
        except ValidationError as exc:
            named = [".".join(map(str, e["loc"])) for e in exc.errors()]
            shown = {k: v for k, v in overrides.items()  # (the point's values the errors are about; else all of them)
                     if any(n == k or n.startswith(f"{k}.") or k.startswith(f"{n}.") for n in named)} or overrides
            raise ConfigError(f"sweep point {shown}: invalid configuration:{error_lines(exc)}") from None
        from sim.run_checks import allow_listed

        return allow_listed(config)[0].model_dump(mode="json")  # (stored: the plugins that run, as `sim replay`'s)

    def points(self) -> list[Point]:
        """Every run: each point of the space once per seed, in a stable order."""
        out = []
        for i, overrides in enumerate(self.spec.points()):
            for seed in self.spec.seeds:
                out.append(Point(i, overrides, seed))
        return out


def _given(config: BaseModel) -> dict[str, Any]:
    """The keys ``config`` was given (by its file, the environment or the spec's base), without those its defaults or
    its validators filled in; a list is kept, given or not, so that a point's ``cluster.models.0.gpu`` or
    ``plugins.enabled.1`` finds its item (a list of sections as the keys each item was given)."""
    out = config.model_dump(mode="json", exclude_unset=True)
    for name in type(config).model_fields:
        value = getattr(config, name)
        if isinstance(value, BaseModel):
            if (section := _given(value)) or name in out:
                out[name] = section
        elif isinstance(value, list) and value and all(isinstance(v, BaseModel) for v in value):
            out[name] = [_given(v) for v in value]
        elif isinstance(value, list) and name not in out:
            out[name] = config.model_dump(mode="json", include={name})[name]
    return out


def load_spec(path: str | Path | None = None, data: dict[str, Any] | None = None) -> LoadedSpec:
    """Read and check a sweep spec (a YAML file, or its parsed ``data``); errors name the file."""
    where = str(path) if path is not None else "sweep spec"
    if data is None:
        if path is None:
            raise ValueError("load_spec needs a path or data")
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"sweep spec not found: {p}")
        try:
            data = yaml.safe_load(p.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: the top level must be a mapping (name, config, trace, space, seeds, ...)")
    try:
        spec = SweepSpec(**data)
    except ValidationError as exc:
        raise ConfigError(f"invalid sweep spec{f' {path}' if path is not None else ''}:{error_lines(exc)}") from None
    spec_path = Path(path) if path is not None else None
    config_path = None
    if spec.config is not None:
        config_path = Path(spec.config).expanduser()
        if not config_path.is_absolute() and spec_path is not None and (spec_path.parent / config_path).exists():
            config_path = spec_path.parent / config_path  # relative to the spec first
        elif not config_path.exists():  # (the spec and its key named, and where it looked, as for trace.path)
            looked = [config_path] if config_path.is_absolute() or spec_path is None else [
                spec_path.parent / config_path, Path.cwd() / config_path]
            raise ConfigError(f"{where}: config: config file not found: {spec.config} (looked for "
                              f"{' and '.join(str(p) for p in looked)})")
        read_config_file(config_path)  # a clear error for a broken file
    try:
        config = load_config(config_path)
        loaded = LoadedSpec(spec, spec_path, config.model_dump(mode="json"), _given(config)).with_base(flatten(spec.base))
    except ConfigError as exc:
        raise ConfigError(f"{where}: base: {exc}") from None
    check_trace_options(loaded, where)  # a reader option's value too (before a sweep row is stored)
    points = spec.points()
    check_point_traces(loaded, where, points)  # and each point's swept trace transforms
    for overrides in points[:1] + points[-1:]:
        try:
            loaded.run_config(overrides, spec.seeds[0])  # a bad key fails now, not in a worker
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    check_plugin_names(spec.space, loaded.base_config, where)  # an unknown plugin or setting too
    check_plugin_settings(loaded, where, points)  # and every point's settings values, as its run would check them
    check_points(loaded, where, points)  # and every point's config as `sim replay` checks it at its start
    return loaded
