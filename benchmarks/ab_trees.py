"""Warm caption time of two source trees of mats side by side, in one run: did a change move the speed?

    git worktree add /tmp/base <commit>
    python benchmarks/ab_trees.py /tmp/base/src src --rounds 3

Each round runs one fresh process per tree (alternating, so machine load hits both alike) that loads
the default model, warms it up, then times the real clips' captions one clip at a time and all in
one batch. Prints JSON: per tree the median seconds per clip (alone, batched), the ratios new/base,
and whether both trees gave the same captions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

CHILD = r"""
import json, sys, time
from mats.data.sounds import fetch_real_sounds, read_metadata
from mats.pipeline import MATS
folder = fetch_real_sounds()
files = [str(folder / r["file"]) for r in read_metadata(folder)[: int(sys.argv[1])]]
m = MATS.from_pretrained()
m.caption(files[:1])
t0 = time.perf_counter(); alone = [m.caption([f])[0] for f in files]; t_alone = time.perf_counter() - t0
t0 = time.perf_counter(); batched = m.caption(files); t_batch = time.perf_counter() - t0
print(json.dumps({"alone_s_per_clip": t_alone / len(files), "batch_s_per_clip": t_batch / len(files),
                  "captions": alone, "same_in_batch": alone == batched}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("base", help="the base tree's src folder")
    p.add_argument("new", help="the new tree's src folder")
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    runs: dict[str, list[dict]] = {"base": [], "new": []}
    for r in range(args.rounds):
        for name in (("base", "new") if r % 2 == 0 else ("new", "base")):
            src = getattr(args, name)
            env = {**os.environ, "PYTHONPATH": os.path.abspath(src), "TRANSFORMERS_VERBOSITY": "error"}
            out = subprocess.run([sys.executable, "-c", CHILD, str(args.clips)], env=env, capture_output=True,
                                 text=True, check=True)
            runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1} {name}: {runs[name][-1]['alone_s_per_clip']:.3f} s/clip alone", file=sys.stderr)

    def med(name, key):
        return statistics.median(x[key] for x in runs[name])

    result = {"machine": {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine()},
              "clips": args.clips, "rounds": args.rounds}
    for name in runs:
        result[name] = {"alone_s_per_clip_median": round(med(name, "alone_s_per_clip"), 3),
                        "batch_s_per_clip_median": round(med(name, "batch_s_per_clip"), 3)}
    result["ratio_new_over_base"] = {k: round(result["new"][k] / result["base"][k], 3) for k in result["new"]}
    result["same_captions"] = runs["base"][0]["captions"] == runs["new"][0]["captions"]
    result["batch_invariant"] = all(x["same_in_batch"] for v in runs.values() for x in v)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
