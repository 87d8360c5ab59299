"""Objects moved out of the cyclic collector's reach on purpose (``gc.freeze``), remembered.

``gc.get_freeze_count()`` walks every frozen object to count them: ~4 ms for the ~70,000 that
the ``controlplane`` command freezes after its imports (a cache miss each; next to nothing in
instructions, most of a percent of a 1,000-request replay's wall time). Code that only needs
to know whether anything is frozen asks `any_frozen`, which does not count what `freeze` froze.
"""

from __future__ import annotations

import gc

__all__ = ["any_frozen", "freeze"]

_frozen = False


def freeze() -> None:
    """``gc.freeze()``, remembered for `any_frozen`."""
    global _frozen
    gc.freeze()
    _frozen = True


def any_frozen() -> bool:
    """Whether this process froze objects: through `freeze` (not counted), else
    ``gc.get_freeze_count() > 0``."""
    return _frozen or gc.get_freeze_count() > 0
