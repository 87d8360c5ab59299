"""The seeds a search replays under: one that chooses the candidates, others that confirm the winner.

The screen, the rungs and the full trace run under ``search.select_seed`` (default 0); the winner and its
neighbours are confirmed by full replays under ``search.confirm_seeds`` (default 1, 2, 3). The seed that chose a
candidate favoured it by its luck (the cheapest candidate that happened to meet the target on it: the winner's
curse), so it is kept out of the confirmation by default; a spec that names it among its ``confirm_seeds`` is
followed, that seed's full-trace run reused, and told (`reused_seed_note`). An empty ``confirm_seeds`` confirms
on the selection seed alone (no independent confirmation), and is told the same way. A spec's ``seeds`` are a
sweep's: a search never replays under them (`unused_seeds_note`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sim.sweep.spec import LoadedSpec

__all__ = ["confirm_seeds", "reused_seed_note", "search_seeds", "select_seed", "unused_seeds_note"]


def select_seed(loaded: LoadedSpec) -> int:
    """The seed of the screen, the rungs and the full trace: ``search.select_seed``."""
    return loaded.spec.search.select_seed


def confirm_seeds(loaded: LoadedSpec) -> list[int]:
    """The seeds of the confirmation: ``search.confirm_seeds`` (each once); empty, the selection seed alone."""
    return list(dict.fromkeys(loaded.spec.search.confirm_seeds)) or [select_seed(loaded)]


def search_seeds(loaded: LoadedSpec) -> list[int]:
    """Every seed a search replays under: the selection seed, then the confirmation's others."""
    return list(dict.fromkeys([select_seed(loaded), *confirm_seeds(loaded)]))


def reused_seed_note(loaded: LoadedSpec) -> str | None:
    """A note when the selection seed confirms too (it is among ``confirm_seeds``, or they are empty); None else."""
    seed = select_seed(loaded)
    confirm = confirm_seeds(loaded)
    if seed not in confirm:
        return None
    others = [s for s in confirm if s != seed]
    where = "search.confirm_seeds being empty" if not loaded.spec.search.confirm_seeds else "search.confirm_seeds"
    return (f"seed {seed} both chose the candidates (search.select_seed) and confirms them ({where}): a winner's "
            f"attainment under it is the one it was picked for, biased upward (the winner's curse), so its confirmation "
            + (f"is independent of its choice only on seeds {others}" if others else "is not independent of its choice")
            + f"; list confirm_seeds without {seed} (by default 1, 2, 3) to confirm on seeds that did not choose")


def unused_seeds_note(loaded: LoadedSpec) -> str | None:
    """A note when the spec sets ``seeds`` that are not the ones the search replays under (None otherwise)."""
    spec = loaded.spec
    used = search_seeds(loaded)
    if "seeds" not in spec.model_fields_set or list(spec.seeds) == used:
        return None

    def how(key: str) -> str:
        return f"search.{key}" + ("" if key in spec.search.model_fields_set else ", by default")

    return (f"the spec's seeds {list(spec.seeds)} are a sweep's: this search chooses under seed {select_seed(loaded)} "
            f"({how('select_seed')}) and confirms under seeds {confirm_seeds(loaded)} ({how('confirm_seeds')})")
