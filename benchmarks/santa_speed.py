"""The Santa bridge on the shipped default memory, two source trees side by side: import, search, step.

    git worktree add /tmp/base <commit>
    python benchmarks/santa_speed.py /tmp/base/src src --rounds 5 [--out FILE]

Each round runs one fresh process per tree (alternating, so machine load hits both alike). A process
times ``import mats.bridge.bridges`` (its first import: what a fresh ``mats tag`` pays for the
bridge), loads the default model's Santa memory (8,192 MiniLM text rows x 384, 100 clusters), then,
for a batch of 1 and of 64 queries, the medians over ``--repeats`` calls of

* ``search_cluster`` / ``search_exact``: ``SantaMemory.retrieve_indices`` (top 32) in that mode;
* ``santa``: ``apply_bridge(q, "santa", seed=0)``, the whole default step (cluster search, seeded
  noise on the 32 entries, softmax mix).

Queries are real: bank rows with Gaussian noise of std 0.06 per dimension (cosine ~0.6 to their row)
and, for a quarter, plain Gaussian vectors (far from every row); the same 64 in both trees. Prints JSON:
per tree the medians over rounds, the ratios new/base, whether the retrieved indices are identical and
the largest difference between the two trees' Santa outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

from _output import emit  # benchmarks/ is on sys.path when a script runs

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import mats.bridge.bridges as bridges
t_import = time.perf_counter() - t0
import numpy as np
from mats.bridge import SantaMemory
from mats.config import DEFAULT_MODEL
repeats, out_file = int(sys.argv[1]), sys.argv[2]
mem = SantaMemory.load(DEFAULT_MODEL / "santa")
rng = np.random.default_rng(0)
bank = mem.bank
near = bank[rng.choice(len(bank), 48, replace=False)] + rng.normal(0, 0.06, (48, bank.shape[1]))
q = np.concatenate([near, rng.normal(size=(16, bank.shape[1]))]).astype(np.float32)

def median_s(fn):
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    return float(np.median(times))

res = {"import_s": t_import, "torch_imported": "torch" in sys.modules}
for n in (1, 64):
    b = q[:n]
    for mode in ("cluster", "exact"):
        res[f"search_{mode}_b{n}_ms"] = 1e3 * median_s(lambda: mem.retrieve_indices(b, top_l=32, search=mode))
    res[f"santa_b{n}_ms"] = 1e3 * median_s(lambda: bridges.apply_bridge(b, "santa", memory=mem, seed=0))
idx = {m: np.asarray(mem.retrieve_indices(q, top_l=32, search=m)[0]) for m in ("cluster", "exact")}
np.savez(out_file, santa=bridges.apply_bridge(q, "santa", memory=mem, seed=0), **idx)
print(json.dumps(res))
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("base", help="the base tree's src folder")
    p.add_argument("new", help="the new tree's src folder")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=50, help="timed calls per measure and process")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    import numpy as np

    runs: dict[str, list[dict]] = {"base": [], "new": []}
    arrays: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name in (("base", "new") if r % 2 == 0 else ("new", "base")):
                env = {**os.environ, "PYTHONPATH": os.path.abspath(getattr(args, name))}
                npz = os.path.join(tmp, f"{name}.npz")
                out = subprocess.run([sys.executable, "-c", CHILD, str(args.repeats), npz], env=env,
                                     capture_output=True, text=True, check=True)
                runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
                arrays[name] = dict(np.load(npz))
                print(f"round {r + 1} {name}: santa b1 {runs[name][-1]['santa_b1_ms']:.2f} ms", file=sys.stderr)
    keys = [k for k in runs["base"][0] if k.endswith(("_ms", "_s"))]
    result = {"machine": {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine()},
              "memory": "shipped default (8192 x 384, 100 clusters, top_l 32)", "rounds": args.rounds,
              "repeats": args.repeats, "trees": {"base": args.base, "new": args.new}}
    for name in runs:
        result[name] = {k: round(statistics.median(x[k] for x in runs[name]), 4) for k in keys}
        result[name]["torch_imported"] = runs[name][0]["torch_imported"]
    result["ratio_new_over_base"] = {k: round(result["new"][k] / result["base"][k], 3) for k in keys}
    a, b = arrays["base"], arrays["new"]
    result["same_indices"] = {m: bool(np.array_equal(a[m], b[m])) for m in ("cluster", "exact")}
    result["santa_max_abs_diff"] = float(np.abs(a["santa"].astype(np.float64) - b["santa"]).max())
    return emit(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
