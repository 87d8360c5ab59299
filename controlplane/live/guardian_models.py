"""Live guardian models: what checks one text and says pass or block, with a score and a reason.

* `RuleGuardian` (kind ``rules``): regular expressions and plain phrases (case-insensitive); the
  cheapest real tier. Score 1.0 on a match, 0.0 otherwise.
* `ClassifierGuardian` (``classifier``): any local sequence-classification model
  (``AutoModelForSequenceClassification``); score = the softmax probability of ``block_label``,
  which must be one of the model's labels (checked when it loads).
* `JudgeGuardian` (``causal-lm``): any local causal LM used as a judge, Llama-Guard style: the text
  goes into ``prompt_template`` and the verdict is read from the model's own likelihood of
  answering ``unsafe_word`` rather than ``safe_word`` (score = P(unsafe) / (P(safe) + P(unsafe)),
  from one forward pass over both continuations), so every check gives a verdict (a random or
  confused model gives a score near 0.5, never "unavailable").

A verdict blocks when the score reaches the guardian's ``threshold``. Models load from
``model`` (a local directory; nothing is downloaded) with the directory's tokenizer, else the
byte-level tokenizer sized to the model's vocabulary, as generation workers do. A checkpoint that
lacks weights its kind needs (a causal LM given to a ``classifier``: no classification head) is
refused with the weights named, rather than loaded with them initialised at random.

They run inside workers of the live pool (`controlplane.live.worker_runtime`): a guardian worker
of its own starts from `GuardianWorkerSettings`; a generation worker loads one beside its model.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod

from pydantic import BaseModel, ConfigDict

from controlplane.guardian_config import GuardianSpec

__all__ = ["ClassifierGuardian", "GuardianModel", "GuardianWorkerSettings", "JudgeGuardian", "RuleGuardian",
           "load_guardian"]

_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


class GuardianWorkerSettings(BaseModel):
    """What a guardian worker of its own (``placement: own``) loads: one declared guardian.
    ``device`` is where its model runs; a pool may rewrite it as it does a generation worker's
    (``auto``/``cuda``: a GPU of its own when there is one)."""

    model_config = ConfigDict(extra="forbid")

    guardian: GuardianSpec
    device: str = "cpu"

    @classmethod
    def of(cls, spec: GuardianSpec) -> GuardianWorkerSettings:
        return cls(guardian=spec, device=spec.device)

    def spec(self) -> GuardianSpec:
        """The guardian with the device it got (``auto`` resolved where the worker runs)."""
        device = self.device
        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        return self.guardian.model_copy(update={"device": device})

    def source_name(self) -> str:
        g = self.guardian
        return f"guardian {g.name} ({g.kind}{', ' + g.model if g.model else ''})"


class GuardianModel(ABC):
    """One guardian's checker. ``check`` runs in the worker that hosts it, one check at a time."""

    def __init__(self, spec: GuardianSpec) -> None:
        self.spec = spec

    def check(self, text: str) -> tuple[str, float, str]:
        """(verdict "pass" | "block", score 0-1, reason)."""
        score, reason = self.score(text)
        return ("block" if score >= self.spec.threshold else "pass"), score, reason

    @abstractmethod
    def score(self, text: str) -> tuple[float, str]:
        """(score 0-1, reason): how likely ``text`` is to be harmful, by this guardian's kind."""


class RuleGuardian(GuardianModel):
    def __init__(self, spec: GuardianSpec) -> None:
        super().__init__(spec)
        self.patterns = []
        for p in spec.patterns:
            try:
                self.patterns.append(re.compile(p, re.IGNORECASE))
            except re.error as exc:
                raise ValueError(f"guardians.models[{spec.name}].patterns: {p!r} is not a valid pattern: {exc}") from None
        self.phrases = [w.lower() for w in spec.blocklist if w]

    def score(self, text: str) -> tuple[float, str]:
        low = text.lower()
        for w in self.phrases:
            if w in low:
                return 1.0, f"blocklisted phrase {w!r}"
        for p in self.patterns:
            if p.search(text):
                return 1.0, f"matched pattern {p.pattern!r}"
        return 0.0, "no rule matched"

    def check(self, text: str) -> tuple[str, float, str]:
        score, reason = self.score(text)
        return ("block" if score > 0 else "pass"), score, reason


def _refuse_a_missing_directory(spec: GuardianSpec) -> None:
    """A ``model`` written as a path (absolute, ``./``, ``~``) must be a directory here: otherwise
    transformers takes it for a Hub repo id and answers "Repo id must be in the form
    'repo_name' or 'namespace/repo_name'", which says nothing about the missing directory."""
    from pathlib import Path

    path = Path(spec.model).expanduser()
    if (path.is_absolute() or spec.model.startswith((".", "~"))) and not path.is_dir():
        raise ValueError(f"guardians.models[{spec.name}].model: cannot load {spec.model!r}: no such directory "
                         "on this machine; give the local directory of the guardian's model (nothing is downloaded)")


def _refuse_new_weights(spec: GuardianSpec, auto_class: str, info: dict) -> None:
    """A checkpoint without some of the weights its kind needs (a causal LM given to a
    ``classifier``: no classification head) loads with them newly initialised at random, and the
    guardian would give random verdicts while looking healthy: refused, naming the weights."""
    missing = sorted(info.get("missing_keys") or ())
    mismatched = sorted(str(k[0]) if isinstance(k, tuple) else str(k) for k in info.get("mismatched_keys") or ())
    if not missing and not mismatched:
        return
    keys = missing + mismatched
    listed = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
    what = "missing from" if missing else "of another shape in"
    raise ValueError(f"guardians.models[{spec.name}].model: {spec.model!r} does not load as a {spec.kind} "
                     f"({auto_class}): weights {what} the checkpoint would be initialised at random ({listed}), "
                     "so its verdicts would be random; give a checkpoint of this kind (a classifier needs a "
                     "sequence-classification head, a causal-lm a language-model head)")


class _TorchGuardian(GuardianModel):
    auto_class = ""

    def __init__(self, spec: GuardianSpec) -> None:
        super().__init__(spec)
        import torch
        import transformers

        from controlplane.live.model_source import load_tokenizer

        if not spec.model:
            raise ValueError(f"guardians.models[{spec.name}]: kind {spec.kind} needs `model`, a local model directory")
        dtype = getattr(torch, _DTYPES.get(spec.precision, ""), None)
        if dtype is None:
            raise ValueError(f"guardians.models[{spec.name}].precision: {spec.precision!r} is not one of "
                             f"{sorted(_DTYPES)}")
        _refuse_a_missing_directory(spec)
        try:
            model, info = getattr(transformers, self.auto_class).from_pretrained(
                spec.model, dtype=dtype, local_files_only=True, output_loading_info=True)
        except OSError as exc:
            raise ValueError(f"guardians.models[{spec.name}].model: cannot load {spec.model!r}: {exc}") from None
        _refuse_new_weights(spec, self.auto_class, info)
        self.model = model.to(spec.device).eval()
        self.tokenizer = load_tokenizer(spec.model, model.config)
        self.torch = torch

    def _ids(self, text: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids[-self.spec.max_input_tokens:]


class ClassifierGuardian(_TorchGuardian):
    auto_class = "AutoModelForSequenceClassification"

    def __init__(self, spec: GuardianSpec) -> None:
        super().__init__(spec)
        labels = int(getattr(self.model.config, "num_labels", 0) or 0)
        if spec.block_label >= labels:  # else every check raised, each answering "error" (then on_error)
            raise ValueError(f"guardians.models[{spec.name}].block_label: {spec.block_label} is not a label of "
                             f"{spec.model!r}, which has {labels} (0 to {labels - 1}); give the index of the label "
                             "that means harmful")

    def score(self, text: str) -> tuple[float, str]:
        torch = self.torch
        ids = self._ids(text) or [0]
        with torch.inference_mode():
            logits = self.model(input_ids=torch.tensor([ids], device=self.spec.device)).logits[0].float()
        probs = torch.softmax(logits, dim=-1)
        label = self.spec.block_label  # one of the model's labels (checked at load)
        p = float(probs[label])
        return p, f"P(label {label}) = {p:.3f}"


class JudgeGuardian(_TorchGuardian):
    auto_class = "AutoModelForCausalLM"

    def __init__(self, spec: GuardianSpec) -> None:
        super().__init__(spec)
        self.safe = self.tokenizer(spec.safe_word, add_special_tokens=False)["input_ids"]
        self.unsafe = self.tokenizer(spec.unsafe_word, add_special_tokens=False)["input_ids"]
        if not self.safe or not self.unsafe or self.safe == self.unsafe:
            raise ValueError(f"guardians.models[{spec.name}]: safe_word and unsafe_word must tokenize to "
                             "different, non-empty token sequences")

    def score(self, text: str) -> tuple[float, str]:
        torch = self.torch
        budget = self.spec.max_input_tokens
        prompt = self.tokenizer(self.spec.prompt_template.format(text=text), add_special_tokens=False)["input_ids"]
        prompt = prompt[-budget:]
        logp = []
        with torch.inference_mode():
            for word in (self.safe, self.unsafe):  # log P(word | prompt), token by token
                ids = torch.tensor([prompt + word], device=self.spec.device)
                out = torch.log_softmax(self.model(input_ids=ids).logits[0].float(), dim=-1)
                n = len(prompt)
                logp.append(sum(float(out[n - 1 + i, t]) for i, t in enumerate(word)))
        safe, unsafe = logp
        p = float(torch.sigmoid(torch.tensor(unsafe - safe)))
        return p, f"P(unsafe) = {p:.3f}"  # (the outcome names the guardian, by its declared name)


def load_guardian(spec: GuardianSpec) -> GuardianModel:
    """The checker of a declared guardian (loads its model; call it off the event loop)."""
    if spec.kind == "rules":
        return RuleGuardian(spec)
    if spec.kind == "classifier":
        return ClassifierGuardian(spec)
    if spec.kind == "causal-lm":
        return JudgeGuardian(spec)
    raise ValueError(f"guardians.models[{spec.name}]: kind {spec.kind!r} runs only in the simulator; live "
                     "guardians are rules, classifier or causal-lm")
