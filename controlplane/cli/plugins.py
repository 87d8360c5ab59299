"""`controlplane plugins ...`: what is installed."""

from __future__ import annotations

import typer
from rich.table import Table

from controlplane.cli.common import out, user_errors

app = typer.Typer(help="Installed plugins.", no_args_is_help=True)


@app.command("list")
def list_() -> None:
    """List installed plugins: name, distribution, version, hooks and whether enabled by default."""
    from controlplane.config import DEFAULT_PLUGINS
    from controlplane.plugin_manager import discover_plugins

    with user_errors():
        found = discover_plugins(refresh=True)
    t = Table(header_style="bold")
    for col in ("name", "distribution", "version", "hooks", "default", "description"):
        t.add_column(col)
    for name in sorted(found):
        p = found[name]
        t.add_row(name, p.dist or "-", p.version or "-", ", ".join(p.hooks), "yes" if name in DEFAULT_PLUGINS else "",
                  p.doc)
    out.print(t)
