"""Reader for Alibaba's Qwen-Bailian usage traces (alibaba-edu/qwen-bailian-usagetraces-anon, Apache-2.0).

Released with the paper "KVCache Cache in the Wild" (Alibaba). JSON Lines, one object per request,
as the dataset's description gives it (no file of it has been read here):
`{"chat_id", "parent_chat_id" (-1: none), "timestamp" (s since the trace's start), "input_length",
"output_length", "type" ("text" | "image" | "search" | "file"), "turn", "hash_ids"}`, each hash
id naming one 16-token prefix block.

The keys are Mooncake's plus a few, so the row parsing is Mooncake's (mooncake.py) with the
timestamp in seconds, not milliseconds, and the request id taken from `chat_id`.

`type` is a request category, not the party a request is attributed to, which is what
`TraceRequest.tenant` means here (quotas and fair sharing are per tenant): it becomes the
tenant only with `type_as_tenant=True`, for replays that want per-category quotas or reports.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from ._io import PathLike
from .errors import OnError, TraceFormatError, as_sink
from .gaps import FAR_S, checked_max_gap
from .mooncake import BAILIAN_ID, Layout, read_layout
from .record import TraceRequest

BLOCK_TOKENS = 16
TYPE = "type"


def read_bailian(path: PathLike, *, rng: np.random.Generator | None = None, spread: str = "none",
                 block_tokens: int = BLOCK_TOKENS, type_as_tenant: bool = False, on_error: OnError = "raise",
                 errors: list[TraceFormatError] | None = None, unique_ids: bool = False,
                 max_gap_s: float = FAR_S) -> Iterator[TraceRequest]:
    """Stream a Qwen-Bailian JSONL trace; ids from chat_id, arrival_s in seconds from the first request.
    ``unique_ids``: a row repeating an earlier row's chat_id is a bad row (the ids read are kept). ``max_gap_s``:
    a row more than this after the row before it is an error (`sim.traces.gaps.long_gap`), whatever ``on_error``."""
    if not isinstance(type_as_tenant, bool):
        raise ValueError(f"type_as_tenant must be true or false, got {type_as_tenant!r}")
    layout = Layout(format="bailian", unit="s", id_key=BAILIAN_ID, tenant_key=TYPE if type_as_tenant else None,
                    unique_ids=unique_ids, max_gap_s=checked_max_gap(max_gap_s))
    return read_layout(path, layout, rng, spread, block_tokens, as_sink(on_error, errors))
