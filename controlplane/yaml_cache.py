"""A YAML config file's parse, kept on disk between processes.

Importing PyYAML compiles its regular expressions: ~0.1 G instructions, a twentieth of a
1,000-request replay, for a config file of a few lines that is the same at every run. What
``yaml.safe_load`` returned for a text is kept as JSON in the user's cache directory (beside the
entry points' and the fitted latency models' caches: ``$CONTROLPLANE_CACHE_DIR``, ``off`` turns
it off), one file per text (named by its SHA-256, holding the text itself, compared in full),
under the installed PyYAML (its package file's path and stat), and used only when JSON holds
the parse exactly: mappings with string keys, lists, strings, integers, floats, booleans and
nulls, no container twice (a YAML alias). Anything else (a date, a set, a number as a key) is
parsed by PyYAML at every run, as is a text that does not parse (its error is PyYAML's). Unlike
``yaml.safe_load``, a mapping that gives a key twice is refused (`DuplicateKeyError`, with both
lines), not parsed as its last value.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from controlplane.cache_dir import cache_root, write_atomically

__all__ = ["safe_load"]

_FORMAT = 2  # of the files' content (2: parsed refusing repeated keys)


def safe_load(text: str) -> Any:
    """``yaml.safe_load(text)``, from the cache when the installed PyYAML parsed this text before."""
    entry = _entry(text)
    installed = _pyyaml() if entry is not None else None
    if entry is not None and installed is not None:
        try:
            saved = json.loads(entry.read_bytes())
            if (isinstance(saved, dict) and saved.get("format") == _FORMAT and saved.get("pyyaml") == installed
                    and saved.get("text") == text and "data" in saved):
                return saved["data"]
        except (OSError, ValueError):
            pass
    import yaml

    data = yaml.load(text, Loader=_loader())  # noqa: S506 (a SafeLoader)
    if entry is not None and installed is not None and _json_exact(data, set()):
        write_atomically(entry, json.dumps({"format": _FORMAT, "pyyaml": installed, "text": text, "data": data}).encode(),
                         prune="yaml-*.json")
    return data


def _entry(text: str) -> Path | None:
    where = cache_root()
    if where is None:
        return None
    return where / "configs" / f"yaml-{hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()[:40]}.json"


def _pyyaml() -> str | None:
    """The installed PyYAML, as its package file's path and stat (an upgrade rewrites it); None
    when it cannot be found without importing it."""
    from importlib.util import find_spec

    try:
        spec = find_spec("yaml")
        origin = spec.origin if spec is not None else None
        if origin is None:
            return None
        st = os.stat(origin)
    except (ImportError, ValueError, OSError):
        return None
    return f"{origin}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}"


def _json_exact(value: Any, seen: set[int]) -> bool:
    """Whether ``json.loads(json.dumps(value))`` gives ``value`` back exactly: the same types
    (a bool stays a bool), the same keys in the same order, no container shared by two places."""
    kind = type(value)
    if kind is dict or kind is list:
        if id(value) in seen:
            return False
        seen.add(id(value))
        if kind is dict:
            return all(type(k) is str and _json_exact(v, seen) for k, v in value.items())
        return all(_json_exact(v, seen) for v in value)
    return value is None or kind is str or kind is int or kind is float or kind is bool


_LOADER: Any = None


def _loader() -> Any:
    """PyYAML's ``SafeLoader``, refusing a mapping that gives a key twice (a merge key's ``<<`` entries may be
    given again: that is what they are for)."""
    global _LOADER
    if _LOADER is None:
        import yaml

        from controlplane.config_files import DuplicateKeyError

        class UniqueKeyLoader(yaml.SafeLoader):
            def flatten_mapping(self, node: Any) -> None:
                checked = self.__dict__.setdefault("_checked", set())
                if node not in checked:  # its own keys, before merges are flattened into it
                    checked.add(node)
                    lines: dict[Any, int] = {}
                    for key_node, _ in node.value:
                        if key_node.tag == "tag:yaml.org,2002:merge":
                            continue
                        key = self.construct_object(key_node, deep=True)
                        line = key_node.start_mark.line + 1
                        try:
                            first = lines.get(key)
                        except TypeError:  # (an unhashable key: PyYAML's own error follows)
                            continue
                        if first is not None:
                            raise DuplicateKeyError(f"the key {key!r} is given twice in one mapping (line {first} "
                                                    f"and line {line}); give it once")
                        lines[key] = line
                super().flatten_mapping(node)

        _LOADER = UniqueKeyLoader
    return _LOADER
