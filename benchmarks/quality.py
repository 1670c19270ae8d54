"""Quality gate on real recorded sounds: keyword accuracy of every bridge vs the CLAP zero-shot ceiling.

The set is the project's labelled Debian sound effects (:func:`mats.data.sounds.fetch_real_sounds`, cached
after the first call). For the tasks ``tag`` and ``caption`` the model decodes every clip through
each bridge (none, noise, santa, nearest, projection, shift when the model has a shift vector) and
the score is the keyword accuracy: the fraction of clips whose text mentions the clip's label or
one of its synonyms. The same CLAP's zero-shot top-1 accuracy over all the set's labels, on the same
clips, is the ceiling: the decoder only sees what the CLAP embedding carries.
Two more reference rows show what the text side can carry: the same CLAP's zero-shot pick among
all 521 AudioSet class names (the decoder's own open vocabulary, top-1 and top-5 names joined) and
the Santa-bank training text nearest to each clip's audio embedding, read as is -- what a decoder
that reproduced the closest training text would score.

Decoding uses the task defaults: for tag and caption a beam of 8 whose 8 candidates the CLAP
reranks against the clip's audio; ``--rerank 0`` measures the top beam of 4 alone, as before.

Audio is embedded once and shared by both tasks and all bridges. Prints the results as JSON, then a
Markdown table. With --out, also writes OUT/quality.json, OUT/quality.md and the full runner output
(results.json, report.md, bridges.png) per task in OUT/tag and OUT/caption.

    python benchmarks/quality.py [--model DIR] [--limit N] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

TASKS = ("tag", "caption")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="model folder (default: the offline default model)")
    ap.add_argument("--limit", type=int, help="first N clips of the set")
    ap.add_argument("--out", help="folder for quality.json / quality.md and the per-task reports")
    ap.add_argument("--data", help="sound set folder (default: fetch_real_sounds())")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--beams", type=int, help="beam size (default: per task)")
    ap.add_argument("--rerank", type=int, help="CLAP-scored beam candidates (default: per task; 0 = off)")
    ap.add_argument("--max-new-tokens", type=int, help="answer length limit (default: per task)")
    ap.add_argument("--device", help="cpu, cuda, ... (default: best available)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    if args.rerank is not None and args.rerank < 0:
        ap.error(f"--rerank must be >= 0, got {args.rerank}")

    from mats.evaluation.report import markdown_table
    from mats.evaluation.runner import EvalConfig, Evaluation, _load_mats, load_eval_benchmark, run_eval
    from mats.data.sounds import fetch_real_sounds

    t0 = time.perf_counter()
    data = Path(args.data) if args.data else fetch_real_sounds()
    base = dict(data=data, model=args.model, limit=args.limit, seed=args.seed, batch_size=args.batch_size,
                num_beams=args.beams, max_new_tokens=args.max_new_tokens, rerank=args.rerank, device=args.device,
                ablation=True, sweeps=False, progress=not args.quiet)
    mats = _load_mats(EvalConfig(task="tag", **base))
    bench = load_eval_benchmark(data)
    ev = Evaluation(mats, bench, limit=args.limit, progress=not args.quiet)
    per_task = {}
    for task in TASKS:
        out = Path(args.out) / task if args.out else None
        per_task[task] = run_eval(EvalConfig(task=task, out=out, **base), evaluation=ev)

    bank_text = nearest_bank_text_accuracy(mats, ev)
    open_vocab = open_vocabulary_accuracy(mats, ev)
    first = per_task[TASKS[0]]
    zs = first["zero_shot"]
    bridges = [r["name"] for r in first["ablation"]["runs"] if r["kind"] == "bridge"]
    table: dict[str, dict] = {}
    for b in bridges:
        table[b] = {}
        for task in TASKS:
            r = next(x for x in per_task[task]["ablation"]["runs"] if x["name"] == b)
            table[b][task] = r["metrics"].get("keyword_accuracy") if r["status"] == "ok" else None
            if r["status"] != "ok":
                table[b]["skipped"] = r.get("reason")
    summary = {
        "set": str(data), "model": first["config"]["model"]["folder"],
        "clap": (first["config"]["model"].get("clap") or {}).get("name"),
        "n_clips": first["n_evaluated"], "n_failed": first["n_failed"], "failed": first["failed"],
        "n_labels": len(zs.get("labels") or []),
        "zero_shot_accuracy": zs.get("accuracy"),
        "nearest_bank_text_accuracy": bank_text,
        "open_vocabulary_zero_shot_accuracy": open_vocab,
        "keyword_accuracy": table,
        "decoding": {t: per_task[t]["config"]["decoding"] for t in TASKS},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    header = ["bridge", *[f"{t} keyword acc." for t in TASKS]]
    rows = [["CLAP zero-shot (ceiling)", *[zs.get("accuracy")] * len(TASKS)]]
    for k, acc in (open_vocab or {}).get("top_k", {}).items():
        rows.append([f"CLAP zero-shot among the {open_vocab['classes']} AudioSet classes, top-{k} names "
                     "(reference)", *[acc] * len(TASKS)])
    if bank_text is not None:
        rows.append(["nearest Santa-bank text, no decoder (reference)", *[bank_text] * len(TASKS)])
    rows += [[b if "skipped" not in table[b] else f"{b} (skipped)", *[table[b][t] for t in TASKS]]
             for b in bridges]
    md = (f"Quality gate: {summary['n_clips']} real clips, {summary['n_labels']} labels, CLAP "
          f"{summary['clap']}, model {summary['model']}\n\n" + markdown_table(header, rows))
    md += "".join(f"\n- {b} skipped: {table[b]['skipped']}" for b in bridges if "skipped" in table[b])
    if summary["n_failed"]:
        md += f"\n- {summary['n_failed']} clip(s) could not be read and were excluded"
    md += "\n"

    text = json.dumps(summary, indent=2, default=str)
    print(text)
    print()
    print(md)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "quality.json").write_text(text + "\n")
        (Path(args.out) / "quality.md").write_text(md)
    return 0


def open_vocabulary_accuracy(mats, ev, ks: tuple[int, ...] = (1, 5)) -> dict | None:
    """Keyword accuracy of the CLAP's zero-shot pick among all AudioSet class names, top-k joined.

    The zero-shot ceiling above chooses among the set's own labels; the decoder was trained on
    AudioSet's vocabulary and may name any of its classes. This row is the same CLAP asked the
    decoder's question: which of the classes it was trained on is this? A decoder that named
    exactly the CLAP's k most likely classes would score the top-k value.
    Returns {"classes": n, "top_k": {k: accuracy}}."""
    import numpy as np

    from mats.data.default_corpus import load_labels
    from mats.evaluation.scoring import keyword_hits

    if not len(ev.items):
        return None
    names = [label.name for label in load_labels().values()]
    text = np.asarray(mats.clap.encode_text([f"the sound of {n}" for n in names]), np.float32)
    order = np.argsort(-(ev.embeddings @ text.T), axis=1, kind="stable")
    top_k = {}
    for k in ks:
        hits = keyword_hits(ev.items, [", ".join(names[j] for j in row[:k]) for row in order])
        top_k[k] = sum(hits) / len(hits)
    return {"classes": len(names), "top_k": top_k}


def nearest_bank_text_accuracy(mats, ev) -> float | None:
    """Keyword accuracy of the Santa bank's training text nearest to each clip's audio embedding.

    What the text side can carry at best: a decoder that reproduced the closest training text word
    for word would score this. None when the model folder has no bank texts (santa/texts.txt)."""
    import numpy as np

    from mats.evaluation.scoring import keyword_hits

    texts_file = mats.folder / "santa" / "texts.txt"
    if mats.santa is None or not texts_file.is_file() or not len(ev.items):
        return None
    texts = texts_file.read_text(encoding="utf-8").splitlines()
    if len(texts) != mats.santa.num_entries:
        return None
    nearest = np.argmax(ev.embeddings @ mats.santa.bank.T, axis=1)
    hits = keyword_hits(ev.items, [texts[j] for j in nearest])
    return sum(hits) / len(hits)


if __name__ == "__main__":
    sys.exit(main())
