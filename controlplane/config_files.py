"""A run config file's parse: YAML, TOML or JSON into a dict, with errors naming the file
(`controlplane.config.load_config` reads it)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from controlplane.errors import ConfigError


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a YAML, TOML or JSON config file into a dict, with errors naming the file. A key given twice in one
    mapping is an error (YAML and JSON parsers would keep the last silently). ``~`` is the user's home, as an
    unquoted one is in a shell (a quoted ``-c "~/run.yaml"`` reached the command as typed)."""
    if str(path) == "-":  # (not a file of that name: stdin, as `controlplane sim replay -c -` reads it)
        raise ConfigError("config file not found: - (a config on stdin is read with -c /dev/stdin, as YAML or JSON)")
    path = Path(path).expanduser()
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder, not a file")
    if not path.exists():  # (a path of the source repository: where that file is, `missing_path_note`)
        from controlplane.checkout_paths import missing_path_note

        raise ConfigError(f"config file not found: {path}{missing_path_note(path)}")
    try:  # (a regular file, or any other that reads as text: /dev/null, a pipe such as bash's <(...))
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start + 1}: {exc.reason})") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror or exc}") from None
    text = text.removeprefix("\ufeff")  # a byte order mark (some Windows editors write one): not the text's
    suffix = path.suffix.lower()  # run.TOML is TOML
    # Each parser imported when a file needs it (tomllib's regular expressions are ~0.01 G
    # instructions); a YAML file's parse comes from the cache when the text was parsed before
    # (PyYAML's import is ~0.1 G: `controlplane.yaml_cache`). ``errors()`` is called only when
    # parsing raised: PyYAML's error class without importing PyYAML otherwise.
    parse: Any
    errors: Any
    if suffix == ".toml":
        import tomllib

        parse, errors = tomllib.loads, lambda: tomllib.TOMLDecodeError
    elif suffix == ".json":
        parse, errors = _json_loads, lambda: json.JSONDecodeError
    else:
        from controlplane import yaml_cache

        parse, errors = yaml_cache.safe_load, _yaml_error
    try:
        data = parse(text)
    except errors() as exc:
        raise ConfigError(f"{path}: not valid {suffix.lstrip('.') or 'YAML'}: {_error_text(exc, parse, errors, text)}"
                          ) from None
    except DuplicateKeyError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if data is None or (data == {} and suffix == ".toml"):  # (a YAML or TOML file of comments alone reads as none)
        _warn_if_empty(path, text)
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return data


class EmptyConfigWarning(UserWarning):
    """A config file with nothing in it but whitespace or comments: its run goes with the library's defaults.
    ``one_line``: the command line shows it as one ``warning:`` line (`controlplane.cli.shown_warnings`)."""

    one_line = True


def _warn_if_empty(path: Path, text: str) -> None:
    """Warn (`EmptyConfigWarning`, naming the file) of a config file with no key: a ``controlplane runs config 7 >
    run7.yaml`` that failed leaves one, and a script replaying it ran the library's defaults, silently. ``/dev/null``,
    the documented way to ask for the defaults, is not warned of."""
    import warnings

    if os.path.realpath(path) == os.path.realpath(os.devnull):
        return
    what = "empty" if not text.strip() else "only comments"
    warnings.warn(f"config file {path} is {what}: the run goes with the library's defaults (not the bundled config "
                  "a replay without --config takes); a `controlplane runs config RUN > FILE` that failed leaves such a "
                  "file (-c /dev/null asks for the defaults without this warning)", EmptyConfigWarning, stacklevel=3)


def _error_text(exc: Exception, parse: Any, errors: Any, text: str) -> str:
    """The parser's error without the passwords of the text's URLs: PyYAML's quotes the lines at the fault (a
    database or Redis URL with its password, cut anywhere: a ``postgresql://u:secret ...`` with no ``@`` left),
    so it is the error of the same text with each URL's password starred out, at the same line and column."""
    hidden = _passwords_starred(text)
    if hidden == text:
        return str(exc)
    try:
        parse(hidden)
    except errors() as again:
        return str(again)
    except Exception:  # noqa: BLE001 (another refusal of the starred text: the first error, its URLs masked)
        pass
    return _passwords_starred(str(exc))


_URL = re.compile(r"[A-Za-z][\w+.-]*://[^\s\"'`]+")


def _passwords_starred(text: str) -> str:
    """``text`` with the password of each URL in it (what `mask_password` hides) starred out, one ``*`` a
    character, so that what follows keeps its column."""
    from controlplane.storage.errors import mask_password

    def star(m: re.Match) -> str:
        url = m.group(0)
        masked = mask_password(url)
        if masked == url:
            return url
        head = len(os.path.commonprefix([url, masked]))
        tail = len(os.path.commonprefix([url[head:][::-1], masked[head:][::-1]]))
        return url[:head] + "*" * max(0, len(url) - head - tail) + url[len(url) - tail:]

    return _URL.sub(star, text)


def _yaml_error() -> type[Exception]:
    import yaml

    return yaml.YAMLError


class DuplicateKeyError(ValueError):
    """A mapping (a YAML mapping, a JSON object) with a key twice: what the parsers would keep silently."""


def _json_loads(text: str) -> Any:
    """``json.loads``, refusing an object that has a key twice (its lines found by `_json_duplicate`)."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(items)
        if len(out) != len(items):
            raise DuplicateKeyError(_json_duplicate(text))
        return out

    return json.loads(text, object_pairs_hook=pairs)


def _json_duplicate(text: str) -> str:
    """What is wrong with ``text`` (JSON with a repeated key): the first key given twice in one object, and the
    lines of both."""
    from json.decoder import scanstring

    stack: list[dict[str, int] | None] = []  # each open object's keys (their lines); None for an array
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            key, end = scanstring(text, i + 1)
            after = end
            while after < n and text[after] in " \t\r\n":
                after += 1
            if after < n and text[after] == ":" and stack and stack[-1] is not None:
                line = text.count("\n", 0, i) + 1
                if key in stack[-1]:
                    return (f"the key {key!r} is given twice in one object (line {stack[-1][key]} and line {line}); "
                            "give it once")
                stack[-1][key] = line
            i = end
            continue
        if c == "{" or c == "[":
            stack.append({} if c == "{" else None)
        elif (c == "}" or c == "]") and stack:
            stack.pop()
        i += 1
    return "a key is given twice in one object; give it once"
