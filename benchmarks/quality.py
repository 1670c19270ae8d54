"""Quality on real recorded sounds, dev and test side by side: every bridge of every model, with and
without the CLAP's reranking, against the CLAP's own zero-shot accuracy.

The sets are the project's labelled Debian sound effects split **by package**
(:func:`mats.data.sounds.fetch_sound_split`): every setting of the project is chosen on ``dev``;
``test`` holds packages nothing was tuned on, and is the number to quote.

For the tasks ``tag`` and ``caption`` each model decodes every clip through each bridge (none, noise,
santa, nearest, projection, shift when the model has a shift vector) with a beam of 8 and keeps all 8
candidates: "rerank" is the candidate the CLAP judges closest to the clip's audio (the default
decoding), "top beam" is the first of the same 8. The score is keyword accuracy: the fraction of
clips whose text mentions the clip's label or one of its synonyms. Reference rows:

* the CLAP's zero-shot top-1 accuracy among the split's labels: what the embedding carries;
* the CLAP's zero-shot pick among all 521 AudioSet class names (the decoder's own open vocabulary),
  top-1 and top-5 names joined;
* per model, the Santa-bank training text nearest to each clip's audio embedding, read as is.

Models are given as ``--model NAME=DIR`` (default: the shipped default model). A retrieval-augmented
model (``model.retrieval.k > 0``) is decoded with its retrieved texts in the prompt; the table says
which models retrieve. ``chosen_on_dev`` names the model with the best dev mean of tag and caption
keyword accuracy on the default path (santa bridge, rerank).

Decoded candidates are stored under ``OUT/decoded/`` as they finish: an interrupted run resumes
where it stopped. Prints the results as JSON, then a Markdown table; with ``--out`` also writes
``quality.json``, ``quality.md`` and ``quality.png`` there.

    python benchmarks/quality.py [--model NAME=DIR ...] [--splits dev,test] [--runtime onnx|torch] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _output import emit

TASKS = ("tag", "caption")
PROMPT_TASK = {"tag": "tags", "caption": "caption"}
CANDIDATES = 8


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", metavar="NAME=DIR",
                    help="a model to measure (repeatable; default: default=<the shipped default model>)")
    ap.add_argument("--splits", default="dev,test", help="comma-separated splits (default: dev,test)")
    ap.add_argument("--data", action="append", metavar="SPLIT=DIR",
                    help="a sound-set folder for a split instead of fetch_sound_split(SPLIT)")
    ap.add_argument("--bridges", help="comma-separated bridges (default: every bridge each model can run)")
    ap.add_argument("--limit", type=int, help="first N clips of each split (smoke runs)")
    ap.add_argument("--out", help="folder for quality.json / quality.md / quality.png and the decode store")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--dtype", help="LLM weights: fp32, bf16, fast (default: the library's default)")
    ap.add_argument("--device", help="cpu, cuda, ... (default: best available)")
    ap.add_argument("--runtime", choices=("auto", "onnx", "torch"),
                    help="inference engine (default: $MATS_RUNTIME or auto: ONNX Runtime on a CPU)")
    ap.add_argument("--threads", type=int, help="CPU threads (default: the cores available)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)

    from mats.evaluation.adapters import load_eval_benchmark
    from mats.evaluation.runner import Evaluation
    from mats.pipeline import DEFAULT_MODEL, MATS

    t0 = time.perf_counter()
    models = dict(_pair(m, "--model") for m in (args.model or [f"default={DEFAULT_MODEL}"]))
    data = dict(_pair(d, "--data") for d in (args.data or []))
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    store = Path(args.out) / "decoded" if args.out else None

    loaded = {name: MATS.from_pretrained(folder, device=args.device, dtype=args.dtype, threads=args.threads,
                                         runtime=args.runtime)
              for name, folder in models.items()}
    first = next(iter(loaded.values()))
    for name, m in loaded.items():
        if m.clap.fingerprint() != first.clap.fingerprint():
            ap.error(f"model {name} uses another CLAP ({m.clap.fingerprint()}); the models of one table "
                     "must share the CLAP (the audio is embedded once)")

    summary: dict = {"dtype": args.dtype or "default", "runtime": {n: m.runtime for n, m in loaded.items()},
                     "models": {name: {"folder": str(folder), "retrieval_k": loaded[name].model.config.retrieval.k}
                                for name, folder in models.items()},
                     "clap": first.clap.name, "candidates": CANDIDATES, "splits": {}}
    for split in splits:
        if split in data:
            folder = Path(data[split])
        else:
            from mats.data.sounds import fetch_sound_split
            folder = fetch_sound_split(split)
        ev = Evaluation(first, load_eval_benchmark(folder), limit=args.limit, progress=not args.quiet)
        zs = ev.zero_shot()
        meta = [it.meta for it in ev.items]
        out = {"set": str(folder), "n_clips": len(ev.items), "n_failed": len(ev.failed), "failed": ev.failed,
               "packages": sorted({str(x.get("source")) for x in meta if x.get("source")}),
               "n_labels": len(zs.get("labels") or []), "zero_shot_accuracy": zs.get("accuracy"),
               "open_vocabulary_zero_shot_accuracy": open_vocabulary_accuracy(first, ev), "models": {}}
        for name, m in loaded.items():
            bridges = _bridges(m, args.bridges)
            row = {"nearest_bank_text_accuracy": nearest_bank_text_accuracy(m, ev), "bridges": {}}
            for bridge in bridges:
                row["bridges"][bridge] = {}
                for task in TASKS:
                    groups = _decode(m, ev, name, split, task, bridge, args, store)
                    picked = m.rerank(ev.embeddings, groups) if groups else []
                    row["bridges"][bridge][task] = {
                        "rerank": _accuracy(ev.items, picked),
                        "top_beam": _accuracy(ev.items, [g[0] for g in groups]),
                    }
            out["models"][name] = row
        summary["splits"][split] = out
    if "dev" in summary["splits"]:
        dev = summary["splits"]["dev"]["models"]
        scores = {n: _default_path(r) for n, r in dev.items() if _default_path(r) is not None}
        summary["chosen_on_dev"] = max(scores, key=scores.get) if scores else None
        summary["dev_default_path_mean"] = scores
    summary["seconds"] = round(time.perf_counter() - t0, 1)

    md = markdown(summary)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
    emit(summary, args.out and Path(args.out) / "quality.json")
    print()
    print(md)
    if args.out:
        (Path(args.out) / "quality.md").write_text(md)
        plot(summary, Path(args.out) / "quality.png")
    return 0


def _pair(text: str, option: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise SystemExit(f"{option} takes NAME=VALUE, got {text!r}")
    return name, value


def _bridges(m, wanted: str | None) -> list[str]:
    can = list(m.bridges)
    if not wanted:
        return can
    return [b for b in (w.strip() for w in wanted.split(",")) if b in can]


def _decode(m, ev, name: str, split: str, task: str, bridge: str, args, store: Path | None) -> list[list[str]]:
    """The 8 best beams per clip, from the store when an earlier run decoded them already."""
    from tqdm import tqdm

    key = f"{name}-{m.runtime}-{split}-{task}-{bridge}-seed{args.seed}-n{len(ev.items)}"
    path = store / f"{key}.json" if store else None
    files = [str(it.file) for it in ev.items]
    if path is not None and path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("files") == files:
            return saved["candidates"]
    groups: list[list[str]] = []
    bs = args.batch_size
    with tqdm(total=len(files), desc=f"{name} {split} {task} {bridge}", unit="clip", disable=args.quiet,
              dynamic_ncols=True, file=sys.stderr) as bar:
        for i in range(0, len(files), bs):
            groups.extend(m.candidates(ev.embeddings[i:i + bs], PROMPT_TASK[task], k=CANDIDATES, bridge=bridge,
                                       seed=args.seed, batch_size=bs))
            bar.update(min(bs, len(files) - i))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"files": files, "candidates": groups}))
        tmp.replace(path)
    return groups


def _accuracy(items, texts) -> float | None:
    from mats.evaluation.scoring import keyword_hits

    hits = keyword_hits(items, texts) if items else []
    return sum(hits) / len(hits) if hits else None


def _default_path(row: dict) -> float | None:
    santa = row["bridges"].get("santa")
    if not santa:
        return None
    return (santa["tag"]["rerank"] + santa["caption"]["rerank"]) / 2


def markdown(summary: dict) -> str:
    """One row per reference and per (model, bridge); per split and task a cell "rerank / top beam"
    in percent (reference rows: one number)."""
    from mats.evaluation.report import markdown_table

    splits = list(summary["splits"])
    header = ["row"] + [f"{s} {t}" for s in splits for t in TASKS]

    def pct(x) -> str:
        return "–" if x is None else f"{100 * x:.1f}"

    def cells(fn):
        return [fn(summary["splits"][s], t) for s in splits for t in TASKS]

    rows = [["CLAP zero-shot among the split's labels (ceiling)",
             *cells(lambda sp, t: pct(sp["zero_shot_accuracy"]))]]
    for k in (1, 5):
        rows.append([f"CLAP zero-shot among the AudioSet class names, top-{k} (reference)",
                     *cells(lambda sp, t, k=k: pct(_top_k(sp, k)))])
    for name, info in summary["models"].items():
        label = f"{name} (retrieval k={info['retrieval_k']})" if info["retrieval_k"] else name
        rows.append([f"{label}: nearest Santa-bank text, no decoder (reference)",
                     *cells(lambda sp, t, name=name: pct(sp["models"][name]["nearest_bank_text_accuracy"]))])
        bridges = list(next(iter(summary["splits"].values()))["models"][name]["bridges"])
        for bridge in bridges:
            rows.append([f"{label}: {bridge}", *cells(
                lambda sp, t, name=name, bridge=bridge: " / ".join(pct(sp["models"][name]["bridges"][bridge][t][b])
                                         for b in ("rerank", "top_beam")))])
    lines = [f"Keyword accuracy (%) on real recorded sounds split by Debian package; CLAP {summary['clap']}. "
             f"Model rows: rerank / top beam ({summary['candidates']} beams per clip; rerank is the CLAP's "
             "pick among them, the default decoding; top beam is the first).", ""]
    for s in splits:
        sp = summary["splits"][s]
        lines.append(f"- {s}: {sp['n_clips']} clips, {sp['n_labels']} labels, packages {', '.join(sp['packages'])}"
                     + (f"; {sp['n_failed']} unreadable clip(s) excluded" if sp["n_failed"] else ""))
    if summary.get("chosen_on_dev"):
        lines.append(f"- chosen on dev (santa + rerank, mean of tag and caption): **{summary['chosen_on_dev']}**")
    return "\n".join(lines) + "\n\n" + markdown_table(header, rows) + "\n"


def _top_k(split: dict, k: int) -> float | None:
    top = (split["open_vocabulary_zero_shot_accuracy"] or {}).get("top_k") or {}
    return top.get(k, top.get(str(k)))  # int keys in memory, strings once read back from JSON


def plot(summary: dict, png: Path) -> None:
    """Tag keyword accuracy (rerank) per bridge and model, dev beside test, zero-shot as lines."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    splits = list(summary["splits"])
    names = list(summary["models"])
    fig, axes = plt.subplots(1, len(splits), figsize=(5.5 * len(splits), 3.8), dpi=120, sharey=True, squeeze=False)
    for ax, split in zip(axes[0], splits, strict=True):
        sp = summary["splits"][split]
        bridges = list(sp["models"][names[0]]["bridges"])
        x = np.arange(len(bridges))
        width = 0.8 / max(1, len(names))
        for j, name in enumerate(names):
            vals = [sp["models"][name]["bridges"].get(b, {}).get("tag", {}).get("rerank") or 0 for b in bridges]
            ax.bar(x + (j - (len(names) - 1) / 2) * width, vals, width, label=name)
        if sp["zero_shot_accuracy"] is not None:
            ax.axhline(sp["zero_shot_accuracy"], color="k", ls="--", lw=1, label="CLAP zero-shot")
        ax.set_xticks(x, bridges, rotation=30)
        ax.set_title(f"{split}: {sp['n_clips']} clips")
        ax.set_ylabel("tag keyword accuracy")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def open_vocabulary_accuracy(mats, ev, ks: tuple[int, ...] = (1, 5)) -> dict | None:
    """Keyword accuracy of the CLAP's zero-shot pick among all AudioSet class names, top-k joined.

    The zero-shot ceiling chooses among the split's own labels; the decoder was trained on AudioSet's
    vocabulary and may name any of its classes. A decoder that named exactly the CLAP's k most
    likely classes would score the top-k value. Returns {"classes": n, "top_k": {k: accuracy}}."""
    import numpy as np

    from mats.data.default_corpus import load_labels

    if not len(ev.items):
        return None
    names = [label.name for label in load_labels().values()]
    text = np.asarray(mats.clap.encode_text([f"the sound of {n}" for n in names]), np.float32)
    order = np.argsort(-(ev.embeddings @ text.T), axis=1, kind="stable")
    return {"classes": len(names),
            "top_k": {k: _accuracy(ev.items, [", ".join(names[j] for j in row[:k]) for row in order]) for k in ks}}


def nearest_bank_text_accuracy(mats, ev) -> float | None:
    """Keyword accuracy of the Santa bank's training text nearest to each clip's audio embedding,
    read as is: what a decoder that reproduced the closest training text would score. None when the
    model has no bank texts."""
    if mats.santa is None or mats.santa.texts is None or not len(ev.items):
        return None
    return _accuracy(ev.items, [row[0]["text"] for row in mats.retrieved(ev.embeddings, top_k=1)])


if __name__ == "__main__":
    sys.exit(main())
