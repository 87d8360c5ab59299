"""A package of controlplane's distribution hidden by a user's module of the same name: ``plugins`` and ``sim``
are top-level packages (beside ``controlplane``), so a ``plugins/`` folder or a ``sim.py`` in the working folder
of a script (or on PYTHONPATH) is imported in their place, and a plugin failed to load with "No module named
'plugins.admission'". `shadowing_note` says which file hid which package, for the plugin's load error."""

from __future__ import annotations

import sys
from pathlib import Path

#: Where controlplane's top-level packages lie: site-packages, or the checkout of an editable install.
PACKAGES_ROOT = Path(__file__).resolve().parent.parent


def _top_level(name: str | None) -> str | None:
    return name.partition(".")[0] if name else None


def shadowed_by(package: str) -> Path | None:
    """The file or folder imported as ``package`` where it is not the one controlplane's distribution
    installed beside ``controlplane`` (`PACKAGES_ROOT`); None when it is, when controlplane has no package of
    that name, or when none was imported."""
    ours = PACKAGES_ROOT / package
    module = sys.modules.get(package)
    if module is None or not ours.is_dir():
        return None
    where = getattr(module, "__file__", None) or next(iter(getattr(module, "__path__", None) or ()), None)
    if where is None:
        return None
    where_path = Path(where).resolve()
    return None if where_path.is_relative_to(ours.resolve()) else where_path


def shadowing_note(exc: BaseException, module: str) -> str:
    """Why importing ``module`` (an entry point's, ``plugins.admission``) raised ``exc`` where a package of
    controlplane's is hidden by another of its name (``module``'s own, or the one ``exc`` says is missing):
    ``; the package 'plugins' imported is /home/me/proj/plugins/__init__.py, not controlplane's (...) ...``;
    "" otherwise."""
    names = dict.fromkeys(n for n in (_top_level(module), _top_level(getattr(exc, "name", None))) if n)
    for package in names:
        if (where := shadowed_by(package)) is not None:
            return (f"; the package {package!r} imported is {where}, not controlplane's ({PACKAGES_ROOT / package}): "
                    f"a module or folder named {package!r} in the working folder (or on PYTHONPATH) hides it; "
                    "rename it, or run from another folder")
    return ""
