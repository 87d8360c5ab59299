"""The ``guardians:`` section of a run's configuration: which guardian models exist, what they cost
and how their verdicts combine. Plugins decide *which* requests they check (``cp_guardian_plan``);
this section says what a guardian *is* (its kind, model, replicas, timeout, failure behaviour).

    guardians:
      combine: any                    # any | majority | weighted (per plan, unless it names its own)
      models:
        - name: rules
          kind: rules
          patterns: ["(?i)how to make a bomb"]
          blocklist: ["forbidden phrase"]
        - name: judge
          kind: causal-lm              # or classifier, simulated
          model: /models/llama-guard   # any local path
          replicas: 2
          timeout_s: 2.0
          on_error: open               # open: an error or timeout counts as pass; closed: as block
          latency: {base_s: 0.03, per_token_s: 0.00002, max_batch: 16}   # the simulator's price
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["NAMING_KEYS", "GuardianLatency", "GuardianQuality", "GuardianSpec", "GuardiansConfig", "empty_list",
           "refuse_undeclared_guardians"]


def empty_list() -> list:
    """``list()`` as a Python function, for ``Field(default_factory=...)``: pydantic inspects a
    factory's signature, and for the builtin ``list`` that parses its text signature, whose first
    use compiles the ``tokenize`` module's regular expressions (~0.03 G instructions at start-up)."""
    return []

GuardianKind = Literal["rules", "causal-lm", "classifier", "simulated"]
Combine = Literal["any", "majority", "weighted"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GuardianLatency(_Section):
    """The simulator's price of one guardian batch on one replica: ``base_s + per_token_s * tokens``."""

    base_s: float = Field(0.02, ge=0)  # fixed cost of a forward pass
    per_token_s: float = Field(0.0, ge=0)  # per token checked (input: the prompt; output: prompt + answer)
    max_batch: int = Field(16, ge=1)  # checks one replica runs together


class GuardianQuality(_Section):
    """The simulator's verdict model for a ``simulated`` guardian on labelled requests.

    Score = sigmoid(separation * (label - 0.5) + noise * z), z ~ N(0, 1) fixed per (text, guardian):
    an informative but noisy score. The guardian never sees the label, only this score.
    """

    separation: float = Field(12.0, ge=0)  # how far apart harmful and benign scores sit
    noise: float = Field(0.0, ge=0)  # how much they overlap


class GuardianSpec(_Section):
    name: str = Field(min_length=1)
    kind: GuardianKind = "simulated"
    model: str | None = None  # local model path (causal-lm, classifier)
    replicas: int = Field(1, ge=1)  # workers of its own (live: in the worker pool; sim: replicas with a queue)
    gpus_per_replica: int = Field(1, ge=0)  # what a replica-second costs in GPU-seconds (sim); 0: a CPU guardian
    gpu: str | None = None  # the GPU type its replicas hold, for their price (None: the first served model's)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # live weights
    placement: Literal["own", "shared"] = "own"  # live: its own workers, or loaded into every generation worker
    device: str = "cpu"  # live: where its model runs
    timeout_s: float = Field(5.0, gt=0)  # a check that takes longer answers "timeout"
    on_error: Literal["open", "closed"] = "open"  # error/timeout: "open" passes, "closed" blocks
    threshold: float = Field(0.5, ge=0, le=1)  # a score at or above blocks
    weight: float = Field(1.0, ge=0)  # its vote under combine "weighted"
    latency: GuardianLatency = Field(default_factory=GuardianLatency)
    quality: GuardianQuality = Field(default_factory=GuardianQuality)
    # rules: regular expressions and plain phrases (case-insensitive) that block
    patterns: list[str] = Field(default_factory=empty_list)
    blocklist: list[str] = Field(default_factory=empty_list)
    # causal-lm: the judge's prompt ({text} is the checked text) and the words of its verdict
    prompt_template: str = (
        "Task: check whether the text below is unsafe.\n\nText: {text}\n\nAnswer safe or unsafe.\nAnswer:"
    )
    safe_word: str = " safe"
    unsafe_word: str = " unsafe"
    # classifier: the label index that means harmful
    block_label: int = Field(1, ge=0)
    max_input_tokens: int = Field(512, ge=8)  # live: longer texts are cut (from the start)

    @property
    def latency_calibrated(self) -> bool:
        """Whether the simulator's price of a check differs from the default (``latency.base_s``
        0.02, ``per_token_s`` 0): at the default it is 20 ms a batch, whatever the guardian really
        takes (a replay says so: `sim.guardian_pool`). Read from the values, not from which keys
        were set: a run's config is checked again from its dump, which sets every key."""
        default = GuardianLatency()
        return (self.latency.base_s, self.latency.per_token_s) != (default.base_s, default.per_token_s)

    @field_validator("patterns")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        """A pattern that does not compile is refused when the config loads, in a replay as live:
        the simulator never runs the patterns, so a replay would otherwise pass a config that
        then stops the daemon at start."""
        for p in patterns:
            try:
                re.compile(p, re.IGNORECASE)
            except re.error as exc:
                raise ValueError(f"{p!r} is not a valid pattern: {exc}") from None
        return patterns

    @model_validator(mode="after")
    def _model_kinds_name_a_model(self) -> GuardianSpec:
        """A ``classifier`` or ``causal-lm`` without ``model`` is refused when the config loads, in a
        replay as live: the simulator prices it without loading anything, so a replay would otherwise
        pass a config that stops the daemon at start, after the other guardians loaded."""
        if self.kind in ("classifier", "causal-lm") and not self.model:
            raise ValueError(f"guardian {self.name!r}: kind {self.kind} needs `model`, a local model directory")
        return self


class GuardiansConfig(_Section):
    combine: Combine = "any"  # how a plan's parallel verdicts combine unless it names a rule
    weighted_threshold: float = Field(0.5, ge=0, le=1)  # "weighted": block at this share of the weight
    models: list[GuardianSpec] = Field(default_factory=empty_list)

    @model_validator(mode="after")
    def _unique_names(self) -> GuardiansConfig:
        names = [g.name for g in self.models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"guardian names must be unique, got {dupes} twice")
        return self

    def spec(self, name: str) -> GuardianSpec | None:
        for g in self.models:
            if g.name == name:
                return g
        return None


#: The settings keys in which the built-in guardian planners name guardians, in the order an error names them.
NAMING_KEYS = ("guardian", "guardians", "screen", "judge")


def naming_key(settings: object, guardian: str) -> str:
    """The settings key that names ``guardian``: one of `NAMING_KEYS` first, then any other key of the
    plugin's settings whose value is the name or holds it (a planner of your own may name its keys as
    it likes: ``screeners: [kw, clf]``); ``guardian`` when none does."""
    keys = dict.fromkeys((*NAMING_KEYS, *getattr(type(settings), "model_fields", {})))
    for k in keys:
        v = getattr(settings, k, None)
        if v == guardian or (isinstance(v, (tuple, list, set, frozenset)) and guardian in v):
            return k
    return "guardian"


def refuse_undeclared_guardians(config: object, available: dict) -> None:
    """A run's start refuses a plugin whose settings name a guardian ``guardians.models`` does not declare,
    when it declares some: a misspelling (``guardian: jduge``) would run every check as ``unavailable``,
    which fails open, checking nothing while the run looked guarded (before, only a warning said so). The
    error names the key (`naming_key`). Plugins say which guardians their plans name with a
    ``guardians_named(settings)`` class method (the built-in planners do; docs/guardians.md, Writing a
    planner); without it a plugin is not checked here. Where ``guardians``
    declares none, the simulator's old fixed-delay guardian takes any name, and nothing is refused.
    ``available``: the discovered plugins (`controlplane.plugin_manager.discover_plugins`)."""
    from controlplane.errors import ConfigError

    declared = [g.name for g in config.guardians.models]  # type: ignore[attr-defined]
    if not declared:
        return
    plugins = config.plugins  # type: ignore[attr-defined]
    for name in plugins.enabled:
        target = available[name].target if name in available else None
        named = getattr(target, "guardians_named", None)
        if named is None:
            continue
        settings = target.Settings.model_validate(plugins.settings.get(name) or {})
        missing = [g for g in named(settings) if g not in declared]
        if not missing:
            continue
        key = naming_key(settings, missing[0])
        raise ConfigError(f"plugins.settings.{name}.{key}: guardian(s) {', '.join(map(repr, missing))} not declared "
                          f"in guardians.models (declared: {', '.join(declared)}); a misspelling? Every check by an "
                          "undeclared guardian would answer 'unavailable', which fails open (see docs/guardians.md)")
