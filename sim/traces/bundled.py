"""Traces shipped inside the package (under sim/data), so tests and demos run offline."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

BUNDLED_TRACES: dict[str, str] = {
    # name -> path under sim/data; credit and license next to each file
    "azure_code": "azure_llm_2023/AzureLLMInferenceTrace_code.csv",
}


def bundled_trace_path(name: str = "azure_code") -> Path:
    """Filesystem path of a bundled trace (see sim/data/*/README.md for source and license)."""
    rel = BUNDLED_TRACES.get(name)
    if rel is None:
        raise ValueError(f"unknown bundled trace {name!r}; valid names: {', '.join(sorted(BUNDLED_TRACES))}")
    res = resources.files("sim").joinpath("data", *rel.split("/"))
    path = res if isinstance(res, Path) else Path(__file__).resolve().parent.parent / "data" / rel
    if not path.is_file():
        raise FileNotFoundError(f"bundled trace {name!r} is missing: {path}")
    return path


#: How a bundled trace is named instead of its path (``bundled:azure_code``), as the command line takes it.
BUNDLED = "bundled:"


def bundled_trace(trace: Any) -> Any:
    """``trace``, or where it is a bundled trace's name (``bundled:NAME``) that trace's file
    (`bundled_trace_path`; an unknown name is a ``ValueError`` naming the bundled ones)."""
    if isinstance(trace, (str, os.PathLike)) and isinstance(text := os.fspath(trace), str) \
            and text.startswith(BUNDLED):
        return bundled_trace_path(text[len(BUNDLED):])
    return trace


def bundled_default_config_path() -> Path:
    """The run config `controlplane sim replay` uses with neither --config nor a trace: the bundled trace
    on a Vidur-profiled model with the SLO planner and cold starts (sim/data/default_replay.yaml)."""
    res = resources.files("sim").joinpath("data", "default_replay.yaml")
    path = res if isinstance(res, Path) else Path(__file__).resolve().parent.parent / "data" / "default_replay.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"the bundled default run config is missing: {path}")
    return path
