"""The `controlplane` command line (typer + rich)."""

from __future__ import annotations

import typer

from controlplane.cli import bench, db, keys, live, plugins, runs, sim

app = typer.Typer(
    name="controlplane",
    help="Simulation-backed control plane for LLM serving clusters: replay traces through pluggable "
    "policies, compare runs, serve live.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(sim.app, name="sim")
app.add_typer(runs.app, name="runs")
app.add_typer(plugins.app, name="plugins")
app.add_typer(db.app, name="db")
app.add_typer(keys.app, name="keys")
app.add_typer(live.app)  # the top-level `controlplane daemon` command
app.add_typer(bench.bench_app, name="bench")  # controlplane bench quant
app.command("profile")(bench.profile)
app.command("calibrate")(bench.calibrate)


def main() -> None:
    from controlplane import timings

    timings.mark("main")
    app()
