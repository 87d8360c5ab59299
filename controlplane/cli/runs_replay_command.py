"""`controlplane runs config RUN`'s header: the trace the run replayed, how it read it, and the command line that
replays it again with the config printed below it.

The YAML a run's config is printed as holds neither its trace nor how the trace was read (its transforms,
``--limit 10``, and its format options, ``--opt``): the run row keeps those beside it (``trace``, ``trace_format``,
``config["trace_read"]``), so ``--config run1.yaml`` alone replays the whole bundled trace. The header says them
as YAML comments, and the ``controlplane sim replay ...`` (``live-replay`` for a live run) command line, shell-quoted,
that replays the same requests with that config.

Every command the header prints names the database the run is in (``--db``, shell-quoted, its password as ``***``),
the default one too: copied into a shell whose ``$CONTROLPLANE_STORAGE__URL`` (or folder) differs, a command
without it would read (or store beside) another database's run of the same number, silently.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path, PurePath
from typing import Any

__all__ = ["TRANSFORM_OPTIONS", "config_command", "replay_command", "replay_header", "without_storage_url"]

#: Each stored transform (`sim.replay.TraceTransforms`' fields, as ``trace_read["transforms"]`` keeps them) and the
#: `controlplane sim replay` option that sets it, in that command's order.
TRANSFORM_OPTIONS = {
    "window_start_s": "--window-start", "window_end_s": "--window-end", "speed_up": "--speed-up",
    "repeat": "--repeat", "rate_scale": "--rate-scale", "rate_profile": "--rate-profile", "copies": "--copies",
    "limit": "--limit", "prompt_scale": "--prompt-scale", "output_scale": "--output-scale",
    "max_prompt_tokens": "--max-prompt-tokens", "max_output_tokens": "--max-output-tokens",
}


def config_command(run_id: int, db_url: str) -> str:
    """The shell-quoted `controlplane runs config RUN --db URL` that prints run ``run_id`` of ``db_url``."""
    return shlex.join(["controlplane", "runs", "config", str(run_id), *_db_words(db_url)])


def replay_header(run: dict[str, Any], config_file: str, db_url: str) -> list[str]:
    """The comment lines (each starting ``#``) that `runs config` prints above the run's config: the trace and its
    format, how the run read it, and the command line replaying it with the config saved as ``config_file``; the
    run is stored in ``db_url``, which each command names."""
    from controlplane.cli.runs_notes import transforms_unknown

    trace = run.get("trace")
    if not trace:  # (a daemon's run: its clients' requests; a replay of requests given in code)
        saved = f"run{run.get('id', 'N')}.csv"
        whose = "a daemon's run: its clients' requests" if run.get("mode") == "live" else "requests given in code"
        return [f"# trace: none stored ({whose}, not a file); to replay its requests in the simulator, with",
                f"# this config saved as {config_file}, write them as a trace first:",
                "#   " + shlex.join(["controlplane", "runs", "export", str(run.get("id", "N")), *_db_words(db_url),
                                     "--what", "trace", "-o", saved]),
                "#   " + shlex.join(["controlplane", "sim", "replay", saved, "--format", "canonical", "--config",
                                     config_file, *_db_words(db_url)]),
                *_password_note(db_url)]
    read = (run.get("config") or {}).get("trace_read") or {}
    fmt = run.get("trace_format")
    about = "; ".join(([f"format {fmt}"] if fmt else []) + ([where] if (where := _where(trace)) else []))
    lines = [f"# trace: {trace}" + (f" ({about})" if about else "")]
    said = [f"{key}={_option_value(value)}" for key, value in {**(read.get("transforms") or {}),
                                                               **(read.get("options") or {})}.items()]
    if transforms_unknown(run):
        lines.append("# trace read: not stored (this run's release did not store its transforms and format options: "
                     "the command below reads the whole trace)")
    else:
        lines.append("# trace read: " + ("; ".join(said) if said else "the whole trace, as it is"))
    seed = (read.get("transforms") or {}).get("seed")
    if seed is not None and seed != (run.get("config") or {}).get("seed"):
        lines.append(f"# note: the trace's random streams were seeded with {seed} (TraceTransforms.seed), which no "
                     "option sets: the command below seeds them with the config's seed")
    lines.append(f"# to replay it again, with this config saved as {config_file}:")
    lines.append("#   " + replay_command(run, config_file, db_url))
    return [*lines, *_password_note(db_url)]


def without_storage_url(config: dict[str, Any], run_id: int) -> list[str]:
    """Take ``storage.url`` out of ``config`` (a run config as `runs config` prints it), and return the comment lines
    saying so: a replay with the YAML would store its run in the database the run was read from (a CI job's
    artifact, a colleague's database), not in ``--db``'s or the default one, as a config without it does."""
    url = (config.get("storage") or {}).pop("url", None)
    if url is None:
        return []
    return [f"# storage.url is left out (run {run_id} ran with {url}): a replay with this config stores its run",
            f"# in --db's database (the command above names run {run_id}'s), else $CONTROLPLANE_STORAGE__URL's, else",
            "# sqlite:///controlplane.db; add storage: {url: ...} to choose one"]


def replay_command(run: dict[str, Any], config_file: str, db_url: str) -> str:
    """The shell-quoted command line that replays ``run``'s trace as the run read it, with its config saved as
    ``config_file``, storing its run beside ``run`` in ``db_url``: `controlplane sim replay`, or
    `controlplane live-replay` for a live run."""
    read = (run.get("config") or {}).get("trace_read") or {}
    words = ["controlplane", "live-replay"] if run.get("mode") == "live" else ["controlplane", "sim", "replay"]
    words.append(_trace_argument(str(run["trace"])))
    if run.get("trace_format"):
        words += ["--format", str(run["trace_format"])]
    transforms = read.get("transforms") or {}
    for key, option in TRANSFORM_OPTIONS.items():
        if transforms.get(key) is not None:
            words += [option, _option_value(transforms[key])]
    for key, value in (read.get("options") or {}).items():  # (as --opt takes them: text as is, else JSON)
        words += ["--opt", f"{key}={_option_value(value)}"]
    words += ["--config", config_file, *_db_words(db_url)]
    return shlex.join(words)


def _db_words(db_url: str) -> list[str]:
    """``--db URL``: the database a printed command reads the run from (or stores its replay in), its password
    shown as ``***`` (as the run's row keeps its config's URLs)."""
    from controlplane.storage.errors import mask_password

    return ["--db", mask_password(db_url)]


def _password_note(db_url: str) -> list[str]:
    """The line saying the commands' ``--db`` shows its password as ``***`` (none where it has no password)."""
    from controlplane.storage.errors import mask_password

    if mask_password(db_url) == db_url:
        return []
    return ["# (--db's password is shown as ***: put yours back)"]


def _trace_argument(trace: str) -> str:
    """The trace as the command line names it: a bundled trace's file by its name (``bundled:azure_code``, wherever
    the package is installed), a name starting with ``-`` as ``./-...`` (not an option)."""
    from sim.traces.bundled import BUNDLED, BUNDLED_TRACES

    parts = PurePath(trace).parts
    for name, rel in BUNDLED_TRACES.items():
        tail = ("sim", "data", *rel.split("/"))
        if parts[-len(tail):] == tail:
            return BUNDLED + name
    return "./" + trace if trace.startswith("-") else trace


def _where(trace: str) -> str:
    """What the trace line says of a file not where its name says ('' else): a name stored as typed (by a release
    before replays stored the absolute path) is relative to the folder the run was started from."""
    if _trace_argument(trace).startswith("bundled:"):
        return ""
    if not Path(trace).is_absolute():
        return "as typed: relative to the folder the run was started from"
    return "" if Path(trace).exists() else "no such file here"


def _option_value(value: object) -> str:
    """A stored value as its option takes it back: ``2`` for 2.0, every digit of another float, text as is,
    anything else as JSON (``true``, ``["GPT-4"]``)."""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        return value
    return json.dumps(value)
