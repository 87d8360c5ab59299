"""Ctrl-C during ``benchmarks/fidelity.py``: a clean stop that says what was finished.

A first Ctrl-C in a simulated replay stops it at its next tick (`sim.interrupts`) and raises
`ReplayInterrupted`; one in a live run cancels it and closes its worker; one anywhere else raises
KeyboardInterrupt. `stopped` is what the benchmark's main does with any of them: one message on
stderr instead of a traceback, the JSON line with what the protocol had finished (`finished_so_far`:
``interrupted: true``, the step it was in, the grid and frozen profiles, the calibration runs, every
finished round and sweep point, and the one being run marked ``partial``), the benchmark's temporary
folder removed unless ``--keep-temp``, and the exit status `EXIT_STATUS` (130, a shell's for SIGINT).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from rich.console import Console

#: The exit status of a run stopped by Ctrl-C (128 + SIGINT, as a shell reports a process SIGINT ended).
EXIT_STATUS = 130


def finished_so_far(proto: Any, args: Any) -> dict[str, Any]:
    """The JSON line of an interrupted run: what ``proto`` (`protocol.Protocol`, None before it was made or
    for ``--protocol in-sample``) had finished. A round or sweep point cut short is listed with
    ``partial: true`` and no figures; ``rounds`` counts the finished ones."""
    out: dict[str, Any] = {"protocol": args.protocol, "interrupted": True, "interrupted_during": None,
                           "smoke_run": bool(getattr(args, "quick", False))}
    if proto is None:
        return out
    from fidelity_lib.protocol import sha256
    from fidelity_lib.protocol_report import round_row, sweep_row

    rounds = [round_row(r) for r in proto.rounds]
    sweep = [sweep_row(p, proto.slo) for p in proto.sweep]
    if proto.in_progress is not None:
        (rounds if "round" in proto.in_progress else sweep).append(dict(proto.in_progress))
    frozen = proto.frozen if proto.frozen is not None and Path(proto.frozen).is_file() else None
    out.update({
        "interrupted_during": proto.stage,
        "grid_profile": str(proto.grid_path) if proto.grid_path is not None else None,
        "calibration_repeat_runs": [list(ids) for ids in proto.cal_all_ids],
        "calibration_runs": list(proto.cal_ids),
        "profile": str(frozen) if frozen is not None else None,
        "profile_sha256": proto.digest or (sha256(frozen) if frozen is not None else None),
        "rounds": len(proto.rounds),
        "rounds_planned": proto.rounds_planned,
        "round_detail": rounds,
        "capacity_sweep": sweep,
        "wall_s": round(time.monotonic() - proto.t0, 1),
    })
    return out


def stopped(args: Any, proto: Any, workdir: Path, err: Console) -> dict[str, Any]:
    """After Ctrl-C: `finished_so_far`, the temporary folder ``workdir`` removed (kept with ``--keep-temp``; the
    paths in it the JSON names are then null), and what happened said on ``err`` in a few lines."""
    out = finished_so_far(proto, args)
    keep = bool(getattr(args, "keep_temp", False))
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    for key in ("grid_profile", "profile"):
        if out.get(key) is not None and not Path(out[key]).exists():
            out[key] = None
    out["workdir"] = str(workdir) if keep else None
    out["db"] = args.db or (f"sqlite:///{workdir}/fidelity.db" if keep else None)

    during = f" during {out['interrupted_during']}" if out["interrupted_during"] else ""
    lines = [f"interrupted (Ctrl-C){during}: stopped; the JSON line below has what was finished"]
    if out.get("profile_sha256"):
        where = (out["profile"] if out["profile"] is not None else
                 "removed with the temporary folder (--profile-out PATH or --keep-temp keeps it)")
        lines.append(f"frozen profile sha256 {out['profile_sha256']}: {where}")
    elif proto is not None:
        lines.append("the calibration had not finished: no frozen profile")
    else:
        lines.append("nothing was finished that the JSON line could report")
    if proto is not None and out["rounds_planned"] is not None:
        points = [d for d in out["capacity_sweep"] if not d.get("partial")]
        partial = any(d.get("partial") for d in out["round_detail"] + out["capacity_sweep"])
        lines.append(f"{out['rounds']} of {out['rounds_planned']} rounds and {len(points)} sweep point(s) finished"
                     + ("; the one cut short is marked partial, without figures" if partial else ""))
    lines.append(f"temporary folder kept: {workdir}" if keep else
                 f"temporary folder {workdir} removed" + (" with the runs' database (--db keeps them)"
                                                           if args.db is None else ""))
    if args.db is not None:
        lines.append(f"the runs so far are in {args.db}")
    for line in lines:
        err.print(line, highlight=False, markup=False, soft_wrap=True)
    return out
