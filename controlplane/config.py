"""A run's configuration: one settings model from a YAML/TOML file, env vars and flags.

Precedence, highest first: explicit overrides (CLI flags), environment variables
(``CONTROLPLANE_SEED=3``, nested with ``__``: ``CONTROLPLANE_CONTROL__TICK_S=0.5``), the config
file, the defaults below. Unknown keys are errors that name the key.
"""

from __future__ import annotations

import contextvars
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_serializer,
                      model_validator)
from typing_extensions import TypedDict  # (pydantic's dependency: below Python 3.12 pydantic takes only this one)

from controlplane.config_values import same_value, settings_floats
from controlplane.config_errors import ENV_PREFIX, MOVED_TO_CONTROL as _MOVED_TO_CONTROL, environment_note
from controlplane.config_errors import error_message  # noqa: F401 (plugin settings' errors are worded the same)
from controlplane.config_errors import env_variables as _env_variables, settings_error_message, validation_message
from controlplane.config_errors import shadowed_message, shadowed_values
from controlplane.config_dotted import replaced_list_items, split_dotted, with_dotted
from controlplane.config_files import read_config_file
from controlplane.errors import ConfigError
from controlplane.guardian_config import GuardiansConfig, empty_list
from controlplane.hardware.cost import DEFAULT_GPU_PRICES, canonical_prices
from controlplane.hardware.own_specs import OwnGPUs, OwnModels, validated_cluster

#: The built-in plugins a run enables when the config names none: one per policy family.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "queue-limit",  # admission and queueing
    "exact-cache",  # response caching
    "least-loaded",  # routing
    "continuous-batching",  # batching
    "fixed-replicas",  # autoscaling
    "static-memory",  # GPU memory planning
    "sampled-guardian",  # guardians
    "builtin-latency-models",  # simulator latency models
)

#: Which built-in plugin decides when every enabled plugin defers (or raises) on a policy hook.
FALLBACK_PLUGINS: dict[str, str] = {
    "cp_admit_request": "queue-limit",
    "cp_route_request": "least-loaded",
    "cp_form_batch": "continuous-batching",
    "cp_scale": "fixed-replicas",
    "cp_plan_memory": "static-memory",
    "cp_guardian_plan": "sampled-guardian",
}


class WorkerSection(TypedDict, total=False):
    """``cluster.models[].worker``: its keys are `controlplane.live.model_source.WorkerModelSettings`'s fields (a test
    keeps them the same), so a misspelt one is refused in a simulated run too; their values are checked when a live
    run loads the config (that model's module imports torch)."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    path: Any
    config: Any
    preset: Any
    precision: Any
    compile: Any
    compile_mode: Any
    device: Any
    seed: Any
    max_seq_len: Any
    prefix_cache_tokens: Any
    prefix_block_tokens: Any


class _Section(BaseModel):
    # No float setting takes infinity or NaN (a tick, an SLO, a price: an infinite cost, JSON that is not JSON).
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class PluginsConfig(_Section):
    enabled: list[str] = Field(default_factory=lambda: list(DEFAULT_PLUGINS))
    settings: dict[str, dict[str, Any]] = Field(default_factory=dict)


class ModelDeployment(_Section):
    """One served model: its replicas, hardware and how fast it runs."""

    name: str = "default"
    replicas: int = Field(2, ge=0)  # replicas at the start of the run
    latency_model: str = "linear"  # a registered latency model (simulator)
    latency: dict[str, Any] = Field(default_factory=dict)  # its settings
    gpu: str = "a100-80gb"
    gpus_per_replica: int = Field(1, ge=1)  # tensor-parallel degree; not given: latency.tensor_parallel, else 1
    precision: str = "fp16"  # weight format: fp16 | bf16 | int8 | fp8 | nf4 (changes weight memory, so KV room)
    # The model's shape for memory planning, a catalogue name (controlplane.hardware.specs.MODELS) such as
    # "meta-llama/Llama-2-70b-hf"; None: the latency settings' "model", if any.
    model_spec: str | None = None
    max_num_seqs: int = Field(128, ge=1)
    max_batch_tokens: int = Field(8192, ge=1)
    kv_block_size: int = Field(16, ge=1)
    num_kv_blocks: int | None = Field(None, ge=1)  # None: from the memory plan (known model), else unlimited
    cold_start_s: float | None = Field(None, ge=0)  # scale-up to ready; None: from weights and load speed
    load_bandwidth_gb_s: float = Field(2.0, gt=0)  # weight load speed (GB/s) for that cold start
    max_model_len: int | None = Field(None, ge=1)  # prompt+output cap; None: no cap
    worker: WorkerSection = Field(default_factory=lambda: WorkerSection())  # live mode: the worker's model settings

    @model_validator(mode="after")
    def _fits(self) -> ModelDeployment:
        """The latency model's ``tensor_parallel`` is the replica's GPU count (``gpus_per_replica`` follows it when
        not given), and a known model's weights fit those GPUs (`controlplane.hardware.deployment_fit`)."""
        from controlplane.hardware.deployment_fit import check_deployment

        return check_deployment(self)

    @field_validator("name")
    @classmethod
    def _named(cls, value: str) -> str:
        """A name requests can ask for (``--model-name ""`` is refused too): ``""`` started a daemon whose
        worker was ``-0`` and a replay whose model no request could name."""
        if not value.strip():
            from pydantic_core import PydanticCustomError

            raise PydanticCustomError("empty_name", "a model needs a name (the one requests ask for), got {value}",
                                      {"value": repr(value)})
        return value

    @field_validator("precision", "model_spec", mode="before")
    @classmethod
    def _known(cls, value: Any, info: Any) -> Any:
        """A precision or ``model_spec`` the catalogue (or ``cluster.model_specs``) knows, checked when the config
        loads (`controlplane.hardware.deployment_fit.known_setting`)."""
        from controlplane.hardware.deployment_fit import known_setting

        return known_setting(info.field_name, value)


class ClusterConfig(_Section):
    models: list[ModelDeployment] = Field(default_factory=lambda: [ModelDeployment()])
    max_retries: int = Field(2, ge=0)  # re-routes after a worker failure before failing a request
    # USD per GPU-hour by GPU type (controlplane.hardware.cost): the run's cost in its summary
    gpu_prices: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_GPU_PRICES))
    gpus: OwnGPUs = Field(default_factory=dict)  # GPUs of one's own by name (controlplane.hardware.own_specs)
    model_specs: OwnModels = Field(default_factory=dict)  # models of one's own by name, for model_spec

    @model_serializer(mode="wrap")
    def _without_empty_own_specs(self, handler: Any) -> Any:
        """``gpus`` and ``model_specs`` are left out of a dump while empty: a stored config, a sweep spec's hash and
        `runs config` read as before they existed (an older release refused the keys; a stored sweep resumes)."""
        data = handler(self)
        if isinstance(data, dict):
            for key in ("gpus", "model_specs"):
                if not data.get(key):
                    data.pop(key, None)
        return data

    @model_validator(mode="wrap")
    @classmethod
    def _own_specs(cls, data: Any, handler: Any) -> ClusterConfig:
        """Its own GPUs and models known to its checks and, once valid, to its run (`validated_cluster`)."""
        return validated_cluster(data, handler)

    @field_validator("gpu_prices")
    @classmethod
    def _prices_non_negative(cls, prices: dict[str, float]) -> dict[str, float]:
        bad = {gpu: p for gpu, p in prices.items() if not p >= 0}
        if bad:
            raise ValueError(f"GPU prices must be >= 0 USD per GPU-hour, got {bad}")
        return canonical_prices(prices)  # (``h100: 3.0`` prices h100-80gb: the default's key won before)

    @model_validator(mode="after")
    def _unique_names(self) -> ClusterConfig:
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique, got {names}")
        if not names:
            raise ValueError("at least one model is needed")
        return self

    def deployment(self, model: str | None) -> ModelDeployment | None:
        if model is None:
            return self.models[0]
        for m in self.models:
            if m.name == model:
                return m
        return None


class ControlConfig(_Section):
    """The control loop, in both modes."""

    tick_s: float = Field(1.0, gt=0)  # control loop period: autoscaling, metric samples
    metrics_interval_s: float = Field(5.0, gt=0)  # metric time-series resolution (at most one sample a tick)
    latency_window_s: float = Field(60.0, gt=0)  # recent latencies an autoscaler sees (ScalingContext)


class SimConfig(_Section):
    exact: bool = False  # one core round trip per iteration (slow; to check the fast mode)
    guardian_latency_s: float = Field(0.05, ge=0)  # simulated guardian check time
    guardian_block_rate: float = Field(0.0, ge=0, le=1)  # synthetic label: the share of harmful requests
    # the same per tenant (others: guardian_block_rate); see sim.guardian_labels
    guardian_tenant_block_rates: dict[str, Annotated[float, Field(ge=0, le=1)]] = Field(default_factory=dict)
    until_s: float | None = Field(None, gt=0)  # stop the run at this time (in flight = cut off)


class SLOConfig(_Section):
    ttft_s: float = Field(2.0, gt=0)
    tpot_s: float = Field(0.2, gt=0)
    e2e_s: float | None = Field(None, gt=0)


class StorageConfig(_Section):
    url: str = "sqlite:///controlplane.db"  # a database URL, or a SQLite file's path (`database_url`)
    batch_size: int = Field(20000, ge=1)
    record_batches: bool = True  # store every batch decision (the bulk of the decision table)
    record_iterations: bool = False  # store live workers' timed iterations (the `iteration` table; calibration)
    # Rows kept in memory while the database is unreachable; the oldest beyond are spilled to a file.
    max_pending_rows: int = Field(200_000, ge=1)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        """A URL, or a SQLite file's path; not a variable reference (``${DB_URL}``: not expanded, it named a file)."""
        from controlplane.config_env import UNEXPANDED, unexpanded_context
        from controlplane.storage.url import database_url

        if context := unexpanded_context(value):
            from pydantic_core import PydanticCustomError

            raise PydanticCustomError("unexpanded", UNEXPANDED, context)
        return database_url(value)


class ApiKey(_Section):
    """One API key of the daemon's inference endpoints: its SHA-256 (never the key) and its tenant."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")  # `controlplane keys new|hash` prints it
    tenant: Annotated[str, BeforeValidator(lambda v: v.strip() if isinstance(v, str) else v)] = Field(min_length=1, max_length=256)  # stripped
    name: str | None = None  # for people: who holds it


class AuthConfig(_Section):
    """Who may call the daemon's inference endpoints. No keys: anyone (loopback by default)."""

    api_keys: list[ApiKey] = Field(default_factory=empty_list)

    @model_validator(mode="after")
    def _unique_keys(self) -> AuthConfig:
        digests = [k.sha256 for k in self.api_keys]
        if len(set(digests)) != len(digests):
            raise ValueError("api_keys: the same key is listed twice")
        return self


_file_values: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("_file_values", default={})


class RunConfig(BaseModel):
    """Everything a run needs besides its trace.

    Built as a pydantic-settings model would be (precedence: the keyword arguments, then
    ``CONTROLPLANE_*`` environment variables, then the config file given to `load_config`, then
    the defaults), but pydantic-settings is imported only when the environment holds a variable
    it would read (`_settings_read_env`): without one, its sources give exactly the keyword
    arguments deep-merged over the file's values (`_merged_values`), and importing it costs a
    replay ~0.1 G instructions (dotenv, asyncio, argparse, its cloud providers). With one, the
    values are built by a pydantic-settings twin of this class (`_settings_class`), as before.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, validate_default=True)
    #: True on the pydantic-settings twin, whose own ``__init__`` reads the sources.
    _settings_twin: ClassVar[bool] = False

    name: str | None = None
    seed: int = Field(0, ge=0, le=2**63 - 1)  # numpy's generators take no negative seed; SQL stores 64 bits
    plugins: PluginsConfig = Field(default_factory=PluginsConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    control: ControlConfig = Field(default_factory=ControlConfig)
    sim: SimConfig = Field(default_factory=SimConfig)
    slo: SLOConfig = Field(default_factory=SLOConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    guardians: GuardiansConfig = Field(default_factory=GuardiansConfig)

    def __init__(self, /, **values: Any) -> None:
        if self._settings_twin:
            super().__init__(**values)  # called by BaseSettings.__init__ with the merged sources
        elif _settings_read_env():
            self.__setstate__(_settings_class()(**values).__getstate__())
        else:
            super().__init__(**_merged_values(values))

    @field_validator("guardians")
    @classmethod
    def _finite_guardians(cls, guardians: GuardiansConfig) -> GuardiansConfig:
        """The guardians' float settings are finite too (their section's models take any float)."""
        for key, value in settings_floats(guardians, ()):
            if not math.isfinite(value):
                from pydantic_core import PydanticCustomError

                raise PydanticCustomError("finite_number", f"{'.'.join(key)}: Input should be a finite number, got "
                                                           f"{value}")
        return guardians

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        """``sim.tick_s`` / ``sim.metrics_interval_s`` (before they moved) mean ``control.*`` (a config made in
        code: `load_config` moves each source's before they meet)."""
        return _moved_names(data, error=ValueError)


def _moved_names(values: Any, where: str = "", note: Any = lambda key: "", error: type[Exception] = ConfigError) -> Any:
    """One source's values (a file's, the environment's, the options') with ``sim.tick_s`` /
    ``sim.metrics_interval_s`` moved to ``control``, so that the old names take the source's precedence like any
    key; both names in one source with different values: an error naming the source (``where``: `` in FILE``; or
    ``note(key)``, said after the keys)."""
    if not isinstance(values, dict) or not isinstance(values.get("sim"), dict):
        return values
    sim = dict(values["sim"])
    moved = {k: sim.pop(k) for k in _MOVED_TO_CONTROL if k in sim}
    if not moved:
        return values
    control = values.get("control")
    if control is not None and not isinstance(control, dict):
        return values  # (the section's own error comes from validation)
    control = dict(control or {})
    for key, value in moved.items():
        if key in control and not same_value(control[key], value):
            why = (f"sim.{key} ({value!r}) and control.{key} ({control[key]!r}) disagree{note(key)}; sim.{key} is the "
                   f"old name of control.{key}: give one")
            raise error(f"invalid configuration{where}:\n  {why}" if error is ConfigError else why)
        control.setdefault(key, value)
    return {**values, "sim": sim, "control": control}


def _settings_read_env() -> bool:
    """Whether pydantic-settings' environment source could find a value: a variable named, in any
    case, ``CONTROLPLANE_<field>`` or ``CONTROLPLANE_<field>__...`` (checked as a prefix, so a
    few others, ``CONTROLPLANE_SEEDS``, take the pydantic-settings way too: same result)."""
    prefixes = _env_prefixes()
    return any(key.lower().startswith(prefixes) for key in os.environ)


def _env_prefixes() -> tuple[str, ...]:
    global _ENV_PREFIXES
    if _ENV_PREFIXES is None:
        _ENV_PREFIXES = tuple(ENV_PREFIX.lower() + name for name in RunConfig.model_fields)
    return _ENV_PREFIXES


_ENV_PREFIXES: tuple[str, ...] | None = None
_DUMP_INIT: Any = None  # pydantic-settings' init source's dump of the keyword arguments


def _merged_values(values: dict[str, Any]) -> dict[str, Any]:
    """What pydantic-settings' sources give `RunConfig` when the environment has none of its
    variables, step for step: the keyword arguments matched to fields case-insensitively (the
    first of a field's spellings wins; the rest of the keys stay as given) and dumped as
    ``dict[str, Any]`` (``nested_model_default_partial_update``), then deep-merged over the
    config file's values. The environment and the defaults source add nothing (every nested
    section's default is a factory). Checked against pydantic-settings in
    ``tests/controlplane/test_config.py``."""
    from pydantic._internal._utils import deep_update  # the merge pydantic-settings itself uses

    state: dict[str, Any] = {}
    if values:
        global _DUMP_INIT
        matched: dict[str, Any] = {}
        unused = dict(values)
        for field in RunConfig.model_fields:
            keys = [key for key in values if key.lower() == field]
            if keys:
                matched[field] = values[keys[0]]
                for key in keys:
                    del unused[key]
        matched.update(unused)
        if _DUMP_INIT is None:
            from pydantic import TypeAdapter

            _DUMP_INIT = TypeAdapter(dict[str, Any]).dump_python
        state = _DUMP_INIT(matched)
    return deep_update(dict(_file_values.get()), state)


_SETTINGS_CLASS: type[RunConfig] | None = None


def _settings_class() -> type[RunConfig]:
    """`RunConfig` as a pydantic-settings model (its fields, validators and checks inherited),
    made on first use: it reads the ``CONTROLPLANE_*`` environment variables."""
    global _SETTINGS_CLASS
    if _SETTINGS_CLASS is None:
        base = globals()["RunConfig"]
        from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

        class _FileSource(PydanticBaseSettingsSource):
            """Values read from the config file given to `load_config`."""

            def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
                return _file_values.get().get(field_name), field_name, False

            def __call__(self) -> dict[str, Any]:
                return dict(_file_values.get())

        class _EnvSource(PydanticBaseSettingsSource):
            """The environment's values, old names moved (`_moved_names`) before they meet the other sources'."""

            def __init__(self, inner: PydanticBaseSettingsSource) -> None:
                super().__init__(inner.settings_cls)
                self.inner = inner

            def _set_current_state(self, state: dict[str, Any]) -> None:
                self.inner._set_current_state(state)

            def _set_settings_sources_data(self, states: dict[str, dict[str, Any]]) -> None:
                self.inner._set_settings_sources_data(states)

            def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
                return self.inner.get_field_value(field, field_name)

            def __call__(self) -> dict[str, Any]:
                return _moved_names(self.inner(), note=lambda key: " (from the environment: " + ", ".join(
                    dict.fromkeys(_env_variables(("sim", key)) + _env_variables(("control", key)))) + ")")

        class RunConfig(BaseSettings, base):  # the same name: validation errors' titles say RunConfig
            model_config = SettingsConfigDict(
                env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid",
                nested_model_default_partial_update=True,
            )
            _settings_twin: ClassVar[bool] = True

            @classmethod
            def settings_customise_sources(
                cls,
                settings_cls: type[BaseSettings],
                init_settings: PydanticBaseSettingsSource,
                env_settings: PydanticBaseSettingsSource,
                dotenv_settings: PydanticBaseSettingsSource,
                file_secret_settings: PydanticBaseSettingsSource,
            ) -> tuple[PydanticBaseSettingsSource, ...]:
                return (init_settings, _EnvSource(env_settings), _FileSource(settings_cls))

        _SETTINGS_CLASS = RunConfig
    return _SETTINGS_CLASS


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None, *,
                option_names: Mapping[str, str] | None = None) -> RunConfig:
    """Build the run config from a file, the environment and explicit overrides: nested sections (a list in one is
    set whole) or dotted keys (``{"cluster.models.0.replicas": 2}``, set last). ``option_names``: the
    command-line option that gave each override, by its dotted key (``sim.until_s``: ``--until``), to name a bad
    value by its option."""
    overrides, dotted = split_dotted(overrides or {})
    file_given = read_config_file(path) if path else {}
    file_values = _moved_names(file_given, f" in {path}")  # (each source's old names moved before they meet)
    given_values = _moved_names(overrides or {}, note=lambda key: " (given as options or overrides)")
    shadowed = shadowed_values(file_values, given_values)  # (a section written as a scalar, keys set inside it)
    if shadowed and (message := shadowed_message(shadowed, RunConfig.model_validate, path)) is not None:
        raise ConfigError(message)
    if (why := replaced_list_items(file_values, given_values, path)) is not None:
        raise ConfigError(why)  # (an item that would drop what the file gives: the dotted keys named)
    token = _file_values.set(file_values)
    try:
        config = RunConfig(**given_values)
    except ValidationError as exc:
        raise ConfigError(validation_message(exc, path, overrides, given_values, file_given, option_names)) from None
    except Exception as exc:
        if type(exc).__name__ != "SettingsError":  # (pydantic-settings: a variable its parser cannot read)
            raise
        raise ConfigError(settings_error_message(exc)) from None
    finally:
        _file_values.reset(token)
    return with_dotted(config, dotted) if dotted else config


def checked_config(config: Any) -> RunConfig:
    """``config`` checked again as a run starts: a `RunConfig` changed in code after it was made
    (``config.control.tick_s = -1``) skipped its checks, and a run of it hung, divided by zero or left
    every request in flight. Raises ``TypeError`` for anything else (a path, a dict: `load_config`
    makes a config of those) and ``ConfigError`` naming each bad key; returns the config checked."""
    if not isinstance(config, RunConfig):
        raise TypeError(f"config must be a RunConfig (controlplane.config.load_config(path, overrides) makes one "
                        f"from a file or a dict), got {type(config).__name__}")
    try:
        return RunConfig.model_validate(config.model_dump())
    except ValidationError as exc:
        lines = [f"{'.'.join(str(p) for p in err['loc'])}: {error_message(err)}" for err in exc.errors()]
        raise ConfigError("invalid configuration (a value set after the config was made):\n  "
                          + "\n  ".join(lines)) from None
