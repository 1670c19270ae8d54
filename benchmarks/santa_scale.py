"""Santa memory at scale: build time, memory, per-query time and recall@L against exact search.

For each bank size (default 10 k, 100 k, 1 M rows of 384-d unit vectors) and each kind of bank:

* ``random``: Gaussian rows, normalised (the hard case for any index: no structure);
* ``real``: MiniLM embeddings of real training texts. Embedding a million texts is too slow on this
  machine (~175 texts/s), so the bank is the 8,192 real embeddings stored with the shipped default
  model (``santa.safetensors``: MiniLM embeddings of corpus texts) plus noisy copies of them
  (``normalise(row + 0.6 * g / sqrt(384))``, g Gaussian: cosine ~0.86 to the source, like a
  paraphrase), as many as the size needs. Queries are real rows with fresh noise of the same size
  (not in the bank). It is corpus-like, not a real million-text corpus, and says so in the JSON.

Search modes compared per query (one query at a time, one thread, medians):

* ``exact``: brute force over the bank (torch matmul + top-L);
* ``cluster``: the paper's mode (K = 100 k-means clusters, the nearest cluster only);
* ``auto`` (what ``search="auto"`` picks above ``exact_max_rows``): faiss IVF with 2 sqrt(M) lists,
  for several ``nprobe``; the bank lives only in the index (``bank_copies``: 1).

Recall@L: the fraction of the exact top-L (L = 32) rows that a mode returns, averaged over queries.
Memory: bytes of vectors held (bank or index lists) and the process RSS growth over the build.
Prints JSON; ``--out FILE`` also writes it.

    python benchmarks/santa_scale.py [--sizes 10000,100000,1000000] [--kinds random,real]
                                     [--queries 200] [--nprobe 8,16,24,32,48] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np
from _output import emit  # benchmarks/ is on sys.path when a script runs

D = 384
TOP_L = 32


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def real_rows() -> np.ndarray:
    from safetensors.numpy import load_file

    from mats.pipeline import DEFAULT_MODEL
    return load_file(str(DEFAULT_MODEL / "santa" / "santa.safetensors"))["bank"]


def make_bank(kind: str, size: int, queries: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if kind == "random":
        return unit(rng.standard_normal((size, D), dtype=np.float32)), \
            unit(rng.standard_normal((queries, D), dtype=np.float32))
    real = real_rows()
    bank = np.empty((size, D), np.float32)
    n = min(size, len(real))
    bank[:n] = real[:n]
    for s in range(n, size, 65536):  # noisy copies, in blocks to bound temporary memory
        e = min(size, s + 65536)
        src = real[rng.integers(0, len(real), e - s)]
        bank[s:e] = unit(src + 0.6 * rng.standard_normal((e - s, D), dtype=np.float32) / np.sqrt(D))
    src = real[rng.integers(0, len(real), queries)]
    q = unit(src + 0.6 * rng.standard_normal((queries, D), dtype=np.float32) / np.sqrt(D))
    return bank, q


def per_query_ms(fn, queries: np.ndarray) -> tuple[float, list[np.ndarray]]:
    times, out = [], []
    for q in queries:
        t = time.perf_counter()
        out.append(fn(q[None]))
        times.append(time.perf_counter() - t)
    return round(1000 * statistics.median(times), 3), out


def recall(found: list[np.ndarray], truth: np.ndarray) -> float:
    return round(float(np.mean([len(set(f.ravel().tolist()) & set(t.tolist())) / len(t)
                                for f, t in zip(found, truth, strict=True)])), 4)


def run_one(kind: str, size: int, n_queries: int, nprobes: list[int], seed: int) -> dict:
    import torch

    from mats.bridge.santa import SantaConfig, SantaMemory

    rng = np.random.default_rng(seed)
    bank, queries = make_bank(kind, size, n_queries, rng)
    row: dict = {"kind": kind, "rows": size, "dim": D, "top_l": TOP_L, "queries": n_queries}

    rss0 = rss_bytes()
    t = time.perf_counter()
    mem = SantaMemory.build(bank, SantaConfig(top_l=TOP_L, search="cluster", exact_max_rows=1), normalize=False)
    row["build_kmeans100_s"] = round(time.perf_counter() - t, 2)
    del bank
    exact_ms, exact = per_query_ms(lambda q: mem.retrieve_indices(q, search="exact")[0], queries)
    truth = np.stack([e[0] for e in exact])
    cluster_ms, cluster = per_query_ms(lambda q: mem.retrieve_indices(q, search="cluster")[0], queries)
    row["exact"] = {"ms_per_query": exact_ms, "recall": 1.0}
    row["cluster"] = {"ms_per_query": cluster_ms, "recall": recall(cluster, truth)}
    row["bank_bytes"] = size * D * 4

    rss1 = rss_bytes()
    t = time.perf_counter()
    index = mem._auto_index()  # what the first "auto" query builds
    row["auto_build_s"] = round(time.perf_counter() - t, 2)
    row["auto_lists"] = int(index.nlist)
    row["bank_copies_after_auto_build"] = int(mem._bank is not None) + 1
    row["rss_growth_bytes"] = {"bank_and_kmeans": rss1 - rss0, "auto_index_build": rss_bytes() - rss1}
    row["auto"] = []
    for nprobe in nprobes:
        mem.config.auto_nprobe = nprobe
        ms, found = per_query_ms(lambda q: mem.retrieve_indices(q, search="auto")[0], queries)
        row["auto"].append({"nprobe": nprobe, "ms_per_query": ms, "recall": recall(found, truth)})
    mem = None  # free it before the next size (the lambdas above are done with it)
    torch.set_num_threads(torch.get_num_threads())
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--kinds", default="random,real")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--nprobe", default="8,16,24,32,48")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out")
    args = ap.parse_args(argv)

    from mats import threads
    threads.configure(args.threads)
    import faiss
    import torch

    faiss.omp_set_num_threads(args.threads)
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        for kind in args.kinds.split(","):
            rows.append(run_one(kind, size, args.queries, [int(n) for n in args.nprobe.split(",")], args.seed))
            print(json.dumps(rows[-1]), flush=True)
    result = {"benchmark": "santa_scale", "threads": args.threads, "torch": torch.__version__,
              "faiss": faiss.__version__, "platform": platform.platform(),
              "real_bank": "8,192 MiniLM embeddings of corpus texts (shipped default memory) + noisy copies "
                           "(cosine ~0.86 to their source); queries: real rows with fresh noise",
              "rows": rows}
    return emit(result, args.out, indent=1)


if __name__ == "__main__":
    raise SystemExit(main())
