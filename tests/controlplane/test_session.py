"""`controlplane.session`: what the run row keeps of the run."""

from __future__ import annotations


def test_the_stored_config_hides_the_database_password():
    from controlplane.session import stored_config
    from controlplane.testing import make_config

    config = make_config(storage={"url": "postgresql+psycopg://runs:s3cret@db.internal:5432/runs"})
    stored = stored_config(config)
    assert stored["storage"]["url"] == "postgresql+psycopg://runs:***@db.internal:5432/runs"
    assert "s3cret" not in str(stored) and config.storage.url.endswith(":s3cret@db.internal:5432/runs")
    assert stored_config(make_config(storage={"url": "sqlite:///runs.db"}))["storage"]["url"] == "sqlite:///runs.db"
