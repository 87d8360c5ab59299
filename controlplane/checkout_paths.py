"""Paths the README and docs give relative to the source repository (``examples/cluster.yaml``,
``sim/data/default_replay.yaml``): from another folder, or in an install from a wheel, they are not found, and a
bare "config file not found: examples/cluster.yaml" did not say why. `missing_path_note` says where the file is:
``examples/`` and ``benchmarks/`` ship with the source repository only; ``sim/data/`` is installed with the
package (the bundled run config, the bundled traces)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from controlplane import shadowed_packages

#: Folders of the source repository that a wheel does not carry.
SOURCE_ONLY = ("examples", "benchmarks")


def missing_path_note(path: str | os.PathLike[str], names: Mapping[str, str] | None = None) -> str:
    """What to say after "not found: PATH" where ``path`` (relative, as typed) names a file of the source
    repository: `` (examples/ ships with controlplane's source repository only ...)``, or where the installed
    package's copy is, after its name in ``names`` where it has one (``sim/data/...csv`` -> ``bundled:azure_code``);
    "" for any other path."""
    given = Path(path)
    if given.is_absolute() or not given.parts:
        return ""
    root = shadowed_packages.PACKAGES_ROOT  # site-packages, or the checkout of an editable install
    if given.parts[0] in SOURCE_ONLY:
        if (root / given).exists():  # (an editable install run from another folder)
            return f" (relative to the working folder; the source repository's copy is {root / given})"
        if (root / given.parts[0]).is_dir():  # (the repository's folder is there, without that file: a typo)
            return ""
        return (f" ({given.parts[0]}/ ships with controlplane's source repository only, not with the installed "
                "package: run from a clone of the repository, or give a file of your own)")
    if given.parts[:2] == ("sim", "data") and (root / given).is_file():
        name = (names or {}).get(given.as_posix())
        return (f" (relative to the working folder; the installed package's copy is "
                f"{f'{name}, ' if name else ''}{root / given})")
    return ""
