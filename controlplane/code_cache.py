"""Code that libraries compile from source text at every start, kept on disk between processes.

Some of the standard library makes functions from text when a module is imported: ``dataclasses``
writes and compiles each class's ``__init__``, ``__repr__``, ``__eq__`` and the rest,
``typing.ForwardRef`` compiles every annotation written as a string (every annotation of a module
with ``from __future__ import annotations`` that pydantic or typer looks at), ``namedtuple`` its
``__new__``, ``inspect`` the annotations and default values it evaluates; and ``re`` parses and
compiles every regular expression a module compiles at its import. That text is the same at every
run of the same code, and CPython's parser and compiler made ~1,400 such functions at each start of
``controlplane sim replay``: ~0.3 G instructions, a fifth of a 1,000-request replay (its 51 regular
expressions another ~0.03 G; SQLAlchemy's in the writer process ~0.05 G).

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
arguments and flags. On CPython 3.11, ``re._compiler.compile`` is replaced by :func:`regex`, its
own steps with the parse's result (the engine's code, the groups) kept: the pattern object is made
by ``_sre.compile`` from the same arguments, and CPython compares two patterns by that code.

A file per command (``sim replay`` reads only what a replay compiles: its parent's and its writer
process's), named by the interpreter's bytecode magic number and optimisation level (another
Python, or ``-O``, has a file of its own; a file written by another release of it, whose ``re`` may
compile a pattern differently, is not read); it holds the texts themselves (a text is looked up
whole, never by a digest), and is started afresh past :data:`MAX_ENTRIES` (reading it costs ~16 M
instructions per thousand entries). Its content is preceded by its CRC-32: ``marshal`` trusts what
it reads (a damaged byte can make it raise ``SystemError``, or crash the interpreter, or give other
code), so a file whose content does not match is not read but written anew, as one that cannot be
read back; the cache never fails a command.
"""

from __future__ import annotations

import builtins
import marshal
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import CodeType, ModuleType
from typing import Any, Final

__all__ = ["MAX_ENTRIES", "cache_file", "code", "install", "installed", "save", "uninstall"]

_FORMAT: Final = 3  # of the file: CRC-32 of the rest (4 bytes, little-endian), then marshal's
# ((_FORMAT, sys.hexversion), *one dict per table)
#: Texts kept in a file at most (a replay's are ~1,000); past that it keeps what the last process used.
MAX_ENTRIES: Final = 4_000
_MODES: Final = ("exec", "eval")
#: The file's tables: code by text for each mode; a regular expression's compiled parts by (pattern, flags).
_TABLES: Final = (*_MODES, "re")

_exec, _eval, _compile = builtins.exec, builtins.eval, builtins.compile

_codes: dict[str, dict[Any, Any]] = {table: {} for table in _TABLES}  # table -> text -> code (or parts)
_added = 0  # texts compiled by this process (the file is rewritten at exit when any)
_used: dict[str, set[Any]] = {table: set() for table in _TABLES}  # texts this process asked for
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


def _read(path: Path) -> list[dict[Any, Any]] | None:
    """The file's tables (None when it is missing, damaged or of another format)."""
    from zlib import crc32

    try:
        content = memoryview(path.read_bytes())
        if len(content) < 4 or crc32(content[4:]) != int.from_bytes(content[:4], "little"):
            return None  # damaged: never given to marshal
        data = marshal.loads(content[4:])
    except Exception:  # noqa: BLE001 - OSError, and whatever marshal raises
        return None
    if not (isinstance(data, tuple) and len(data) == 1 + len(_TABLES) and data[0] == _header()):
        return None
    return [{k: v for k, v in saved.items() if _valid(table, k, v)} if isinstance(saved, dict) else {}
            for table, saved in zip(_TABLES, data[1:])]


def _header() -> tuple[int, int]:
    """The file's first item: its format and the Python release that wrote it (a micro release's
    ``re`` or compiler may differ; the file's name tells only the bytecode's version)."""
    return (_FORMAT, sys.hexversion)


def _valid(table: str, key: Any, value: Any) -> bool:
    if table != "re":
        return type(key) is str and type(value) is CodeType
    return (type(key) is tuple and len(key) == 2 and type(key[0]) in (str, bytes) and type(key[1]) is int
            and type(value) is tuple and len(value) == 5)


def _load(path: Path) -> None:
    """Add the file's code objects to those this process compiled so far (it compiled them again
    where the file has them: those do not count as new)."""
    global _added
    for table, saved in zip(_TABLES, _read(path) or ()):
        codes = _codes[table]
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

    on_disk = _read(_file) or [{} for _ in _TABLES]
    merged = [{**old, **_codes[table]} for old, table in zip(on_disk, _TABLES)]
    if sum(len(c) for c in merged) > MAX_ENTRIES:  # started afresh, with what this process used
        merged = [{s: c for s, c in _codes[table].items() if s in _used[table]} for table in _TABLES]
    from zlib import crc32

    content = marshal.dumps((_header(), *merged))
    # (an OSError, such as a read-only or full disk, is swallowed there; the temporary file of a
    # process killed while saving, or of a full disk, is removed once a week old)
    write_atomically(_file, crc32(content).to_bytes(4, "little") + content, prune="*.tmp")
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


def regex(pattern: str | bytes, flags: int) -> Any:
    """``re._compiler.compile(pattern, flags)`` (CPython 3.11's, step for step): the pattern object
    made by ``_sre.compile`` from the parse's code, kept from the run that parsed it before."""
    import _sre

    key = (pattern, flags)
    parts = _codes["re"].get(key)
    if parts is not None:
        final_flags, code_, groups, groupindex, indexgroup = parts
        try:
            compiled = _sre.compile(pattern, final_flags, list(code_), groups, dict(groupindex), indexgroup)
        except (TypeError, ValueError, RuntimeError, OverflowError):  # a damaged file: the engine checks the code
            parts = None
    if parts is None:
        global _added
        from re import _compiler, _parser

        parsed = _parser.parse(pattern, flags)
        code_ = _compiler._code(parsed, flags)
        groupindex = parsed.state.groupdict
        indexgroup = [None] * parsed.state.groups
        for k, i in groupindex.items():
            indexgroup[i] = k
        # (the code's opcodes are named int constants: plain ints for the engine and for marshal)
        parts = (int(flags | parsed.state.flags), [int(c) for c in code_], int(parsed.state.groups - 1),
                 {k: int(i) for k, i in groupindex.items()}, tuple(indexgroup))
        compiled = _sre.compile(pattern, parts[0], list(parts[1]), parts[2], groupindex, parts[4])
        _codes["re"][key] = parts
        _added += 1
    _used["re"].add(key)
    return compiled


def _cached_re_compile(p: Any, flags: int = 0) -> Any:
    # re._compile's call for a pattern its own cache does not hold (debug output: the original's)
    if (type(p) is str or type(p) is bytes) and type(flags) is int and not flags & re.DEBUG:
        return regex(p, flags)
    return _re_compile(p, flags)


_re_compile: Any = None  # re._compiler.compile, the original (while hooked)

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
    _hook_regular_expressions()
    path = cache_file(scope)  # hooked first: the imports this makes (platformdirs) compile through the cache too
    if path is None:
        uninstall()
        return
    _file = path
    _load(path)
    import atexit

    atexit.register(save)


def _hook_regular_expressions() -> None:
    """Have ``re`` compile through :func:`regex`, on CPython 3.11 (whose ``re._compiler.compile``
    it follows; elsewhere ``re`` compiles as it does)."""
    global _re_compile
    if sys.implementation.name != "cpython" or sys.version_info[:2] != (3, 11):
        return
    from re import _compiler

    if _re_compile is None:
        _re_compile = _compiler.compile
        _compiler.compile = _cached_re_compile


def installed() -> bool:
    return bool(_hooked)


def uninstall() -> None:
    """Remove the hooks and forget the file (tests)."""
    global _file, _added, _re_compile
    for module, name, hook in _hooked:
        if vars(module).get(name) is hook:
            delattr(module, name)
    _hooked.clear()
    if _re_compile is not None:
        from re import _compiler

        _compiler.compile, _re_compile = _re_compile, None
    import atexit

    atexit.unregister(save)
    _file = None
    _added = 0
    for table in _TABLES:
        _codes[table].clear()
        _used[table].clear()
