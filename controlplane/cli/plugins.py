"""`controlplane plugins ...`: what is installed."""

from __future__ import annotations

import typer
from rich.table import Table

from controlplane.cli.common import console, out, user_errors

app = typer.Typer(help="Installed plugins.", no_args_is_help=True)


@app.command("list")
def list_() -> None:
    """List installed plugins: name, distribution, version, hooks and whether enabled by default.

    A plugin that cannot be loaded (its module fails to import, its entry point is named unlike it) is listed as such, its error is printed on stderr, and the command exits with status 2.
    """
    from controlplane.config import DEFAULT_PLUGINS
    from controlplane.errors import PluginError
    from controlplane.plugin_manager import discover_plugins

    with user_errors():
        found = discover_plugins(refresh=True)
    t = Table(header_style="bold")
    t.add_column("name", no_wrap=True)  # what a config lists: never cut, even in a narrow terminal
    for col in ("distribution", "version", "hooks", "default", "description"):
        t.add_column(col)
    broken: list[str] = []
    for name in sorted(found):
        p = found[name]
        try:
            hooks, doc = ", ".join(p.hooks), p.doc
        except PluginError as exc:
            broken.append(str(exc))
            hooks, doc = "-", "failed to load (error below)"
        t.add_row(name, p.dist or "-", p.version or "-", hooks, "yes" if name in DEFAULT_PLUGINS else "", doc)
    out.print(t)
    for message in broken:
        console("err").print(f"[bold red]error:[/] {message}", markup=True, highlight=False)
    if broken:
        raise typer.Exit(2)
