"""`controlplane plugins ...`: what is installed, and what one plugin's settings are."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from controlplane.cli.common import console, out, user_errors
from controlplane.cli.tables import TEXT, WHOLE, WORDS, fitted

app = typer.Typer(help="Installed plugins.", no_args_is_help=True)

def caption() -> str:
    """What the two "enabled by" columns mean: two defaults a user meets, which differ (the bundled run config
    scales with `slo-planner`, the library's default set keeps fixed replicas). The bundled config is named by its
    installed path: ``sim/data/default_replay.yaml`` is relative to a checkout, not found elsewhere."""
    from sim.traces.bundled import bundled_default_config_path

    return ("default: enabled when a config does not set plugins.enabled (the daemon, load_config(None)); "
            f"replay: enabled by the bundled run config {bundled_default_config_path()}, which `controlplane sim "
            "replay` uses without --config")


def _bundled_replay_plugins() -> list[str]:
    """The plugins the bundled run config enables: what `controlplane sim replay` runs without --config."""
    from controlplane.config_files import read_config_file
    from sim.traces.bundled import bundled_default_config_path

    return list(read_config_file(bundled_default_config_path()).get("plugins", {}).get("enabled", []))


@app.command("list")
def list_(json_out: Annotated[bool, typer.Option(
        "--json", help="Print one JSON array: each plugin's name, distribution, version, hooks, default, replay, "
                       "description and error (null, or why every run refuses it).")] = False) -> None:
    """List installed plugins: name, distribution, version, hooks, whether the library's default config and the
    bundled `sim replay` config enable it, and what it does (`plugins show NAME`: its settings).

    A plugin that cannot be loaded (its module fails to import, its entry point is named unlike it), or that every
    run would refuse as it starts (a hook that does not exist, such as cp_form_batches; an implementation taking an
    argument its hook does not pass; a Settings that would take a typo) is listed as such, its error is printed on
    stderr, and the command exits with status 2.
    """
    from controlplane.config import DEFAULT_PLUGINS
    from controlplane.errors import PluginError
    from controlplane.plugin_checks import check_shape
    from controlplane.plugin_manager import discover_plugins

    with user_errors():
        found = discover_plugins(refresh=True)
        replay = _bundled_replay_plugins()
    t = Table(header_style="bold", caption=caption(), caption_justify="left")
    for col in ("name", "distribution", "version", "hooks", "default", "replay", "description"):
        t.add_column(col)
    broken: list[str] = []
    listed: list[dict[str, Any]] = []
    for name in sorted(found):
        p = found[name]
        error = described = None
        try:
            hooks, doc = list(p.hooks), p.doc
            described = doc
        except PluginError as exc:
            error = str(exc)
            hooks, doc = [], "failed to load (error below)"
        else:
            try:
                check_shape(name, p.target)  # what every run's start would refuse of it
            except PluginError as exc:
                error = str(exc)
                doc = "refused by every run (error below)"
        if error is not None:
            broken.append(error)
        listed.append({"name": name, "distribution": p.dist, "version": p.version, "hooks": hooks,
                       "default": name in DEFAULT_PLUGINS, "replay": name in replay, "description": described,
                       "error": error})
        # (cells are text, not rich markup: a description's "within [min, max]" is shown as written)
        t.add_row(*(escape(str(cell)) for cell in (name, p.dist or "-", p.version or "-", ", ".join(hooks) or "-",
                                                   "yes" if name in DEFAULT_PLUGINS else "",
                                                   "yes" if name in replay else "", doc)))
    if json_out:
        import json

        typer.echo(json.dumps(listed))
    else:  # names (what a config lists), versions and hook names whole; where the description would be
        # narrower than 24 characters, a plugin's fields a line each instead
        out.print(fitted(t, out.width, (WHOLE, TEXT, WHOLE, WORDS, WHOLE, WHOLE, WORDS), least={6: 24}))
    for message in broken:
        console("err").print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False)
    if broken:
        raise typer.Exit(2)


@app.command("show")
def show(name: Annotated[str, typer.Argument(help="The plugin's name, as `plugins list` shows it.", metavar="NAME")]) -> None:
    """Show one installed plugin: what it does, its hooks, and each of its settings with its type (and bounds),
    its default and its description: what a run config may give under plugins.settings.NAME.

    An unknown name, or a plugin that cannot be loaded, is an error (exit status 2). A plugin that every run would
    refuse as it starts (a hook that does not exist, an argument its hook does not pass, ...) is shown, then its
    error is printed on stderr, and the command exits with status 2.
    """
    from controlplane.errors import ConfigError, PluginError, did_you_mean
    from controlplane.plugin_checks import check_shape
    from controlplane.plugin_manager import discover_plugins

    with user_errors():
        found = discover_plugins(refresh=True)
        info = found.get(name)
        if info is None:
            raise ConfigError(f"unknown plugin {name!r}{did_you_mean(name, found)}; `controlplane plugins list` "
                              "shows the installed ones")
        target = info.target  # (a PluginError when it cannot be loaded: one line, exit 2)
        try:
            check_shape(name, target)  # what every run's start would refuse of it: said after what it is
            refused = None
        except PluginError as exc:
            refused = str(exc)
        rows = settings_rows(target)
        hooks, doc = ", ".join(info.hooks), _docstring(target)
    _show(name, info, doc, hooks, rows)
    if refused is not None:
        console("err").print(f"[bold red]error:[/] {escape(refused)}", markup=True, highlight=False)
        raise typer.Exit(2)


def _show(name: str, info: Any, doc: str, hooks: str, rows: list[dict[str, str]]) -> None:
    """`plugins show`'s text: the plugin's name and distribution, what it does, its hooks and its settings."""
    where = f" ({info.dist} {info.version})" if info.dist else ""
    out.print(f"[bold]{escape(name)}[/]{escape(where)}", highlight=False)
    if doc:
        out.print(escape(doc), highlight=False)
    out.print(f"hooks: {escape(hooks) or '-'}", highlight=False)
    if not rows:
        out.print("settings: none (a config's plugins.settings may not name it)", highlight=False)
        return
    t = Table(header_style="bold", title=f"settings (plugins.settings.{escape(name)})", title_justify="left")
    t.add_column("setting", no_wrap=True)
    for col in ("type", "default", "description"):
        t.add_column(col)
    for row in rows:
        t.add_row(*(escape(row[k]) for k in ("setting", "type", "default", "description")))
    out.print(fitted(t, out.width, (WHOLE, WORDS, WORDS, WORDS)))  # (a value or type never cut: the reason to look)


def settings_rows(target: Any) -> list[dict[str, str]]:
    """Each setting of a plugin class's ``Settings``: its name, type (with its bounds), default (as a config
    writes it; ``(required)`` when it has none) and description (the field's ``description``, else the comment
    on its line in the class). A module of hook functions, or a plugin without settings: none."""
    from controlplane.plugin import Plugin

    from pydantic import BaseModel

    if not (isinstance(target, type) and issubclass(target, Plugin)):
        return []
    settings = target.Settings
    if not (isinstance(settings, type) and issubclass(settings, BaseModel)):
        return []  # (not settings a run takes: `plugins show` says why after what it shows)
    comments = _field_comments(settings)
    return [{"setting": field_name, "type": _type_of(field), "default": _default_of(field),
             "description": field.description or comments.get(field_name, "")}
            for field_name, field in settings.model_fields.items()]


def _docstring(target: Any) -> str:
    import inspect

    return inspect.cleandoc(target.__doc__ or "")


def _type_of(field: Any) -> str:
    """A field's type as written (``int``, ``Literal['a', 'b']``, ``float | None``) and its bounds (``>= 1``)."""
    shown = _type_name(field.annotation)
    bounds = []
    for m in field.metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"), ("min_length", "length >="),
                           ("max_length", "length <=")):
            value = getattr(m, attr, None)
            if value is not None:
                bounds.append(f"{sign} {value}")
    return f"{shown} ({', '.join(bounds)})" if bounds else shown


def _type_name(ann: Any) -> str:
    """A type as a config reader reads it: ``int``, ``float | None``, ``'vllm' | 'sarathi'``, ``list[float]``."""
    import types
    import typing

    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if ann is None or ann is type(None):
        return "None"
    if origin is typing.Union or origin is types.UnionType:
        return " | ".join(_type_name(a) for a in args)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is not None:
        name = getattr(origin, "__name__", None) or repr(origin).replace("typing.", "")
        return f"{name}[{', '.join('...' if a is Ellipsis else _type_name(a) for a in args)}]" if args else name
    if isinstance(ann, type):
        return ann.__name__
    return repr(ann).replace("typing.", "")


def _default_of(field: Any) -> str:
    """A field's default as a YAML config writes it (``null``, ``true``, ``512``, ``sarathi``)."""
    import json

    from pydantic_core import PydanticUndefined, to_jsonable_python

    if field.default_factory is not None:
        try:
            value = field.default_factory()
        except TypeError:  # (a factory taking the validated data)
            return "(computed)"
    elif field.default is PydanticUndefined:
        return "(required)"
    else:
        value = field.default
    try:
        plain = to_jsonable_python(value)
    except Exception:  # noqa: BLE001  (a default pydantic cannot show as JSON: its repr)
        return repr(value)
    return plain if isinstance(plain, str) else json.dumps(plain)


def _field_comments(settings: type) -> dict[str, str]:
    """The comments of each field in the ``Settings`` class's source: the comment block directly above it (no
    blank line between) and the comment on its line(s) (``by: str = "x"  # what it counts``); none when the
    source cannot be read.

    Comment-only lines after a field's trailing comment go on that comment when they are its sentence wrapped
    (``_wrapped``: its line full and they go on mid-sentence) or when no field follows directly (a blank line,
    the class's end) or the next field has a ``description``; otherwise they sit above the next field and are
    that field's (``chunk_size: int = 512  # sarathi: ...`` then ``# vllm: a prompt longer ...`` above
    ``long_prompts``)."""
    import ast
    import inspect
    import io
    import textwrap
    import tokenize

    try:
        raw = inspect.getsource(settings)
    except (OSError, TypeError):
        return {}
    source = textwrap.dedent(raw)
    indent = len(raw.splitlines()[0]) - len(source.splitlines()[0])  # (line widths as written, for _wrapped)
    try:
        body = ast.parse(source).body[0].body
        comments = {tok.start[0]: tok.string.lstrip("#").strip()
                    for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    except (SyntaxError, tokenize.TokenError, IndexError, AttributeError):
        return {}
    lines = source.splitlines()

    def comment_only(n: int) -> bool:
        return n in comments and lines[n - 1].lstrip().startswith("#")

    fields = [node for node in body if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)]
    described = {name for name, f in (getattr(settings, "model_fields", None) or {}).items() if f.description}
    owner: dict[int, str] = {}  # comment-only line -> the field it sits directly above
    for node in fields:
        if node.target.id in described:  # (its description says what it is: a block above is the last one's)
            continue
        n = node.lineno - 1
        while n >= 1 and comment_only(n):
            owner[n] = node.target.id
            n -= 1
    own: dict[str, list[int]] = {}  # each field's lines of its own comment (on its line, and run on from there)
    for node in fields:
        end = node.end_lineno or node.lineno
        own[node.target.id] = [n for n in range(node.lineno, end + 1) if n in comments]
        block, n = [], end + 1
        while own[node.target.id] and comment_only(n):
            block.append(n)
            n += 1
        if block and (block[0] not in owner or _wrapped(lines[end - 1], comments[block[0]], indent)):
            own[node.target.id] += block  # (the trailing comment goes on: not the next field's)
            for b in block:
                owner.pop(b, None)
    found = {}
    for node in fields:
        name = node.target.id
        text = [comments[n] for n in sorted(n for n, o in owner.items() if o == name)] + [comments[n] for n in own[name]]
        if text:
            found[name] = " ".join(text)
    return found


#: The width the source's comments wrap at. A trailing comment runs on to the comment-only lines under it when
#: its line is within ``WRAP_SLACK`` of this (full: the next word went to the next line) and they go on
#: mid-sentence (not a capital); a shorter line's comment ended there.
WRAP_WIDTH = 120
WRAP_SLACK = 20


def _wrapped(line: str, following: str, indent: int) -> bool:
    """Whether ``line``'s trailing comment runs on to the ``following`` comment-only line (its sentence wrapped),
    rather than ``following`` starting a comment of its own."""
    full = indent + len(line.rstrip()) >= WRAP_WIDTH - WRAP_SLACK
    return full and not following[:1].isupper()
