"""Check latency models against Vidur's recorded runs where a request ran alone.

Two situations isolate the latency model from scheduling:

* TTFT of a request that arrived at an idle replica (scheduling delay 0, no restart):
  Vidur's vLLM scheduler prefills it alone, so TTFT = one prefill iteration;
* TPOT of a request whose whole lifetime overlapped no other request: its decode
  iterations ran at batch size 1, so (e2e - ttft) = sum of output_tokens - 1 decode
  iterations with context prompt, prompt + 1, ..., and Vidur's tpot divides that by
  output_tokens.

Usage: ``python -m sim.latency.validate [--anchors DIR] [--models vidur,roofline,splitwise]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from .base import IterationShape, LatencyModel
from .registry import make_latency_model

DEFAULT_ANCHORS = Path("/work/shared/anchors/vidur")
_SETTINGS = {
    "vidur": dict(model="meta-llama/Llama-2-70b-hf", gpu="a100", tensor_parallel=2, network="a100_pairwise_nvlink"),
    "roofline": dict(model="meta-llama/Llama-2-70b-hf", gpu="a100", tensor_parallel=2),
    "splitwise": dict(model="llama2-70b", gpu="a100-80gb", tensor_parallel=2),
}


def load_run(run_dir: Path) -> pd.DataFrame:
    w = pd.read_csv(run_dir / "workload.csv")
    r = pd.read_csv(run_dir / "vidur_request_metrics.csv")
    return w.merge(r, on="request_id").sort_values("arrival_s").reset_index(drop=True)


def idle_arrivals(df: pd.DataFrame) -> pd.DataFrame:
    return df[(df["scheduling_delay_s"] == 0) & (df["num_restarts"] == 0)]


def isolated_requests(df: pd.DataFrame) -> pd.DataFrame:
    start = df["arrival_s"].to_numpy()
    end = start + df["e2e_s"].to_numpy()
    prev_end = np.concatenate([[-np.inf], np.maximum.accumulate(end)[:-1]])
    next_start = np.concatenate([start[1:], [np.inf]])
    keep = (prev_end < start) & (next_start > end) & (df["output_tokens"].to_numpy() > 1) & (df["num_restarts"].to_numpy() == 0)
    return df[keep]


def compare(model: LatencyModel, df: pd.DataFrame) -> dict[str, float]:
    out: dict[str, float] = {}
    idle = idle_arrivals(df)
    if len(idle):
        pred = np.array([model.iteration_s(IterationShape((int(p),), (0,))) for p in idle["prompt_tokens"]])
        true = idle["ttft_s"].to_numpy()
        rel = pred / true - 1
        out.update(
            ttft_n=len(idle),
            ttft_vidur_p50_s=float(np.median(true)),
            ttft_model_p50_s=float(np.median(pred)),
            ttft_abs_rel_err_p50=float(np.median(np.abs(rel))),
            ttft_abs_rel_err_p90=float(np.percentile(np.abs(rel), 90)),
        )
    iso = isolated_requests(df)
    if len(iso):
        pred = np.array(
            [model.decode_run_s(np.array([int(p)]), int(o) - 1).sum() / int(o) for p, o in zip(iso["prompt_tokens"], iso["output_tokens"])]
        )
        true = iso["tpot_s"].to_numpy()
        rel = pred / true - 1
        out.update(
            tpot_n=len(iso),
            tpot_vidur_p50_s=float(np.median(true)),
            tpot_model_p50_s=float(np.median(pred)),
            tpot_abs_rel_err_p50=float(np.median(np.abs(rel))),
            tpot_abs_rel_err_p90=float(np.percentile(np.abs(rel), 90)),
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--anchors", type=Path, default=DEFAULT_ANCHORS)
    ap.add_argument("--models", default="vidur,roofline,splitwise")
    args = ap.parse_args(argv)
    runs = sorted(p for p in args.anchors.iterdir() if (p / "vidur_request_metrics.csv").exists())
    if not runs:
        ap.error(f"no anchor runs under {args.anchors}")
    for name in args.models.split(","):
        model = make_latency_model(name, **_SETTINGS.get(name, {}))
        print(f"== {model!r}")
        for run in runs:
            stats = compare(model, load_run(run))
            parts = []
            if "ttft_n" in stats:
                parts.append(
                    f"TTFT idle n={stats['ttft_n']:4d} p50 vidur {stats['ttft_vidur_p50_s']:.4f}s model {stats['ttft_model_p50_s']:.4f}s "
                    f"|err| p50 {stats['ttft_abs_rel_err_p50']:.2%} p90 {stats['ttft_abs_rel_err_p90']:.2%}"
                )
            if "tpot_n" in stats:
                parts.append(
                    f"TPOT alone n={stats['tpot_n']:4d} p50 vidur {stats['tpot_vidur_p50_s']:.4f}s model {stats['tpot_model_p50_s']:.4f}s "
                    f"|err| p50 {stats['tpot_abs_rel_err_p50']:.2%} p90 {stats['tpot_abs_rel_err_p90']:.2%}"
                )
            print(f"  {run.name:24s} " + ("\n  " + " " * 25).join(parts or ["no isolated requests"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
