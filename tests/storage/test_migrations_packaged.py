"""The schema's migrations travel with a wheel: a non-editable install (`pip install controlplane-*.whl`, a CI
image built from a wheel) could open no database ('Alembic migrations not found ...: controlplane must be
installed from a source checkout'). pyproject's data-files install them under <prefix>/share/controlplane."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from controlplane.storage.db import ALEMBIC_DIR, migrations_dir

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_wheel_holds_every_migration_and_the_alembic_config(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("controlplane-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    data = {n.split(".data/data/", 1)[1] for n in names if ".data/data/" in n}
    wanted = {f"share/controlplane/alembic/versions/{p.name}" for p in (ROOT / "alembic" / "versions").glob("*.py")}
    wanted |= {"share/controlplane/alembic/env.py", "share/controlplane/alembic/script.py.mako",
               "share/controlplane/alembic.ini"}
    assert wanted <= data, sorted(wanted - data)


def test_an_install_without_the_checkout_finds_the_installed_migrations(tmp_path, monkeypatch):
    assert migrations_dir() == ALEMBIC_DIR == ROOT / "alembic"  # (a checkout: its own)
    installed = tmp_path / "share" / "controlplane" / "alembic"
    installed.mkdir(parents=True)
    (installed / "env.py").write_text("")
    monkeypatch.setattr(sysconfig, "get_path", lambda name, *a, **k: str(tmp_path) if name == "data" else None)
    assert migrations_dir(tmp_path / "no-checkout" / "alembic") == installed
    (installed / "env.py").unlink()  # neither: the checkout's path, which the error names
    assert migrations_dir(tmp_path / "no-checkout" / "alembic") == tmp_path / "no-checkout" / "alembic"


def test_an_install_with_pip_install_target_finds_the_migrations_beside_its_packages(tmp_path, monkeypatch):
    """`pip install --target DIR` puts the packages and share/ in DIR: the migrations were looked for under the
    environment's prefix alone ('not found ... reinstall'), so PostgreSQL and `db` commands failed."""
    target = tmp_path / "tgt"
    installed = target / "share" / "controlplane" / "alembic"
    installed.mkdir(parents=True)
    (installed / "env.py").write_text("")
    (target / "alembic").mkdir()  # (the Alembic library's own package, beside controlplane: no env.py)
    monkeypatch.setattr(sysconfig, "get_path", lambda name, *a, **k: str(tmp_path / "elsewhere"))
    assert migrations_dir(target / "alembic") == installed
