"""JSON encoding shared by the JSON columns and the spill files.

Plugins put whatever they like into decision payloads and summaries: numpy
scalars, sets, paths, enums, dataclasses, pydantic models, NaN for an empty
percentile. The stdlib encoder rejects some of these and PostgreSQL's
``json`` type rejects ``NaN``, so the encoder turns them into plain JSON
rather than let one payload fail a run's recording.
"""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import date, datetime
from enum import Enum
from pathlib import PurePath
from typing import Any


def encode_default(obj: Any) -> Any:
    """``json.dumps`` ``default=`` hook for values plugins commonly produce."""
    if isinstance(obj, (datetime, date)):
        return obj.isoformat()
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    if hasattr(obj, "tolist"):  # numpy arrays and scalars
        return obj.tolist()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if hasattr(obj, "model_dump"):  # pydantic models
        return obj.model_dump(mode="json")
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


try:
    import orjson
except ImportError:  # pragma: no cover - orjson is a dependency; stay correct without it
    orjson = None

_ORJSON_OPTIONS = (orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS) if orjson else 0


def dumps(obj: Any) -> str:
    """Encode ``obj`` as strict JSON, mapping NaN/inf to ``null`` (orjson when installed: ~5x faster)."""
    if orjson is not None:
        try:
            return orjson.dumps(obj, default=encode_default, option=_ORJSON_OPTIONS).decode()
        except TypeError:
            pass  # e.g. integers beyond 64 bits: the stdlib path below handles them
    try:
        return json.dumps(obj, allow_nan=False, default=encode_default)
    except ValueError:
        return json.dumps(_finite(json.loads(json.dumps(obj, default=encode_default))), allow_nan=False)
