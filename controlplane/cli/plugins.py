"""`controlplane plugins ...`: what is installed."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from controlplane.cli.common import console, out, user_errors

app = typer.Typer(help="Installed plugins.", no_args_is_help=True)

#: What the two "enabled by" columns mean: two defaults a user meets, which differ (the bundled run config scales
#: with `slo-planner`, the library's default set keeps fixed replicas).
CAPTION = ("default: enabled when a config does not set plugins.enabled (the daemon, load_config(None)); "
           "replay: enabled by the bundled run config sim/data/default_replay.yaml, which `controlplane sim replay` "
           "uses without --config")


def _bundled_replay_plugins() -> list[str]:
    """The plugins the bundled run config enables: what `controlplane sim replay` runs without --config."""
    from controlplane.config_files import read_config_file
    from sim.traces.bundled import bundled_default_config_path

    return list(read_config_file(bundled_default_config_path()).get("plugins", {}).get("enabled", []))


@app.command("list")
def list_() -> None:
    """List installed plugins: name, distribution, version, hooks, whether the library's default config and the
    bundled `sim replay` config enable it, and what it does.

    A plugin that cannot be loaded (its module fails to import, its entry point is named unlike it) is listed as such, its error is printed on stderr, and the command exits with status 2.
    """
    from controlplane.config import DEFAULT_PLUGINS
    from controlplane.errors import PluginError
    from controlplane.plugin_manager import discover_plugins

    with user_errors():
        found = discover_plugins(refresh=True)
        replay = _bundled_replay_plugins()
    t = Table(header_style="bold", caption=CAPTION, caption_justify="left")
    t.add_column("name", no_wrap=True)  # what a config lists: never cut, even in a narrow terminal
    for col in ("distribution", "version", "hooks", "default", "replay", "description"):
        t.add_column(col)
    broken: list[str] = []
    for name in sorted(found):
        p = found[name]
        try:
            hooks, doc = ", ".join(p.hooks), p.doc
        except PluginError as exc:
            broken.append(str(exc))
            hooks, doc = "-", "failed to load (error below)"
        # (cells are text, not rich markup: a description's "within [min, max]" is shown as written)
        t.add_row(*(escape(str(cell)) for cell in (name, p.dist or "-", p.version or "-", hooks,
                                                   "yes" if name in DEFAULT_PLUGINS else "",
                                                   "yes" if name in replay else "", doc)))
    out.print(t)
    for message in broken:
        console("err").print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False)
    if broken:
        raise typer.Exit(2)
