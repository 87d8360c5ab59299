"""`controlplane keys ...`: API keys for the daemon's inference endpoints (``auth.api_keys``)."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from controlplane.cli.common import out

app = typer.Typer(help="API keys of the daemon's inference endpoints (the config holds only their SHA-256).",
                  no_args_is_help=True)


def _entry(digest: str, tenant: str) -> str:
    return f"auth:\n  api_keys:\n    - {{sha256: {digest}, tenant: {tenant}}}"


@app.command()
def new(tenant: Annotated[str, typer.Argument(help="The tenant the key's requests are attributed to.")]) -> None:
    """Make a random key: prints the key (give it to the client, once) and the config entry."""
    from controlplane.live.api_keys import hash_key, new_key

    key = new_key()
    typer.echo(f"key (shown once, not stored anywhere): {key}")
    typer.echo("config entry:\n" + _entry(hash_key(key), tenant))


@app.command("hash")
def hash_(
    tenant: Annotated[str, typer.Argument(help="The tenant the key's requests are attributed to.")],
    key: Annotated[Optional[str], typer.Option(help="The key; read from standard input when omitted "
                                               "(keeps it out of the shell history).")] = None,
) -> None:
    """Print the config entry of an existing key (its SHA-256 and tenant)."""
    from controlplane.live.api_keys import hash_key

    key = key if key is not None else sys.stdin.readline().strip()
    if not key:
        out.print("[red]error:[/red] no key given (--key or one line on standard input)")
        raise typer.Exit(2)
    typer.echo(_entry(hash_key(key), tenant))
