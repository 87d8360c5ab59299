"""The table benchmarks/autoscaling.py prints (a row per run), and its warning when a run's plugins raised: a policy
that raises at every tick is replaced, tick by tick, by the built-in fallback (`fixed-replicas`: the count it
started with), so its row holds the fallback's numbers, not the policy's."""

from __future__ import annotations

#: The table's columns (keys of a run's row) and their headings.
COLS = ("slo_attainment", "slo_after_warmup", "gpu_hours", "gpu_hours_vs_static_peak", "cost_per_1k_requests",
        "scale_events", "oscillations", "reversals", "ttft_p99_s", "peak_replicas", "plugin_errors", "wall_s")
HEADS = ("SLO", "SLO warm", "GPU-h", "vs static", "$/1k req", "scale ev", "oscill", "reversals", "TTFT p99",
         "peak alive", "plugin err", "wall s")


def table_row(name: str, r: dict, cols: tuple[str, ...]) -> str:
    """One row of the table: its numbers (``-`` for none), or for a replay stopped early what it could at most
    reach (a bound from where it stopped, not its attainment: two stopped rows' bounds do not compare)."""
    if r.get("stopped_early"):
        return (f"{name:<24}  not run to the end (stopped early at {r['stopped_at_sim_s']:g} s simulated: "
                f"SLO <= {r['slo_attainment_at_most']}, below --target)")
    return f"{name:<24}" + "".join(f"{'-' if r.get(c) is None else r[c]!s:>11}" for c in cols)


def print_table(results: dict[str, dict], static: dict[int, dict]) -> None:
    """Every policy's row, static_peak's (named by its count) and every static count tried."""
    print(f"{'policy':<24}" + "".join(f"{c:>11}" for c in HEADS))
    for name, r in [*results.items(), *((f"static x{k}", v) for k, v in static.items())]:
        print(table_row(f"static_peak (x{r['replicas']})" if name == "static_peak" else name, r, COLS))
    if any(r.get("stopped_early") for r in static.values()):
        print("(stopped early: a static count's misses already kept it below --target; its bound is the most it "
              "could reach from where it stopped, not its attainment; --no-early-stop replays it whole)")


def plugin_errors_warning(rows: dict[str, dict]) -> str | None:
    """A warning naming each run (``rows``: name -> row) whose plugins raised, with how often and which plugin's
    hook; None when none did. The core isolates each error and the hook's next answerer or its fallback decides
    instead, so such a row measures what decided in the plugin's place."""
    bad = {name: r for name, r in rows.items() if r.get("plugin_errors")}
    if not bad:
        return None
    runs = "; ".join(
        f"{name}: {r['plugin_errors']:,} ("
        + ", ".join(f"{plugin} {hook} {n:,}" for plugin, hooks in (r.get("plugin_error_counts") or {}).items()
                    for hook, n in hooks.items()) + ")"
        for name, r in bad.items())
    return (f"warning: plugin errors in {len(bad)} run(s): {runs}. Each error was caught and the next answer or the "
            "built-in fallback (cp_scale: fixed-replicas, the count it started with) decided instead, so those "
            "rows are not the policy's own numbers; `controlplane sim replay` with the policy enabled records the "
            "errors (`controlplane runs show RUN`)")


def one_replica_note(args) -> str:
    """Said when one static replica reaches --target: no autoscaler can save anything on the trace."""
    return (f"note: static_peak is 1 replica (x1 reaches SLO attainment {args.target}): every autoscaler keeps at "
            "least one, so each can only tie static peak's GPU-hours or spend more; this trace does not tell them "
            "apart. Scale it up to need several replicas: --find-scale N (say 4) prints the --rate-scale at which N "
            "static replicas are needed, and the command to run next.")


if __name__ == "__main__":  # run as a script (its folder first on sys.path): say what to run instead
    from bench_cli import library_module

    raise SystemExit(library_module("autoscaling_report.py", "autoscaling.py [--help]"))
