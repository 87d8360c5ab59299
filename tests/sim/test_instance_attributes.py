"""The replay's hot objects keep their attributes within what CPython 3.11 stores beside an instance.

CPython 3.11 keeps at most 29 attributes of an instance in "inline values" shared with its class; a 30th
gives the instance a dict of its own, and from then on no ``self.method(...)`` call on it is specialized
(~300 instructions more per call, about 1% of a replay for the core: docs/history/simulator.md, the
seventeenth session). Nothing reports crossing it, so this test does: after a replay on the Vidur-profiled
model, each object the event loop calls into holds at most 29 attributes in its ``__dict__`` (slots do not
count).
"""

from __future__ import annotations

import sys

import pytest

from controlplane.config import RunConfig
from sim.replay import TraceTransforms, replay
from sim.traces import bundled_trace_path
from tests.fixtures.common import VIDUR_ANCHOR_CONFIG

INLINE_LIMIT = 29



def _attributes(obj: object) -> int:
    return len(getattr(obj, "__dict__", {}))


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="the limit is CPython 3.11's")
def test_the_event_loops_objects_keep_their_attributes_inline():
    result = replay(bundled_trace_path(), RunConfig.model_validate(VIDUR_ANCHOR_CONFIG), trace_format="azure",
                    transforms=TraceTransforms(limit=200), record=False)
    core = result.session.core
    objects = {"ControlPlane": core, "SimDriver": result.driver, "RunStats": core.stats, "KVCacheManager": core.kv,
               "PolicyCalls": core.calls, "PolicyContext": core.ctx}
    objects.update({f"latency model {type(m).__name__}": m for m in result.driver.latency.values()})
    over = {name: _attributes(obj) for name, obj in objects.items() if _attributes(obj) > INLINE_LIMIT}
    assert not over, f"over {INLINE_LIMIT} attributes beside the instance (give the class __slots__): {over}"
