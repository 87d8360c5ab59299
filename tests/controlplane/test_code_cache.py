"""Code compiled from text by dataclasses, typing, namedtuple and inspect, kept on disk: the same
code objects as the builtins make, read back by the next process."""

from __future__ import annotations

import collections
import dataclasses
import inspect
import marshal
import os
import re
import subprocess
import sys
import textwrap
import typing
import zlib

import pytest

from controlplane import code_cache
from controlplane.cache_dir import CACHE_ENV

_ATTRS = ("co_code", "co_consts", "co_names", "co_varnames", "co_freevars", "co_cellvars", "co_flags",
          "co_argcount", "co_posonlyargcount", "co_kwonlyargcount", "co_nlocals", "co_stacksize", "co_filename",
          "co_name", "co_qualname", "co_firstlineno", "co_linetable", "co_exceptiontable")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """The cache installed with a folder of its own; removed (hooks and all) afterwards."""
    code_cache.uninstall()
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    code_cache.install()
    assert code_cache.installed()
    yield code_cache.cache_file()
    code_cache.uninstall()
    assert not code_cache.installed() and vars(dataclasses).get("exec") is None


def _same_code(a, b) -> None:
    for attr in _ATTRS:
        if hasattr(a, attr):
            assert getattr(a, attr) == getattr(b, attr), attr
    consts = [c for c in a.co_consts if isinstance(c, type(a))]
    for x, y in zip(consts, [c for c in b.co_consts if isinstance(c, type(b))]):
        _same_code(x, y)
    assert a == b


def test_the_hooked_modules_pass_on_no_compiler_flags_of_their_own():
    # Otherwise a text compiled here (no flags) would differ from what their own calls compile.
    for module, name in ((dataclasses, "exec"), (typing, "compile"), (collections, "eval"), (inspect, "eval")):
        assert code_cache._hookable(module, name), module.__name__


@pytest.mark.parametrize("source, mode", [
    ("def __create_fn__(a, b):\n def __init__(self, x:a=b):\n  self.x=x\n return __init__", "exec"),
    ("lambda _cls, x, y: _tuple_new(_cls, (x, y))", "eval"),
    ("dict[str, 'Request'] | None", "eval"),
    ("def f():\n    return (yield 1)\n", "exec"),
])
def test_a_code_object_is_the_one_the_builtin_compiles(cache, source, mode):
    made = code_cache.code(source, mode)
    _same_code(made, compile(source, "<string>", mode, dont_inherit=True))
    assert code_cache.code(source, mode) is made  # asked again: the same object
    code_cache.save()
    code_cache.uninstall()
    code_cache.install()  # as the next process: from the file
    read = code_cache.code(source, mode)
    assert read is not made
    _same_code(read, made)
    assert code_cache._added == 0


def _classes():
    @dataclasses.dataclass(frozen=True, order=True)
    class Point:
        x: int
        y: int = 0
        tags: list = dataclasses.field(default_factory=list, compare=False)

    @dataclasses.dataclass(slots=True)
    class Slotted:
        name: str
        value: typing.Optional[float] = None

    Pair = collections.namedtuple("Pair", "left right", defaults=(None,))
    return Point, Slotted, Pair


def test_dataclasses_and_named_tuples_made_through_the_cache_are_the_same(cache):
    code_cache.uninstall()
    plain = _classes()
    code_cache.install()
    for attempt in range(2):  # compiled, then (the next process) read back from the file
        hooked = _classes()
        assert (code_cache._added == 0) if attempt else (code_cache._added > 0)
        for a, b in zip(plain, hooked):
            for name in ("__init__", "__repr__", "__eq__", "__lt__", "__hash__", "__setattr__", "__new__"):
                fa, fb = getattr(a, name, None), getattr(b, name, None)
                if hasattr(fa, "__code__") and fa.__code__.co_filename == "<string>":
                    _same_code(fa.__code__, fb.__code__)
                    assert fa.__defaults__ == fb.__defaults__ or name == "__init__"
        Point, Slotted, Pair = hooked
        assert Point(1, 2) < Point(2) and Point(1, 2) == Point(1, 2, ["a"]) and hash(Point(1)) == hash(Point(1))
        assert repr(Slotted("a")) == "_classes.<locals>.Slotted(name='a', value=None)"
        assert Pair(1) == (1, None) and Pair.__new__.__defaults__ == (None,)
        with pytest.raises(dataclasses.FrozenInstanceError):
            Point(1).x = 3
        code_cache.save()
        code_cache.uninstall()
        code_cache.install()
    assert code_cache._added == 0


def test_forward_references_compile_through_the_cache_and_keep_their_errors(cache):
    ref = typing.ForwardRef("list[int] | None")
    assert "list[int] | None" in code_cache._codes["eval"]
    assert ref.__forward_code__ is code_cache.code("list[int] | None", "eval")
    assert typing.get_type_hints(type("C", (), {"__annotations__": {"a": "list[int] | None"}}))["a"] == (
        list[int] | None)
    with pytest.raises(SyntaxError, match=re.escape("Forward reference must be an expression -- got 'x +'")):
        typing.ForwardRef("x +")
    # Other arguments go to the builtin as given.
    assert typing.compile("1", "other.py", "eval").co_filename == "other.py"


def test_eval_and_exec_without_namespaces_use_the_callers_as_the_builtins_do(cache):
    def caller():
        y = 5
        return code_cache._cached_eval("  y + 1"), code_cache._cached_eval("y * 2", None, {"y": 7})

    assert caller() == (6, 14)
    namespace: dict = {}
    code_cache._cached_exec("z = 3", namespace)
    assert namespace["z"] == 3 and "__builtins__" in namespace
    local: dict = {}
    code_cache._cached_exec("w = len('ab')", {}, local)
    assert local == {"w": 2}
    compiled = compile("v = 1", "<string>", "exec")
    code_cache._cached_exec(compiled, namespace)  # a code object: passed through
    assert namespace["v"] == 1


def _sealed(content: bytes) -> bytes:
    """A file's bytes for marshal's ``content``, as `save` writes them (its CRC-32 first)."""
    return zlib.crc32(content).to_bytes(4, "little") + content


def _tables(path) -> tuple:
    content = path.read_bytes()
    assert zlib.crc32(content[4:]) == int.from_bytes(content[:4], "little")
    return marshal.loads(content[4:])


def test_a_damaged_or_foreign_file_is_ignored_and_written_again(cache):
    cache.parent.mkdir(parents=True, exist_ok=True)
    header = code_cache._header()
    for content in (b"", b"not marshal", _sealed(b"not marshal"), _sealed(marshal.dumps(("something else",))),
                    _sealed(marshal.dumps((99, {}, {}, {}))), _sealed(marshal.dumps((header, {}, {}))),
                    _sealed(marshal.dumps((code_cache._FORMAT, {}, {"1 + 1": "not code"}, {}, {}))),
                    _sealed(marshal.dumps((header, {"x": "not code"}, {1: compile("1", "<string>", "eval")},
                                           {("a", 0): "not parts", "b": (1, [], 0, {}, ())})))):
        cache.write_bytes(content)
        code_cache.uninstall()
        code_cache.install()
        made = code_cache.code("1 + 1", "eval")
        assert eval(made) == 2
        code_cache.save()
        data = _tables(cache)
        assert data[0] == header and "1 + 1" in data[2]


def _unloadable(tables: tuple) -> bytes:
    """marshal's data for ``tables`` with its first code object's bytecode an int: ``marshal.loads``
    raises SystemError for it (as for some files with one byte changed; others crash the interpreter)."""
    compiled = compile("x = 1", "<string>", "exec")
    plain = marshal.dumps(compiled, 2)  # (version 2: no references to shift)
    at = plain.index(b"s", 1)  # the bytecode, a bytes object
    bad = plain[:at] + marshal.dumps(5, 2) + plain[at + 5 + int.from_bytes(plain[at + 1:at + 5], "little"):]
    content = marshal.dumps((code_cache._header(), {"x = 1": compiled}, *tables), 2).replace(plain, bad)
    with pytest.raises(SystemError):
        marshal.loads(content)
    return content


def test_a_damaged_file_is_not_read_and_fails_nothing(cache):
    # It failed every `controlplane sim` command (SystemError at its start) until removed by hand.
    cache.parent.mkdir(parents=True, exist_ok=True)
    unloadable = _unloadable(({}, {}))
    for content in (unloadable, _sealed(unloadable)):
        cache.write_bytes(content)
        assert code_cache._read(cache) is None
        code_cache.uninstall()
        code_cache.install()
        code_cache.code("x = 1", "exec")
        code_cache.save()
        assert "x = 1" in _tables(cache)[1]
    good = cache.read_bytes()
    # One byte changed or lost: the CRC-32 does not match, and marshal never sees it.
    for damaged in (good[:-1], good[1:], good[:4] + bytes([good[4] ^ 1]) + good[5:], good[:-1] + b"\0"):
        cache.write_bytes(damaged)
        assert code_cache._read(cache) is None


def test_a_file_from_another_python_release_is_not_read(cache, monkeypatch):
    # The file's name tells the bytecode's version, the same across a minor version's releases; the
    # regular expressions' compiled parts are what that release's `re` made.
    with monkeypatch.context() as patched:
        patched.setattr(sys, "hexversion", sys.hexversion - 1)
        code_cache.code("'older'", "eval")
        code_cache.save()
    code_cache.uninstall()
    code_cache.install()
    assert "'older'" not in code_cache._codes["eval"]
    code_cache.code("'older'", "eval")
    assert code_cache._added == 1


def test_a_temporary_file_left_by_a_killed_save_is_removed_in_a_week(cache):
    from controlplane.cache_dir import PRUNE_AFTER_S

    cache.parent.mkdir(parents=True, exist_ok=True)
    left = [cache.with_suffix(f".{pid}.tmp") for pid in (1, 2)]
    for path in left:
        path.write_bytes(b"half a file")
    week = os.stat(left[0]).st_mtime - PRUNE_AFTER_S - 60
    os.utime(left[0], (week, week))
    code_cache.code("'saved'", "eval")
    code_cache.save()
    assert not left[0].exists() and left[1].exists()  # (one being written now is young)
    assert "'saved'" in _tables(cache)[2]


def test_past_max_entries_only_what_the_process_used_is_kept(cache, monkeypatch):
    monkeypatch.setattr(code_cache, "MAX_ENTRIES", 3)
    for i in range(5):
        code_cache.code(f"{i} + 1", "eval")
    code_cache.save()
    assert len(_tables(cache)[2]) >= 5  # this process used all five
    code_cache.uninstall()
    code_cache.install()
    code_cache.code("0 + 1", "eval")
    code_cache.code("new", "eval")
    code_cache.save()
    assert set(_tables(cache)[2]) == {"0 + 1", "new"}


def test_off_installs_nothing(monkeypatch):
    code_cache.uninstall()
    monkeypatch.setenv(CACHE_ENV, "off")
    code_cache.install()
    assert not code_cache.installed() and vars(dataclasses).get("exec") is None and code_cache.cache_file() is None


def test_a_second_process_compiles_nothing_and_leaves_the_file_alone(tmp_path):
    script = textwrap.dedent("""
        from controlplane import code_cache
        code_cache.install()
        import dataclasses, json, sys
        @dataclasses.dataclass(order=True)
        class A:
            a: int
            b: "list[str]"
        import pydantic
        class M(pydantic.BaseModel):
            x: "int | None" = None
        print(json.dumps([code_cache._added, len(code_cache._codes["exec"]), A(1, []) < A(2, []), M(x=1).x]))
        """)
    env = {**os.environ, CACHE_ENV: str(tmp_path)}
    runs = []
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        files = list((tmp_path / "code").glob("*.marshal"))
        assert len(files) == 1
        runs.append((*__import__("json").loads(proc.stdout), files[0].stat().st_mtime_ns))
    (added1, execs1, lt1, x1, mtime1), (added2, execs2, lt2, x2, mtime2) = runs
    assert added1 > 0 and execs1 > 10 and lt1 is lt2 is True and x1 == x2 == 1
    assert added2 == 0 and execs2 == execs1 and mtime2 == mtime1


def test_each_command_has_a_file_of_its_own_named_by_plain_words_only(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    plain = code_cache.cache_file()
    assert plain.parent == tmp_path / "code" and plain.suffix == ".marshal"
    assert code_cache.cache_file("sim replay").name == plain.stem + "-sim-replay.marshal"
    assert code_cache.cache_file("runs ").name == plain.stem + "-runs.marshal"
    assert code_cache.cache_file("../up x/y .. " + "a" * 41) == plain  # nothing of a path, nothing long


PATTERNS = [
    (r"^(?:\s*(\w+)\s*\.)?\s*(\w+)", 0), (r"(?P<year>\d{4})-(?P<month>\d\d)(?:-(?P<day>\d\d))?", re.I),
    (r"""
        \$(?: (?P<escaped>\$) | (?P<named>[_a-z][_a-z0-9]*) | {(?P<braced>[_a-z][_a-z0-9]*)} | (?P<invalid>) )
     """, re.I | re.X), (r"\A\s*(?P<sign>[-+]?)(?=\d|\.\d)(?P<num>\d*|\d+(_\d+)*)(?:\.(?P<d>\d*))?\s*\Z", re.VERBOSE),
    (r"(a)(b)?(?(2)c|d)[^\x00-\x1f]+", re.M | re.S), (rb"[\x80-\xff]+(?=\r\n)", 0), (rb"(?i)abc|d+?", re.L),
    ("é+[Ā-ſ]*", 0), ("x*", re.A), ("", 0),
]


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="re is hooked on CPython 3.11 only")
def test_regular_expressions_compile_to_the_same_patterns(cache):
    assert re._compiler.compile is code_cache._cached_re_compile
    original = code_cache._re_compile
    for attempt in range(2):  # compiled, then (the next process) made from the file
        for pattern, flags in PATTERNS:
            made = re._compiler.compile(pattern, int(flags))
            plain = original(pattern, int(flags))
            assert made == plain  # (CPython compares the pattern, the flags and the engine's code)
            assert (made.flags, made.groups, made.groupindex) == (plain.flags, plain.groups, plain.groupindex)
        assert (code_cache._added == 0) if attempt else (code_cache._added >= len(PATTERNS))
        code_cache.save()
        code_cache.uninstall()
        assert re._compiler.compile is original
        code_cache.install()
    date = re.compile(PATTERNS[1][0], PATTERNS[1][1])  # through re's own front
    assert date.match("2026-12-05").groupdict() == {"year": "2026", "month": "12", "day": "05"}
    # A damaged entry is compiled again (the engine checks the code it is given).
    key = (r"a+b", 0)
    code_cache._codes["re"][key] = (0, [1, 2, 3], 0, {}, ())
    assert re._compiler.compile(*key) == original(*key)
    with pytest.raises(re.error):
        re.compile("(unclosed")
