"""Errors users see: each says what is wrong and where (config key, plugin, file/line), and the
one wording of the hint naming what a misspelt name was probably meant as (`did_you_mean`)."""

from __future__ import annotations

from collections.abc import Iterable


class ControlPlaneError(Exception):
    """Base class of the project's errors."""


class ConfigError(ControlPlaneError, ValueError):
    """Invalid configuration; the message names the key."""


class SettingsError(ConfigError):
    """A plugin's settings failed its ``Settings`` validation; ``problems`` holds each bad key's
    ``(dotted key under plugins.settings.<plugin>, message)`` for callers that say where the value
    came from (a sweep spec)."""

    def __init__(self, message: str, problems: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems


class PluginError(ControlPlaneError):
    """A plugin could not be found, loaded or registered."""


class ReplayInterrupted(KeyboardInterrupt):
    """Ctrl-C during a replay, simulated (`sim.replay.replay`) or live (`controlplane live-replay`).
    The run was closed as ``interrupted`` with the rows written until then; ``run_id`` names it
    (None when it had not started) and ``num_arrived`` counts the requests that had arrived;
    ``db_url`` is the database it is stored in (for the hint that follows it). ``summary``: the
    run's summary where the replay stopped cleanly (a simulated run stops at its next tick, its
    requests in flight recorded as such), else None."""

    def __init__(self, run_id: int | None, num_arrived: int, db_url: str | None = None,
                 summary: dict | None = None) -> None:
        if run_id is not None:
            text = f"replay interrupted (run {run_id}), after {num_arrived:,} requests arrived"
        elif num_arrived:  # (a run not recorded: record=False, a benchmark's simulations)
            text = f"replay interrupted (not recorded), after {num_arrived:,} requests arrived"
        else:
            text = "replay interrupted before the run started"
        super().__init__(text)
        self.run_id = run_id
        self.num_arrived = num_arrived
        self.db_url = db_url
        self.summary = summary


def did_you_mean(name: str, choices: Iterable[str], *, cutoff: float = 0.6, ignore_case: bool = False) -> str:
    """``" (did you mean 'a' or 'b'?)"``: the ``choices`` that ``name`` (a key, plugin, hook, setting,
    field...) is probably a typo of, up to three, closest first; ``""`` when none is close. The
    caller's message says what was wrong and where, and lists the valid choices where it helps.
    ``ignore_case``: compared in lower case (``l40`` is close to ``L40S``), named as given."""
    import difflib  # only when a message is made: every process imports this module

    if ignore_case:
        given = {c.lower(): c for c in sorted(set(choices))}
        close = [given[c] for c in difflib.get_close_matches(name.lower(), sorted(given), n=3, cutoff=cutoff)]
    else:
        close = difflib.get_close_matches(name, sorted(set(choices)), n=3, cutoff=cutoff)
    return f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
