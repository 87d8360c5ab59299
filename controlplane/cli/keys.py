"""`controlplane keys ...`: API keys for the daemon's inference endpoints (``auth.api_keys``)."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Optional

import typer

from controlplane.cli import common

app = typer.Typer(help="API keys of the daemon's inference endpoints (the config holds only their SHA-256).",
                  no_args_is_help=True)


def _tenant(value: str) -> str:
    """The tenant without surrounding spaces, as traces, the config's ``auth.api_keys`` and the body's ``user`` read it."""
    if not value.strip():
        raise typer.BadParameter("the tenant must not be empty")
    return value.strip()


TenantArg = Annotated[str, typer.Argument(help="The tenant the key's requests are attributed to.", callback=_tenant, metavar="TENANT")]


def _yaml_scalar(text: str) -> str:
    """``text`` as it can stand in a YAML flow mapping: plain when it reads back as itself, else
    double-quoted (a JSON string is a YAML double-quoted scalar): ``team: a``, ``#ops``, ``a,b``,
    ``yes`` or ``123`` would otherwise break the entry or change type."""
    import yaml

    try:
        if yaml.safe_load(f"{{t: {text}}}") == {"t": text}:
            return text
    except yaml.YAMLError:
        pass
    return json.dumps(text)


def _entry(digest: str, tenant: str) -> str:
    return f"auth:\n  api_keys:\n    - {{sha256: {digest}, tenant: {_yaml_scalar(tenant)}}}"


def _read_key() -> str:
    """The key from standard input: asked for (not echoed) on a terminal, else its first line."""
    if sys.stdin is not None and sys.stdin.isatty():
        return typer.prompt("key", hide_input=True, default="", show_default=False).strip()
    return sys.stdin.readline().strip() if sys.stdin is not None else ""


@app.command()
def new(tenant: TenantArg) -> None:
    """Make a random key: prints the key (give it to the client, once) and the config entry."""
    from controlplane.live.api_keys import hash_key, new_key

    key = new_key()
    typer.echo(f"key (shown once, not stored anywhere): {key}")
    typer.echo("config entry:\n" + _entry(hash_key(key), tenant))


@app.command("hash")
def hash_(
    tenant: TenantArg,
    key: Annotated[Optional[str], typer.Option(help="The key; read from standard input when omitted "
                                               "(keeps it out of the shell history).")] = None,
) -> None:
    """Print the config entry of an existing key (its SHA-256 and tenant)."""
    from controlplane.live.api_keys import hash_key

    key = key if key is not None else _read_key()
    if not key:
        common.err.print("[red]error:[/red] no key given (--key or one line on standard input)")
        raise typer.Exit(2)
    typer.echo(_entry(hash_key(key), tenant))
