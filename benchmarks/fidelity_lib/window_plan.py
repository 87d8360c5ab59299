"""How many trace requests each window of the out-of-sample protocol takes, checked before its live runs.

The windows' sizes depend on rates only a live calibration knows: the heavy calibration run is placed by the
light run's calibrated capacity, the slices and the capacity window by the frozen profile's (the generic grid
profile alone is no stand-in: on Mooncake it sized the calibration window 1779 requests where the light run's
calibration gave 711, on the Azure code trace 457 where it gave 725). So each size is checked as soon as it is
known, before the live runs that use it (`check_windows`): before any live run, the light run's requests and
the least each later window takes (`preflight`); before the heavy run, the calibration window; once the profile
is frozen, before any evaluated run, the slices and the capacity window (`slices.carve_windows`). A trace too
short is refused in one line naming the window, how many requests it needs and has (`TraceTooShort`, exit
status 2), not with a traceback after runs its requests could never fill.
"""

from __future__ import annotations

from typing import Any

from fidelity_lib import capacity as cap
from fidelity_lib.slices import TraceTooShort, count_for

__all__ = ["HINTS", "MIN_RUN", "TraceTooShort", "capacity_window", "check_windows", "grown_capacity_window",
           "preflight", "slice_plan"]

#: The options that shrink a window (the refusal names them).
HINTS = {"calibration": "--calibration-s, --calibration-load, --scaling-requests", "low": "--low-s, --low-slices",
         "high": "--high-s, --high-slices", "capacity": "--capacity-s, --capacity-max-fraction"}
#: The fewest requests a run replays (`slices.count_for`): the least a heavy calibration run or a window takes.
MIN_RUN = 4


def check_windows(total: int, sizes: list[tuple[str, int]], *, at: int = 0, least: bool = False) -> None:
    """Refuse (`TraceTooShort`) the first window of ``sizes`` (name, requests; consecutive from request ``at``)
    that the ``total`` requests read from --start-s on cannot fill (``least``: the sizes are lower bounds)."""
    for name, n in sizes:
        has = max(0, total - at)
        where = f"{total} read from --start-s on, the first {at} in the windows before it" if at else "from --start-s on"
        if n > has:
            raise TraceTooShort(
                f"the trace is too short: window {name!r} needs {'at least ' if least else ''}{n} requests, the trace has "
                f"{has} for it ({where}); use a longer trace, an earlier --start-s, or a smaller window "
                f"({HINTS.get(name.split('-')[0], '')})")
        at += n


def slice_plan(args: Any, sim_cap0: float, poisson_cap: float) -> tuple[list[tuple[str, int]], dict[str, str],
                                                                          dict[str, float]]:
    """The evaluated slices in trace order - (name, requests), name -> level, level -> rate - at the load
    levels placed by the simulated capacities (as the trace has it, and as a Poisson process)."""
    a = args
    levels = ["low"] * a.low_slices + ["high"] * a.high_slices
    order = levels[::2] + levels[1::2] if len(levels) > 2 else levels  # interleave low and high in the trace
    rates = {"low": a.low_load * sim_cap0,
             "high": a.high_load * (poisson_cap if a.high_arrivals == "poisson" else sim_cap0)}
    dur = {"low": a.low_s, "high": a.high_s}
    sizes, lv = [], {}
    for i, level in enumerate(order):
        name = f"{level}-{i + 1}"
        sizes.append((name, count_for(rates[level], dur[level])))
        lv[name] = level
    return sizes, lv, rates


def capacity_window(args: Any, reference_rate: float, left: int, min_requests: int) -> tuple[int, int, bool]:
    """(requests the capacity window needs for a sweep run at its cap on ``reference_rate``, what it takes of the
    ``left`` after the slices, whether its sweep runs go round them: `capacity.capacity_window_size`)."""
    need = cap.capacity_window_requests(reference_rate, args.capacity_s, args.capacity_fractions,
                                        args.capacity_max_fraction)
    size, going_round = cap.capacity_window_size(need, left, min_requests)
    return need, size, going_round


def grown_capacity_window(args: Any, sim_cap: float, size: int, left: int, min_requests: int,
                          going_round: bool) -> tuple[int, bool] | None:
    """The capacity window was sized on the Poisson capacity of the calibration window; the simulated capacity on
    the window itself (``sim_cap``) can be higher (a lighter window), and a sweep run at its cap would then want more
    than its ``size`` requests. The (size, going round) it takes instead, from the ``left`` after the slices, or
    None: big enough, already going round, or no more requests to take (the sweep's cap is then what it feeds)."""
    if going_round:
        return None
    _, grown, going = capacity_window(args, sim_cap, left, min_requests)
    return (grown, going) if size < grown <= left else None


def preflight(args: Any, total: int, n_light: int) -> None:
    """Before any live run: refuse (`TraceTooShort`) a trace of ``total`` requests with fewer than the light
    calibration run's ``n_light`` and the least each later window takes (`MIN_RUN`; their real sizes come from
    the calibrations, and each is checked again before its first live run)."""
    slices, _, _ = slice_plan(args, 1.0, 1.0)
    check_windows(total, [("calibration", n_light + MIN_RUN)] + [(name, MIN_RUN) for name, _ in slices]
                  + [("capacity", MIN_RUN)], least=True)
