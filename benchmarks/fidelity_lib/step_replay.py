"""A live run's exact iteration sequence replayed on an in-process engine (no driver, no pipe), each step timed.

    python benchmarks/fidelity_lib/step_replay.py DIR        # DIR: a `diagnose.py --out DIR` run

Every live iteration is run again in the same order on a fresh `CausalLMBackend` in this process:
a prefill of the same requests (the ones the core scheduled with that batch: their prompt and
output lengths, random tokens), or a decode of everything running. Finished requests leave when
their output is done, as live. Per second of the run it prints the live backend time against the
replayed one. Where they agree, the engine's time is the shapes' and nothing else (no hidden state
such as a copy of the batch's cache, no cost of the pipe inside the backend's time); where the live
one is slower, the host took the worker's core then (`host_cpu` shows who). Diagnostic only.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def replay_steps(run_dir: Path, *, threads: int = 1, seed: int = 0) -> list[tuple[float, float, float, int, int]]:
    """(start s, live backend s, replayed s, prefill seqs, decode seqs) per live iteration, in order."""
    from controlplane.live.model_source import WorkerModelSettings
    from controlplane.live.sampling import StopCondition
    from fidelity_lib.profiling import load_backend

    sides = json.loads((run_dir / "sides.json").read_text())
    its = json.loads((run_dir / "live_iterations.json").read_text())
    batches = sides["live"]["batches"]
    if len(batches) != len(its):
        raise SystemExit(f"{run_dir}: {len(batches)} batches but {len(its)} iterations (one iteration per live batch)")
    reqs = sorted(sides["live"]["requests"].items(), key=lambda kv: kv[1]["scheduled"])
    be = load_backend(WorkerModelSettings(preset="tiny-llama", precision="auto", device="cpu", max_seq_len=512,
                                          seed=seed), threads)
    rng = random.Random(seed)
    no_eos = StopCondition(eos_token_ids=())
    for i in range(6):  # warm up, as the live worker was
        be.add_request(f"warm-{i}", [rng.randrange(4, 500) for _ in range(20 + 30 * i)], max_new_tokens=4, stop=no_eos)
    be.step([f"warm-{i}" for i in range(6)])
    while be.num_running:
        be.step((), be.running_ids())
    out, j = [], 0
    for s, b in zip(its, batches):
        if s["num_prefill_seqs"]:
            ids = []
            while j < len(reqs) and reqs[j][1]["scheduled"] == b["t"]:
                rid, r = reqs[j]
                be.add_request(rid, [rng.randrange(4, 500) for _ in range(r["prompt"])], max_new_tokens=r["output"],
                               stop=no_eos)
                ids.append(rid)
                j += 1
            if len(ids) != s["num_prefill_seqs"]:
                raise SystemExit(f"at {s['start']:.3f}s: {len(ids)} requests scheduled, the live prefill had "
                                 f"{s['num_prefill_seqs']}")
            res = be.step(ids, ())
        else:
            res = be.step((), be.running_ids())
        out.append((s["start"], s["iteration_s"], res.duration_s, int(s["num_prefill_seqs"]), int(s["num_decode_seqs"])))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    rows = replay_steps(a.run_dir, threads=a.threads)
    per: dict[int, list[float]] = {}
    for t, live, again, npre, _ in rows:
        acc = per.setdefault(int(t), [0.0, 0.0, 0.0, 0.0])
        acc[0] += live
        acc[1] += again
        if npre:
            acc[2] += live
            acc[3] += again
    print("second: live backend / replayed in process (ratio); of which prefills live / replayed")
    for k, (live, again, pl, pa) in sorted(per.items()):
        print(f"  {k:4d}s {live:6.3f} / {again:6.3f} s ({live / again if again else float('nan'):4.2f}); "
              f"prefills {pl:6.3f} / {pa:6.3f} s")
    tl, ta = sum(r[1] for r in rows), sum(r[2] for r in rows)
    print(f"total: live {tl:.2f} s, replayed {ta:.2f} s ({tl / ta:.2f})")


if __name__ == "__main__":
    main()
