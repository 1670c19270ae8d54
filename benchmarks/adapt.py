"""Adapting to a new domain from its sound names alone: gain on the domain, forgetting elsewhere.

The **test** packages of the real-sound split stand in for a user's new domain. The domain texts are
written from the split's label vocabulary only (the sorted class names, expanded by
``mats adapt --labels``), never from the clips, their file names or their synonyms. Then:

* ``memory``: ``--steps 0`` (the base memory plus the domain's texts, each in its nearest old cluster,
  behind the gate: a clip sees them only when one is nearer to it than the base texts by ``--gate``);
* ``mixed``: a short fine-tune on a mix of the domain corpus and the base model's own corpus;
* ``domain-only``: the same fine-tune on the domain corpus alone (``--mix 1``; memory as above);
* ``today``: the recipe before ``mats adapt``: ``mats train`` from the default model on the domain
  corpus alone, with the memory the trainer builds from the training texts (the domain's only).

Each is scored on test (the gain) and on dev (the forgetting: the packages the project was tuned on)
with tag keyword accuracy through the evaluation runner, against the base model on the same clips,
and timed (the adaptation itself; evaluation apart). Results: JSON on stdout and in
``--out`` (default ``benchmarks/results/adapt.json``), the benchmark's config beside them; a rerun
with the same settings keeps the rows already measured (rows measured with other settings move to
``superseded``); the base model's scores are reused from the file or remembered by content
(``mats.adapt.evaluate_cached``).

    python benchmarks/adapt.py [--steps 40] [--gate MARGIN|none] [--dtype fast] [--limit N] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _output import emit  # noqa: E402

from mats.adapt import GATE_MARGIN, AdaptConfig  # noqa: E402


@dataclass
class BenchConfig:
    steps: int = 40          # the short fine-tune (both fine-tune rows)
    mix: float = AdaptConfig.mix  # the mixed row's domain share (mats adapt's default)
    batch_size: int = 16
    dtype: str = "fast"      # inference weights for every evaluation (the quality table's setting)
    limit: int | None = None  # first N clips of each split (smoke runs)
    seed: int = 0
    variants: tuple[str, ...] = ("memory", "mixed", "domain-only", "today")
    gate: float | None = GATE_MARGIN  # the domain texts' gate (mats adapt's default; None: no gate)


# The settings each row depends on: a row measured with the same ones is kept by a rerun; one measured
# with others is moved to "superseded" (with its settings), not lost.
ROW_SETTINGS = {"memory": ("dtype", "limit", "seed", "gate"),
                "mixed": ("steps", "mix", "batch_size", "dtype", "limit", "seed", "gate"),
                "domain-only": ("steps", "batch_size", "dtype", "limit", "seed", "gate"),
                "today": ("steps", "batch_size", "dtype", "limit", "seed")}


def row_settings(config: dict, name: str) -> dict:
    return {k: config.get(k) for k in ROW_SETTINGS[name]}


def todays_recipe(cfg: BenchConfig, labels: list[str], tmp: Path, base, splits: dict, before: dict) -> dict:
    """The recipe before `mats adapt`: `mats train` from the default model on the domain's corpus
    alone, the trainer building the Santa memory from the training texts (the domain's only)."""
    import time

    from mats.adapt import compare, evaluate, read_domain
    from mats.config import DEFAULT_MODEL, from_dict, read_model_config
    from mats.data.corpus import write_jsonl
    from mats.model import ModelConfig
    from mats.pipeline import MATS
    from mats.train.config import CorpusSpec, RunConfig, SantaBuild, TrainConfig
    from mats.train.trainer import train

    logging.info("== today's recipe: mats train on the domain alone, %d steps", cfg.steps)
    raw = read_model_config(DEFAULT_MODEL)
    domain = read_domain(AdaptConfig(out=str(tmp / "unused"), labels=",".join(labels), seed=cfg.seed))
    write_jsonl(domain.samples, tmp / "today" / "domain.jsonl")
    t = raw["train"]
    tc = TrainConfig(corpus=[CorpusSpec(str(tmp / "today" / "domain.jsonl"))], out_dir=str(tmp / "today" / "run"),
                     seed=cfg.seed, steps=cfg.steps, batch_size=cfg.batch_size, lr=t["lr"], warmup_steps=5,
                     min_lr_ratio=t["min_lr_ratio"], noise_variance=t["noise_variance"], held_out=32,
                     eval_every=cfg.steps, save_every=10, log_every=1, init_from=str(DEFAULT_MODEL),
                     santa=SantaBuild(**t["santa"]))
    t0 = time.perf_counter()
    final = train(RunConfig(model=from_dict(ModelConfig, raw["model"]), train=tc), progress=True)
    seconds = time.perf_counter() - t0
    model = MATS.from_pretrained(final, dtype=cfg.dtype, clap=base.clap)
    after = {k: evaluate(model, v, limit=cfg.limit, progress=True) for k, v in splits.items()}
    ev = {k: compare(before[k], after[k]) for k in splits}
    return {"steps": cfg.steps, "mix": 1.0, "adapt_seconds": round(seconds, 2),
            "memory_entries": model.santa.num_entries, "domain_rows": len(domain.samples),
            **gain_and_forgetting(ev),
            "test_predictions": after["test"]["predictions"], "dev_predictions": after["dev"]["predictions"]}



def gain_and_forgetting(ev: dict) -> dict:
    """The row's numbers from the before/after comparison of each split: the gain on test, the
    change (forgetting) on dev."""
    test, dev = ev["test"], ev["dev"]
    return {"test_before": test["before"], "test_after": test["after"], "test_gain_points": test["points"],
            "test_won": test["won"], "test_lost": test["lost"],
            "dev_before": dev["before"], "dev_after": dev["after"], "dev_change_points": dev["points"],
            "dev_clips_change": dev["correct_after"] - dev["correct_before"],
            "dev_won": dev["won"], "dev_lost": dev["lost"]}


def why(base, labels: list[str], splits: dict[str, str], gate: float | None) -> dict:
    """What bounds a gain from the domain's words with this CLAP, without the decoder: how often the
    clip's label is among the k domain names nearest to its audio embedding (k = 1 is the CLAP's
    zero-shot among the domain's names), how many of the names the base model's vocabulary (the
    tagger's class names) already holds, and how often the 4 texts a retrieval-augmented model reads in
    its prompt name the clip's label (a synonym counts) with the base memory, the adapted one without
    a gate and (``gate``) with the gate."""
    import numpy as np

    from mats.adapt import adapt_memory
    from mats.bridge.bridges import apply_bridge
    from mats.bridge.retrieval import retrieve_texts
    from mats.data.default_corpus import load_labels
    from mats.data.sounds import read_metadata

    known = {n.lower() for lab in load_labels().values() for n in lab.names}
    texts = [f"The sound of {n}." for n in labels]
    memories = {"base": base.santa, "adapted": adapt_memory(base.santa, base.clap, texts)}
    if gate is not None:
        memories["gated"] = adapt_memory(base.santa, base.clap, texts, gate_margin=gate)
    names = np.asarray(base.clap.encode_text([f"the sound of {n}" for n in labels]), np.float32)
    out = {"domain_names": len(labels), "names_in_base_vocabulary": sum(n.lower() in known for n in labels)}
    for split, folder in splits.items():
        rows = read_metadata(folder)
        emb = base.embed_audio([str(Path(folder) / r["file"]) for r in rows])
        order = np.argsort(-(emb @ names.T), axis=1)
        syn = [[s.lower() for s in r["synonyms"]] for r in rows]
        d = {"clips": len(rows),
             "clips_whose_label_is_a_base_class": sum(r["labels"][0].lower() in known for r in rows)}
        for k in (1, 2, 4):
            d[f"label_among_{k}_nearest_domain_names"] = round(float(np.mean(
                [any(labels[j] in r["labels"] for j in o[:k]) for r, o in zip(rows, order, strict=True)])), 4)
        dec = base.decoding("tags")
        for tag, mem in memories.items():
            # the bridged embedding the prompt's texts are retrieved with, as MATS.bridge makes it
            z = np.concatenate([apply_bridge(emb[i:i + 1], dec.bridge, memory=mem, shift=base.shift, seed=dec.seed)
                                for i in range(len(emb))])
            found = retrieve_texts(mem, z, 4)
            d[f"prompt_texts_name_label_{tag}"] = round(float(np.mean(
                [any(any(x in t.text.lower() for x in sy) for t in row)
                 for sy, row in zip(syn, found, strict=True)])), 4)
            d[f"prompt_texts_from_domain_{tag}"] = round(float(np.mean(
                [sum(t.row >= base.santa.num_entries for t in row) / 4 for row in found])), 4)
        out[split] = d
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=BenchConfig.steps)
    ap.add_argument("--mix", type=float, default=BenchConfig.mix)
    ap.add_argument("--dtype", default=BenchConfig.dtype)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--variants", default=",".join(BenchConfig.variants))
    ap.add_argument("--gate", default=str(BenchConfig.gate), help="the gate's margin, or 'none'")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "adapt.json"))
    args = ap.parse_args()
    cfg = BenchConfig(steps=args.steps, mix=args.mix, dtype=args.dtype, limit=args.limit,
                      variants=tuple(v for v in args.variants.split(",") if v),
                      gate=None if args.gate.lower() == "none" else float(args.gate))
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    from mats.adapt import adapt, evaluate_cached
    from mats.data.sounds import fetch_sound_split, read_metadata
    from mats.pipeline import MATS

    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.is_file() else {}
    settings = asdict(cfg)
    # rows of a file from before the gate were measured without one
    before_gate = {"gate": None} | previous.get("config", {})
    kept, superseded = {}, list(previous.get("superseded", []))
    for name, row in previous.get("rows", {}).items():
        measured = row.get("settings") or row_settings(before_gate, name)
        if name in ROW_SETTINGS and measured == row_settings(settings, name):
            kept[name] = row | {"settings": measured}
        else:
            superseded.append({"name": name, "settings": measured, "row": row})
    same_base = all(before_gate.get(k) == settings[k] for k in ("dtype", "limit"))
    dev, test = fetch_sound_split("dev"), fetch_sound_split("test")
    # The domain's words: the test split's class names, nothing per clip.
    labels = sorted({lab for row in read_metadata(test) for lab in row["labels"]})
    t0 = time.perf_counter()
    base = MATS.from_pretrained(dtype=cfg.dtype)
    load_s = time.perf_counter() - t0
    splits = {"dev": str(dev), "test": str(test)}
    before = (previous.get("_before") if same_base else None) or {
        name: evaluate_cached(base, folder, limit=cfg.limit, progress=True) for name, folder in splits.items()}
    result = {"format": "mats-bench-adapt/1", "config": asdict(cfg) | {"variants": list(cfg.variants)},
              "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
              "domain_labels": labels, "base_load_seconds": round(load_s, 2),
              "base": {k: {f: v[f] for f in ("n", "correct", "accuracy", "seconds")} for k, v in before.items()},
              "rows": kept, "superseded": superseded, "_before": before}
    spec = {"memory": (0, 1.0), "mixed": (cfg.steps, cfg.mix), "domain-only": (cfg.steps, 1.0)}
    with tempfile.TemporaryDirectory(prefix="mats-adapt-bench-") as tmp:
        for name in cfg.variants:
            if name in result["rows"]:
                logging.info("%s: measured already, kept", name)
                continue
            if name == "today":
                result["rows"][name] = todays_recipe(cfg, labels, Path(tmp), base, splits, before) | {
                    "settings": row_settings(settings, name)}
                out.write_text(json.dumps(result, indent=1) + "\n")
                continue
            steps, mix = spec[name]
            logging.info("== %s: %d steps, domain share %g", name, steps, mix)
            report = adapt(AdaptConfig(out=str(Path(tmp) / name), labels=",".join(labels), steps=steps,
                                       mix=mix if steps else AdaptConfig.mix, batch_size=cfg.batch_size,
                                       seed=cfg.seed, dtype=cfg.dtype, gate=cfg.gate),
                           base=base, evals=splits, before=before, progress=True, eval_limit=cfg.limit)
            ev = report["evaluation"]
            result["rows"][name] = {
                "settings": row_settings(settings, name),
                "steps": steps, "mix": mix if steps else None, "adapt_seconds": report["seconds"]["adapt"],
                "memory_added": report["memory"]["added"], "domain_rows": report["domain"]["rows"],
                **gain_and_forgetting(ev),
                "eval_seconds": round(report["_after"]["dev"]["seconds"] + report["_after"]["test"]["seconds"], 1),
                "test_predictions": report["_after"]["test"]["predictions"],
                # which clips changed, by file name (read after the run; never used to write the domain)
                **{f"{split}_{kind}_files": [f for f, b, a in zip(report["_after"][split]["files"],
                                                                 before[split]["hits"], report["_after"][split]["hits"],
                                                                 strict=True)
                                             if (a and not b if kind == "won" else b and not a)]
                   for split in ("dev", "test") for kind in ("won", "lost")},
            }
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=1) + "\n")  # a killed run keeps what it measured
    result["why"] = why(base, labels, splits, cfg.gate)
    # per clip (hits, predictions) of the base model, kept: a rerun with this config reuses it
    result["targets"] = {
        "memory_test_gain_points_min": 3, "fine_tune_test_gain_points_min": 5, "dev_clips_lost_max": 1,
        "met": {n: (r["test_gain_points"] >= (3 if n == "memory" else 5) and r["dev_clips_change"] >= -1)
                for n, r in result["rows"].items() if n in ("memory", "mixed")}}
    Path(str(out.with_suffix("")) + ".config.json").write_text(json.dumps(result["config"], indent=1) + "\n")
    emit(result, str(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
