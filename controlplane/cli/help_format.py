"""``--help`` that fits the terminal: typer's rich panels where every option's names and type fit beside a help
column of at least `HELP_MIN_WIDTH` characters; click's plain layout otherwise (an 80-column terminal for most
commands), whose option names and types are never cut and whose help text wraps beside them or below a long one.

typer's rich options table shares a narrow terminal out among its five or six columns: ``sim replay --help`` at
80 columns cut ``--max-prompt-tokens`` to ``--max-prompt-tok…``, its metavar ``clumped|shuffled|shifted`` and
the defaults in its help (``$CONTROLPLANE_STO…``), with no way to set its columns' widths.
"""

from __future__ import annotations

from typing import Any

__all__ = ["HELP_MIN_WIDTH", "install", "rich_help_fits"]

#: The narrowest help column the rich panels are used with (a URL or path in a help text is ~30 characters).
HELP_MIN_WIDTH = 36
#: A rich options panel's width besides its columns' text: the panel's borders and padding (4), then each
#: column's padding (2; the first and last columns' outer ones included).
_PANEL_CHROME = 4
_COLUMN_PADDING = 2


def rich_help_fits(command: Any, ctx: Any, width: int) -> bool:
    """Whether typer's rich help of ``command`` fits ``width`` columns: its options' and arguments' names and
    types whole, beside a help column of `HELP_MIN_WIDTH`."""
    from typer.core import TyperArgument

    columns = [0, 0, 0, 0, 0]  # long names, short names, --no- names, their short ones, type (as typer's panel)
    for param in command.get_params(ctx):
        if getattr(param, "hidden", False):
            continue
        names = [param.display_name_raw] if isinstance(param, TyperArgument) else list(param.opts)
        secondary = list(getattr(param, "secondary_opts", ()))
        shown = getattr(param, "display_type_rich", None)
        kind = (shown(ctx=ctx) if shown is not None else None) or ""
        ranged = getattr(param, "_get_number_range_help_str", lambda: "")()
        for j, text in enumerate((",".join(n for n in names if n.startswith("--")),
                                  ",".join(n for n in names if not n.startswith("--")),
                                  ",".join(n for n in secondary if n.startswith("--")),
                                  ",".join(n for n in secondary if not n.startswith("--")),
                                  f"{kind} [{ranged}]" if ranged else kind)):
            columns[j] = max(columns[j], len(text))
    used = sum(w + _COLUMN_PADDING for w in columns if w) + _PANEL_CHROME + 1  # (+1: the required-mark column)
    return used + HELP_MIN_WIDTH + _COLUMN_PADDING <= width


def unwrapped(text: str | None) -> str | None:
    """A docstring's paragraphs each on one line (their line breaks made spaces; ``\b`` blocks, click's
    verbatim mark, kept as written): typer's rich help keeps a docstring's line breaks, which then broke its
    sentences mid-line ("... A crashed run's requests," and "completed and ..." on the next line). RST's
    double backquotes (``--preset``) are shown as one (`--preset`), as the other help texts write it."""
    if not text:
        return text
    import inspect

    paragraphs = inspect.cleandoc(text).replace("``", "`").split("\n\n")  # (``literal``: a docstring's RST)
    return "\n\n".join(p if p.startswith("\b") else " ".join(line.strip() for line in p.splitlines())
                       for p in paragraphs)


def _help_on_one_flow(rich_utils: Any) -> None:
    """An option's help, its default and its env var as one text in typer's rich panels (typer sets them side by
    side as rich ``Columns``: after a help of more than a line, ``[default: small]`` stood alone on the line below,
    as if it were another option's)."""
    from rich.columns import Columns
    from rich.text import Text

    made = rich_utils._get_parameter_help
    if getattr(made, "one_flow", False):
        return

    def _get_parameter_help(**kwargs: Any) -> Any:
        found = made(**kwargs)
        items = getattr(found, "renderables", None)
        if isinstance(found, Columns) and items and all(isinstance(i, Text) for i in items):
            return Text(" ").join(items)
        return found

    _get_parameter_help.one_flow = True  # type: ignore[attr-defined]
    rich_utils._get_parameter_help = _get_parameter_help


def install() -> None:
    """Make every typer command's and group's ``--help`` fit the terminal (once per process)."""
    from typer import core

    if core.HAS_RICH:
        from typer import rich_utils

        _help_on_one_flow(rich_utils)

    for cls in (core.TyperCommand, core.TyperGroup):
        rich = cls.format_help
        if getattr(rich, "fits_terminal", False):
            continue

        def format_help(self: Any, ctx: Any, formatter: Any, rich: Any = rich, cls: Any = cls) -> None:
            for command in (self, *getattr(self, "commands", {}).values()):  # (a group lists its commands' help)
                command.help = unwrapped(command.help)
            if self.rich_markup_mode is not None and core.HAS_RICH:
                from typer import rich_utils

                if not rich_help_fits(self, ctx, rich_utils._get_rich_console().width):
                    return super(cls, self).format_help(ctx, formatter)  # click's own layout
            return rich(self, ctx, formatter)

        format_help.fits_terminal = True  # type: ignore[attr-defined]
        cls.format_help = format_help  # type: ignore[method-assign]
