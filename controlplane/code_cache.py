"""Code that libraries compile from source text at every start, kept on disk between processes.

Some of the standard library makes functions from text when a module is imported: ``dataclasses``
writes and compiles each class's ``__init__``, ``__repr__``, ``__eq__`` and the rest,
``typing.ForwardRef`` compiles every annotation written as a string (every annotation of a module
with ``from __future__ import annotations`` that pydantic or typer looks at), ``namedtuple`` its
``__new__``, ``inspect`` the annotations and default values it evaluates. That text is the same at
every run of the same code, and CPython's parser and compiler made ~1,400 such functions at each
start of ``controlplane sim replay``: ~0.3 G instructions, a fifth of a 1,000-request replay.

:func:`install` (the CLI's first step) has those four modules compile through :func:`code`: the
code object compiled before for the same text, from a file in the user's cache directory (beside
the other caches: ``$CONTROLPLANE_CACHE_DIR``, ``off`` turns it off), compiled and added to it
otherwise; the file is rewritten at exit when something was added. A code object compiled from the
same text, file name, mode and flags by the same interpreter is the same whether it was just made
or read back with ``marshal`` (which is how ``.pyc`` files keep modules), so what those modules
build is what they built before. Each is hooked by a module global that shadows the builtin it
calls (``dataclasses.exec``, ``typing.compile``, ``collections.eval``, ``inspect.eval``), and only
when the module has no ``from __future__`` import, whose flags its own calls would pass on; any
call the cache does not answer (other arguments, code objects) goes to the builtin with the same
arguments and flags.

The file is named by the interpreter's bytecode magic number and optimisation level (another
Python, or ``-O``, has a file of its own), holds the texts themselves (a text is looked up whole,
never by a digest), and is started afresh past :data:`MAX_ENTRIES`.
"""

from __future__ import annotations

import builtins
import marshal
import sys
from collections.abc import Callable
from pathlib import Path
from types import CodeType, ModuleType
from typing import Any, Final

__all__ = ["MAX_ENTRIES", "cache_file", "code", "install", "installed", "save", "uninstall"]

_FORMAT: Final = 1  # of the file's content
#: Texts kept in the file at most; past that it keeps only what the last process used.
MAX_ENTRIES: Final = 20_000
_MODES: Final = ("exec", "eval")

_exec, _eval, _compile = builtins.exec, builtins.eval, builtins.compile

_codes: dict[str, dict[str, CodeType]] = {mode: {} for mode in _MODES}  # mode -> text -> code
_added = 0  # texts compiled by this process (the file is rewritten at exit when any)
_used: dict[str, set[str]] = {mode: set() for mode in _MODES}  # texts this process asked for
_file: Path | None = None
_hooked: list[tuple[ModuleType, str, Callable[..., Any]]] = []


def code(source: str, mode: str) -> CodeType:
    """``compile(source, "<string>", mode, dont_inherit=True)``, the one compiled before when there is one."""
    codes = _codes[mode]
    found = codes.get(source)
    if found is None:
        global _added
        found = codes[source] = _compile(source, "<string>", mode, dont_inherit=True)
        _added += 1
    _used[mode].add(source)
    return found


def cache_file(scope: str = "") -> Path | None:
    """This interpreter's file for ``scope`` (a command: each reads only what it compiles; None
    when caching is off)."""
    from importlib.util import MAGIC_NUMBER

    from controlplane.cache_dir import cache_root

    root = cache_root()
    if root is None:
        return None
    words = [w for w in scope.split() if w.replace("-", "").replace("_", "").isalnum() and len(w) <= 40]
    suffix = "".join(f"-{w}" for w in words)
    return root / "code" / f"{sys.implementation.cache_tag}-{MAGIC_NUMBER.hex()}-O{sys.flags.optimize}{suffix}.marshal"


def _read(path: Path) -> list[dict[str, CodeType]] | None:
    """The file's code objects by mode (None when it is missing, damaged or of another format)."""
    try:
        data = marshal.loads(path.read_bytes())
    except (OSError, ValueError, EOFError, TypeError):
        return None
    if not (isinstance(data, tuple) and len(data) == 1 + len(_MODES) and data[0] == _FORMAT):
        return None
    return [{k: v for k, v in saved.items() if type(k) is str and type(v) is CodeType} if isinstance(saved, dict)
            else {} for saved in data[1:]]


def _load(path: Path) -> None:
    """Add the file's code objects to those this process compiled so far (it compiled them again
    where the file has them: those do not count as new)."""
    global _added
    for mode, saved in zip(_MODES, _read(path) or ()):
        codes = _codes[mode]
        for source, compiled in saved.items():
            if source in codes:
                _added -= 1
            else:
                codes[source] = compiled


def save() -> None:
    """Write the file when this process compiled something new (at exit; idempotent): what the
    file holds now (another process may have added to it since it was read) and what this
    process compiled."""
    global _added
    if _added <= 0 or _file is None:
        return
    from controlplane.cache_dir import write_atomically

    on_disk = _read(_file) or [{} for _ in _MODES]
    merged = [{**old, **_codes[mode]} for old, mode in zip(on_disk, _MODES)]
    if sum(len(c) for c in merged) > MAX_ENTRIES:  # started afresh, with what this process used
        merged = [{s: c for s, c in _codes[mode].items() if s in _used[mode]} for mode in _MODES]
    write_atomically(_file, marshal.dumps((_FORMAT, *merged)))
    _added = 0


# -- the hooks: each does what the builtin it shadows does, for the calls its module makes ----------


def _caller_namespaces(globals_: Any, locals_: Any) -> tuple[Any, Any]:
    """What ``exec``/``eval`` use when no globals are given: the calling frame's (two up)."""
    if globals_ is None:
        frame = sys._getframe(2)
        globals_ = frame.f_globals
        if locals_ is None:
            locals_ = frame.f_locals
    return globals_, locals_


def _cached_exec(source: Any, globals_: Any = None, locals_: Any = None, /, **kwargs: Any) -> None:
    globals_, locals_ = _caller_namespaces(globals_, locals_)
    if type(source) is str:
        source = code(source, "exec")
    return _exec(source, globals_, locals_, **kwargs)


def _cached_eval(source: Any, globals_: Any = None, locals_: Any = None, /) -> Any:
    globals_, locals_ = _caller_namespaces(globals_, locals_)
    if type(source) is str:
        source = code(source.lstrip(" \t"), "eval")  # eval() skips a string's leading blanks
    return _eval(source, globals_, locals_)


def _cached_compile(source: Any, filename: Any, mode: str, flags: int = 0, dont_inherit: bool = False,
                    optimize: int = -1, **kwargs: Any) -> Any:
    if type(source) is str and filename == "<string>" and mode in _MODES and not flags and optimize == -1 \
            and not kwargs:
        return code(source, mode)
    # The hooked module has no __future__ flags to pass on (`_hookable`): none inherited here either.
    return _compile(source, filename, mode, flags, True, optimize, **kwargs)


_HOOKS: Final[tuple[tuple[str, str, Callable[..., Any]], ...]] = (
    ("dataclasses", "exec", _cached_exec),  # _create_fn: every generated method
    ("typing", "compile", _cached_compile),  # ForwardRef: every annotation given as a string
    ("collections", "eval", _cached_eval),  # namedtuple's __new__
    ("inspect", "eval", _cached_eval),  # get_annotations(eval_str=True), signatures from text
)


def _hookable(module: ModuleType, name: str) -> bool:
    """Whether ``module`` calls the builtin ``name`` (no global of its own shadows it) without
    passing on flags of its own (no ``from __future__`` import)."""
    import __future__

    return name not in vars(module) and not any(isinstance(v, __future__._Feature) for v in vars(module).values())


def install(scope: str = "") -> None:
    """Hook the modules and load this interpreter's file for ``scope`` (the command, such as
    ``"sim replay"``; once; nothing when caching is off)."""
    global _file
    if _hooked or _file is not None:
        return
    import collections
    import dataclasses
    import inspect
    import typing

    modules = {"dataclasses": dataclasses, "typing": typing, "collections": collections, "inspect": inspect}
    for module_name, name, hook in _HOOKS:
        module = modules[module_name]
        if _hookable(module, name):
            setattr(module, name, hook)
            _hooked.append((module, name, hook))
    path = cache_file(scope)  # hooked first: the imports this makes (platformdirs) compile through the cache too
    if path is None:
        uninstall()
        return
    _file = path
    _load(path)
    import atexit

    atexit.register(save)


def installed() -> bool:
    return bool(_hooked)


def uninstall() -> None:
    """Remove the hooks and forget the file (tests)."""
    global _file, _added
    for module, name, hook in _hooked:
        if vars(module).get(name) is hook:
            delattr(module, name)
    _hooked.clear()
    import atexit

    atexit.unregister(save)
    _file = None
    _added = 0
    for mode in _MODES:
        _codes[mode].clear()
        _used[mode].clear()
