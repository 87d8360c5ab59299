"""What a replay records of its trace's read (how it was read, the rows left out) and what it does when the trace
fails mid-replay: a bad row, a cut-off compressed file, found once requests were replayed.

Such a failure ends the run as a first Ctrl-C (or SIGTERM) does: the trace stops there, the run stops at its next
tick (`SimDriver.stop_requested`), the requests in the system are recorded in flight and the others whole, and the
run is closed with status ``failed``, its summary counting them beside the error (`close_failed`). The error is then
raised again with the run named on it (``failed_run_id``, ``summary``, ``num_arrived``, ``db_url``), for
`controlplane sim replay` to say where the requests replayed before it are (`failed_note`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict
import logging
from typing import Any

from sim.latency.measured_box import past_profile_lines, past_profile_summary
from sim.traces import TraceReader, TraceRequest, format_rate_profile

__all__ = ["BAD_ROWS_KEPT", "BAD_ROWS_SKIPPED", "TraceStop", "context_limits", "failed_note", "rows_left_out",
           "trace_read"]

log = logging.getLogger("sim.replay")

#: The reason under which a run summary counts the bad rows ``on_error="skip"`` skipped.
BAD_ROWS_SKIPPED = "bad rows skipped"
#: How many of the skipped rows' errors a run summary keeps (``trace_bad_rows``): the first few, to say why.
BAD_ROWS_KEPT = 3


def trace_read(transforms: Any, options: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """How a replay read its trace, as its run row stores it (``config["trace_read"]``): the
    transforms that were set (a rate profile as ``--rate-profile`` takes it, ``"0:1,14400:2"``)
    and the format options; None when neither was."""
    read: dict[str, Any] = {}
    if edits := {k: format_rate_profile(v) if k == "rate_profile" else v
                 for k, v in asdict(transforms).items() if v is not None}:
        read["transforms"] = edits
    if options:
        read["options"] = {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}
    return read or None


def rows_left_out(reader: TraceReader | None) -> dict[str, Any]:
    """A run summary's ``trace_rows_left_out``: the trace rows left out of ``reader``'s read so far,
    by reason: those its format options left out (``TraceReader.dropped``, e.g. BurstGPT's failed
    requests) and the bad rows ``on_error="skip"`` skipped (``BAD_ROWS_SKIPPED``, with the first
    errors, each naming its file, line and field, as ``trace_bad_rows``); empty when none."""
    if reader is None:
        return {}
    left_out = dict(reader.dropped)
    if reader.skipped:
        left_out[BAD_ROWS_SKIPPED] = reader.skipped
    if not left_out:
        return {}
    out: dict[str, Any] = {"trace_rows_left_out": left_out}
    if reader.skipped:
        out["trace_bad_rows"] = [str(error) for error in reader.errors[:BAD_ROWS_KEPT]]
    return out


def context_limits(config: Any, models: Mapping[str, Any]) -> dict[str | None, tuple[str, int]]:
    """What `TraceStop` checks each request against: by the model a request names (None: the first deployment, which
    the core gives it), the deployment and its latency model's context window (``max_context``, tokens), for the
    deployments without a ``max_model_len`` (with one, the core refuses a longer request as ``too_long``)."""
    out: dict[str | None, tuple[str, int]] = {}
    for i, d in enumerate(config.cluster.models):
        context = getattr(models.get(d.name), "max_context", None)
        if d.max_model_len is None and isinstance(context, int) and context > 0:
            out[d.name] = (d.name, context)
            if i == 0:
                out[None] = out[d.name]
    return out


class TraceStop:
    """A replay's stream of requests that ends where reading it raises (a bad row, a truncated file), keeping the
    error (`error`) and asking the driver to stop at its next tick, as a first Ctrl-C does: the requests replayed
    before it are recorded, those still in the system in flight. On the way it counts the requests longer (prompt +
    output tokens) than their deployment's model's context window (``limits``, `context_limits`), which the latency
    model prices all the same (`past_context`, `warn_past_context`)."""

    __slots__ = ("driver", "error", "limits", "past_context")

    def __init__(self, driver: Any, limits: Mapping[str | None, tuple[str, int]] | None = None) -> None:
        self.driver = driver
        self.error: Exception | None = None
        self.limits = dict(limits or {})
        self.past_context: dict[str, int] = {}  # deployment -> requests longer than its model's context window

    def stream(self, requests: Iterable[TraceRequest]) -> Iterator[TraceRequest]:
        try:
            if not self.limits:
                yield from requests
                return
            contexts = {model: context for model, (_, context) in self.limits.items()}
            past = self.past_context
            for r in requests:
                context = contexts.get(r.model)
                if context is not None and r.prompt_tokens + r.output_tokens > context:
                    name = self.limits[r.model][0]
                    past[name] = past.get(name, 0) + 1
                yield r
        except Exception as exc:  # noqa: BLE001 - the trace's error, whatever it is: raised again once the run is stored
            self.error = exc
            self.driver.stop_requested = True

    def summary(self) -> dict[str, Any]:
        """What the run's summary says of the requests past their model's context (``requests_past_context``, by
        deployment); empty when none was."""
        return {**({"requests_past_context": dict(self.past_context)} if self.past_context else {}),
                **past_profile_summary(getattr(self.driver, "latency", {}))}  # (a measured profile's box)

    def warn_past_context(self, config: Any) -> None:
        """One warning line per deployment that was sent requests longer than its model's context window."""
        latency = {d.name: d.latency_model for d in config.cluster.models}
        for name, count in self.past_context.items():
            context = self.limits[name][1]
            log.warning("%s request%s longer (prompt + output tokens) than the %s-token context window of the "
                        "model of deployment %r: latency model %r prices %s all the same, past what the model "
                        "serves, unless refused for another reason (one whose KV cache outgrows the worker's "
                        "memory is: the summary's reject_reasons counts those); set that deployment's max_model_len: %s (cluster.models[].max_model_len) to refuse "
                        "such requests as too_long, or cut them with --max-prompt-tokens / --max-output-tokens",
                        f"{count:,}", " was" if count == 1 else "s were", f"{context:,}", name, latency.get(name),
                        "it" if count == 1 else "them", context)
        for line in past_profile_lines(getattr(self.driver, "latency", {})):  # (iterations past a measured profile)
            log.warning("%s", line)

    def close_failed(self, session: Any, finished: Any, reader: TraceReader | None, db_url: str | None) -> None:
        """Close the run as ``failed`` with the summary of what it replayed (``finished``, the driver's), the error
        and the simulated second it stopped at (``failed_at_s``); then name the run on the error (``failed_run_id``,
        ``summary``, ``num_arrived``, ``db_url``: `controlplane sim replay` says where its rows are)."""
        error = self.error
        assert error is not None
        extra = {**self.summary(), "error": f"{type(error).__name__}: {error}",
                 "failed_at_s": round(session.clock.now_s, 6)}
        summary = session.close({**finished, **rows_left_out(reader), **extra} if isinstance(finished, dict)
                                else extra, status="failed")
        error.failed_run_id = session.run_id  # type: ignore[attr-defined]
        error.summary = summary  # type: ignore[attr-defined]
        error.num_arrived = self.driver.num_arrived  # type: ignore[attr-defined]
        error.db_url = db_url  # type: ignore[attr-defined]


def failed_note(error: BaseException, see: str) -> str | None:
    """What a replay whose trace failed mid-replay (`TraceStop.close_failed`) stored, in words, ending with ``see``
    (the command that shows it); None for an error that stored no run."""
    run_id, summary = getattr(error, "failed_run_id", None), getattr(error, "summary", None) or {}
    if run_id is None:
        return None
    arrived = getattr(error, "num_arrived", 0)
    return (f"the trace failed at simulated second {summary.get('failed_at_s', 0):g}: run {run_id} is stored with "
            f"status 'failed' and the {arrived:,} request{'' if arrived == 1 else 's'} that arrived before the error, "
            f"{summary.get('num_completed', 0):,} completed and {summary.get('num_in_flight', 0):,} recorded in flight "
            f"(as at a Ctrl-C), counted in its summary ({see}); the error:")
