"""The library's warnings meant for the command line's user (a class with ``one_line = True``: a measured profile's
rows far from its fit, `sim.latency.measured.FarRowsWarning`), shown as the commands' own ``warning:`` lines,
each text once: as Python shows them they carried a file name and a source line, and a replay showed one twice (its
config check builds the latency models, then its run does). Other warnings are shown as Python shows them."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator

__all__ = ["shown_once"]


@contextlib.contextmanager
def shown_once(warn: Callable[[str], None]) -> Iterator[set[str]]:
    """Within it, each ``one_line`` warning's text goes to ``warn`` (a command's ``warning:`` line) the first time
    it is warned, whatever the warning filters' registries say (a filter changed between two fits shows the same
    warning again); later ones of the same text are not shown. Yields the texts shown."""
    shown: set[str] = set()
    with warnings.catch_warnings():
        previous = warnings.showwarning

        def show(message: Warning | str, category: type[Warning], filename: str, lineno: int, file=None,
                 line=None) -> None:  # noqa: ANN001 (the standard library's signature)
            if not getattr(category, "one_line", False):
                previous(message, category, filename, lineno, file, line)
                return
            text = str(message)
            if text not in shown:
                shown.add(text)
                warn(text)

        warnings.showwarning = show
        yield shown
