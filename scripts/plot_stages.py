"""Plot the loss logs of a model trained in stages back to back (the default model's loss.png).

    python scripts/plot_stages.py src/mats/resources/default_model

Reads FOLDER/log-stage1.csv, log-stage2.csv, ... (each stage's run folder log.csv, copied there)
and writes FOLDER/loss.png.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path


def main(folder: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logs = sorted(Path(folder).glob("log-stage*.csv"), key=lambda p: int(p.stem.removeprefix("log-stage")))
    if not logs:
        raise SystemExit(f"no log-stage*.csv in {folder}")
    fig, ax = plt.subplots(figsize=(7, 3.8), dpi=120)
    offset = 0
    for k, log in enumerate(logs):
        with open(log, newline="") as f:
            rows = list(csv.DictReader(f))
        train = [(offset + int(r["step"]), float(r["loss"])) for r in rows if r["loss"]]
        held = [(offset + int(r["step"]), float(r["held_out_loss"])) for r in rows if r["held_out_loss"]]
        name = log.stem.removeprefix("log-")
        ax.plot(*zip(*train), lw=0.7, alpha=0.6, color=f"C{k}", label=f"{name} train")
        ax.plot(*zip(*held), "o-", lw=1.5, color=f"C{k}", label=f"{name} held-out")
        offset = max(s for s, _ in train + held)
    ax.set_xlabel("optimizer step (batch 16), stages back to back")
    ax.set_ylabel("answer-token cross-entropy")
    ax.set_title("Default model: text-only training on 2 CPU cores")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(Path(folder) / "loss.png")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "src/mats/resources/default_model")
