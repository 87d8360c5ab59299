"""HTTP statuses come from a request's final state and its `ReasonCode`, never from reason text."""

from __future__ import annotations

import pytest

from controlplane.live.http_errors import (
    HTTP_STATUS_BY_CODE,
    InvalidRequest,
    ModelNotFound,
    ServiceUnavailable,
    http_status_for,
)
from controlplane.types import ReasonCode


def test_every_code_has_a_status():
    assert set(HTTP_STATUS_BY_CODE) == set(ReasonCode)


@pytest.mark.parametrize("code, status", [
    (ReasonCode.UNKNOWN_MODEL, 404),
    (ReasonCode.TOO_LONG, 400), (ReasonCode.DOES_NOT_FIT, 400), (ReasonCode.INVALID, 400),
    (ReasonCode.ADMISSION_DENIED, 429), (ReasonCode.QUEUE_FULL, 429), (ReasonCode.RATE_LIMITED, 429),
    (ReasonCode.BLOCKED, 400),
    (ReasonCode.WORKER_FAILED, 503), (ReasonCode.STALLED, 503), (ReasonCode.UNAVAILABLE, 503),
])
def test_codes_map_to_statuses(code, status):
    assert http_status_for("rejected", code) == status
    assert http_status_for("failed", code.value) == status  # the stored string works too


def test_final_states_without_a_code():
    assert http_status_for("completed") == 200
    assert http_status_for("cancelled") == 499
    assert http_status_for("timeout") == 504
    assert http_status_for("failed") == http_status_for("in_flight") == 503
    assert http_status_for("rejected") == 429  # a plugin's refusal that gave no code
    # The reason text never matters: a "too long" rejection without its code is not a 400.
    assert http_status_for("rejected", None) == 429


def test_refusals_before_the_core_carry_codes():
    assert (ModelNotFound("x", param="model").http_status, ModelNotFound("x").code) == (404, ReasonCode.UNKNOWN_MODEL)
    assert InvalidRequest("x").http_status == 400
    assert InvalidRequest("x", code=ReasonCode.TOO_LONG).code is ReasonCode.TOO_LONG
    assert ServiceUnavailable("x").http_status == 503
    assert isinstance(ServiceUnavailable("x"), RuntimeError) and isinstance(ModelNotFound("x"), LookupError)


def _documented(text: str) -> dict[str, int]:
    """code -> status as docs/daemon.md's status table says it (rows ``| 429 | `a`, `b` | ... |``; a
    code's first row: `invalid` is a 413 too, for a body over the limit, refused before any code)."""
    import re

    said: dict[str, int] = {}
    for status, codes in re.findall(r"^\| (\d{3}) \| ([^|]*) \|", text, re.M):
        for code in re.findall(r"`(\w+)`", codes):
            said.setdefault(code, int(status))
    return said


def test_the_docs_list_every_code_with_its_status():
    """docs/daemon.md's status table and docs/architecture.md's list (both left out queue_timeout)."""
    import re
    from pathlib import Path

    docs = Path(__file__).parents[2] / "docs"
    expected = {code.value: status for code, status in HTTP_STATUS_BY_CODE.items()}
    assert _documented((docs / "daemon.md").read_text()) == expected
    text = " ".join((docs / "architecture.md").read_text().split())
    listed = text.split("(`HTTP_STATUS_BY_CODE`):", 1)[1].split("Without a code", 1)[0]
    said = {name.lower(): int(status) for group, status in re.findall(r"((?:`\w+`,? )+)(\d{3})", listed)
            for name in re.findall(r"`(\w+)`", group)}
    assert said == expected
