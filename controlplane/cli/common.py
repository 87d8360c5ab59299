"""Helpers the CLI commands share: consoles, error reporting, the database URL."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import typer
from rich.console import Console

from controlplane.errors import ControlPlaneError

out = Console()
err = Console(stderr=True)

DB_OPTION_HELP = "Database URL (default: the config's storage.url, sqlite:///controlplane.db)."


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Show expected errors (bad config, bad trace, missing run) as one clear line, exit 2."""
    try:
        yield
    except (ControlPlaneError, ValueError, LookupError, FileNotFoundError) as exc:
        err.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
        raise typer.Exit(2) from None


def resolve_db(url: str | None) -> str:
    if url:
        return url
    from controlplane.config import load_config

    return load_config().storage.url


def fmt_value(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def write_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
