"""`controlplane plugins ...`: what is installed, and what one plugin's settings are."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from controlplane.cli.common import console, out, user_errors

app = typer.Typer(help="Installed plugins.", no_args_is_help=True)

#: What the two "enabled by" columns mean: two defaults a user meets, which differ (the bundled run config scales
#: with `slo-planner`, the library's default set keeps fixed replicas).
CAPTION = ("default: enabled when a config does not set plugins.enabled (the daemon, load_config(None)); "
           "replay: enabled by the bundled run config sim/data/default_replay.yaml, which `controlplane sim replay` "
           "uses without --config")


def _bundled_replay_plugins() -> list[str]:
    """The plugins the bundled run config enables: what `controlplane sim replay` runs without --config."""
    from controlplane.config_files import read_config_file
    from sim.traces.bundled import bundled_default_config_path

    return list(read_config_file(bundled_default_config_path()).get("plugins", {}).get("enabled", []))


@app.command("list")
def list_() -> None:
    """List installed plugins: name, distribution, version, hooks, whether the library's default config and the
    bundled `sim replay` config enable it, and what it does (`plugins show NAME`: its settings).

    A plugin that cannot be loaded (its module fails to import, its entry point is named unlike it) is listed as such, its error is printed on stderr, and the command exits with status 2.
    """
    from controlplane.config import DEFAULT_PLUGINS
    from controlplane.errors import PluginError
    from controlplane.plugin_manager import discover_plugins

    with user_errors():
        found = discover_plugins(refresh=True)
        replay = _bundled_replay_plugins()
    t = Table(header_style="bold", caption=CAPTION, caption_justify="left")
    t.add_column("name", no_wrap=True)  # what a config lists: never cut, even in a narrow terminal
    for col in ("distribution", "version", "hooks", "default", "replay", "description"):
        t.add_column(col)
    broken: list[str] = []
    for name in sorted(found):
        p = found[name]
        try:
            hooks, doc = ", ".join(p.hooks), p.doc
        except PluginError as exc:
            broken.append(str(exc))
            hooks, doc = "-", "failed to load (error below)"
        # (cells are text, not rich markup: a description's "within [min, max]" is shown as written)
        t.add_row(*(escape(str(cell)) for cell in (name, p.dist or "-", p.version or "-", hooks,
                                                   "yes" if name in DEFAULT_PLUGINS else "",
                                                   "yes" if name in replay else "", doc)))
    out.print(t)
    for message in broken:
        console("err").print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False)
    if broken:
        raise typer.Exit(2)


@app.command("show")
def show(name: Annotated[str, typer.Argument(help="The plugin's name, as `plugins list` shows it.")]) -> None:
    """Show one installed plugin: what it does, its hooks, and each of its settings with its type (and bounds),
    its default and its description: what a run config may give under plugins.settings.NAME.

    An unknown name, or a plugin that cannot be loaded, is an error (exit status 2).
    """
    from controlplane.errors import ConfigError, did_you_mean
    from controlplane.plugin_manager import discover_plugins

    with user_errors():
        found = discover_plugins(refresh=True)
        info = found.get(name)
        if info is None:
            raise ConfigError(f"unknown plugin {name!r}{did_you_mean(name, found)}; `controlplane plugins list` "
                              "shows the installed ones")
        target = info.target  # (a PluginError when it cannot be loaded: one line, exit 2)
        rows = settings_rows(target)
        hooks, doc = ", ".join(info.hooks), _docstring(target)
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
    out.print(t)


def settings_rows(target: Any) -> list[dict[str, str]]:
    """Each setting of a plugin class's ``Settings``: its name, type (with its bounds), default (as a config
    writes it; ``(required)`` when it has none) and description (the field's ``description``, else the comment
    on its line in the class). A module of hook functions, or a plugin without settings: none."""
    from controlplane.plugin import Plugin

    if not (isinstance(target, type) and issubclass(target, Plugin)):
        return []
    settings = target.Settings
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
    """The comment on each field's line(s) in the ``Settings`` class's source (``by: str = "x"  # what it counts``);
    none when the source cannot be read."""
    import ast
    import inspect
    import io
    import textwrap
    import tokenize

    try:
        source = textwrap.dedent(inspect.getsource(settings))
    except (OSError, TypeError):
        return {}
    try:
        body = ast.parse(source).body[0].body
        comments = {tok.start[0]: tok.string.lstrip("#").strip()
                    for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    except (SyntaxError, tokenize.TokenError, IndexError, AttributeError):
        return {}
    found: dict[str, str] = {}
    code_lines = source.splitlines()
    for node in body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            end = node.end_lineno or node.lineno
            lines = [comments[n] for n in range(node.lineno, end + 1) if n in comments]
            n = end + 1  # a trailing comment goes on over the comment-only lines after it
            while lines and n in comments and code_lines[n - 1].lstrip().startswith("#"):
                lines.append(comments[n])
                n += 1
            if lines:
                found[node.target.id] = " ".join(lines)
    return found
