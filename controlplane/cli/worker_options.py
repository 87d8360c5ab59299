"""Command-line options that choose the live worker's model, shared by the commands that start
workers (`controlplane daemon`, `controlplane live-replay`)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

__all__ = ["CpuThreadsOpt", "ModelPathOpt", "PrecisionOpt", "PresetOpt"]

PresetOpt = Annotated[
    Optional[str], typer.Option(help="Random-weight model preset: tiny-llama, small-llama, medium-llama.")]
ModelPathOpt = Annotated[Optional[str], typer.Option(help="Local Hugging Face model directory.")]
PrecisionOpt = Annotated[
    Optional[str], typer.Option(help="fp32 | bf16 | fp16 | int8 | nf4 (default: fp32 on CPU, bf16 on a GPU that has it, else fp16).")]
CpuThreadsOpt = Annotated[
    Optional[int], typer.Option(min=1, help="torch threads per CPU worker (default: cores / workers).")]
