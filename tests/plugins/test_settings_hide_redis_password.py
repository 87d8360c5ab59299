"""A settings error's text never shows a Redis URL's password: pydantic's message put the raw input beside the
validator's masked one (``input_value='redis://u:secret@...'``) for the exact cache, a cache store and a guardian
planner's verdict store."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from plugins.cache_backends import StoreSettings
from plugins.caching import ExactCache
from plugins.guardian_planner import PlannerSettings

BAD = "http://alice:s3cret@cache.internal:6379/0"


@pytest.mark.parametrize("make", [
    lambda: ExactCache.Settings(redis_url=BAD),
    lambda: ExactCache.Settings(redis_url=BAD, capacity=0),
    lambda: StoreSettings(backend="redis", redis_url=BAD),
    lambda: PlannerSettings(store={"backend": "redis", "redis_url": BAD}),
])
def test_a_redis_url_error_shows_no_password(make):
    with pytest.raises(ValidationError) as refused:
        make()
    text = str(refused.value)
    assert "s3cret" not in text and "redis_url" in text and "alice:***@" in text, text
