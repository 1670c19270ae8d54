"""Choosing the gate of `mats adapt --steps 0` on the dev split only, without the decoder.

The gate (``SantaConfig.gate_from`` / ``gate_margin``) lets a clip see the domain's texts only when
one of them is nearer to its embedding than the base memory's best by a margin. For each margin
(and for no gate), on the **dev** clips:

* ``forgetting``: with the benchmark's domain (the test split's class names, as ``benchmarks/adapt.py``
  gives them), the share of dev clips whose Santa-bridged embedding or whose 4 prompt texts differ
  from the base model's (a clip that sees the same prompt and embedding gives the same answer), and
  how often those prompt texts name the clip's label (a synonym counts);
* ``pseudo_domain``: the dev labels split in two (seeded); one half's names are the domain. On the
  clips of that half: how often the prompt texts name the label (base vs adapted: the gain proxy);
  on the other half: the share of clips whose prompt or embedding changed (the forgetting proxy).

With ``--decode``, the dev clips whose prompt or embedding changed (with the benchmark's domain) are
also decoded, with the base model and with each margin's memory (tags prompt, tag keyword accuracy
through the evaluation runner, ``fast`` weights as in ``benchmarks/adapt.py``): the clips won and lost
(the others give the base model's answer, their inputs to the decoder being the same).

No test clip is read. JSON on stdout and in ``--out`` (default
``benchmarks/results/adapt_gate.json``).

    python benchmarks/adapt_gate.py [--margins none,0,0.02,0.05] [--decode] [--out FILE]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _output import emit  # noqa: E402


def prompts_and_embeddings(base, memory, emb: np.ndarray):
    """The Santa-bridged embeddings and the retrieved prompt texts, as the model's run loop makes
    them (the tags decoding's bridge and seed, one clip at a time)."""
    from mats.bridge.bridges import apply_bridge
    from mats.bridge.retrieval import retrieve_texts

    dec = base.decoding("tags")
    z = np.concatenate([apply_bridge(emb[i:i + 1], dec.bridge, memory=memory, shift=base.shift, seed=dec.seed)
                        for i in range(len(emb))])
    k = base.retrieval_k or 4
    return z, [[r.text for r in row] for row in retrieve_texts(memory, z, k)]


def changed_clips(base, emb, domain_texts, margin, reference) -> tuple[object, list[int]]:
    """The adapted memory and the clips whose bridged embedding or prompt texts it changes."""
    from mats.adapt import adapt_memory

    memory = adapt_memory(base.santa, base.clap, domain_texts, gate_margin=margin)
    z, texts = prompts_and_embeddings(base, memory, emb)
    z0, texts0 = reference
    return memory, [i for i in range(len(emb)) if not np.array_equal(z[i], z0[i]) or texts[i] != texts0[i]]


def decode_hits(mats, folder: Path, rows: list[dict], clips: list[int], tmp: Path) -> dict[str, bool]:
    """Tag keyword hit per clip file for ``clips`` of the split in ``folder`` (a subset folder in
    ``tmp`` pointing at the same audio), through the evaluation runner."""
    import json

    from mats.adapt import evaluate

    if not clips:
        return {}
    sub = tmp / f"subset-{len(list(tmp.iterdir()))}"
    sub.mkdir()
    for top in {Path(rows[i]["file"]).parts[0] for i in clips}:
        (sub / top).symlink_to(folder / top)
    (sub / "metadata.jsonl").write_text("".join(json.dumps(rows[i]) + "\n" for i in clips))
    res = evaluate(mats, sub)
    return dict(zip(res["files"], res["hits"], strict=True))


def measure(base, emb, rows, domain_texts, margin, reference, clips=None) -> dict:
    """Changed share and label-naming rate of the prompts on ``clips`` (indices; None: all)."""
    from mats.adapt import adapt_memory

    memory = adapt_memory(base.santa, base.clap, domain_texts, gate_margin=margin)
    z, texts = prompts_and_embeddings(base, memory, emb)
    z0, texts0 = reference
    clips = range(len(rows)) if clips is None else clips
    changed = [not np.array_equal(z[i], z0[i]) or texts[i] != texts0[i] for i in clips]
    names = [any(any(s.lower() in t.lower() for s in rows[i]["synonyms"]) for t in texts[i]) for i in clips]
    names0 = [any(any(s.lower() in t.lower() for s in rows[i]["synonyms"]) for t in texts0[i]) for i in clips]
    return {"clips": len(changed), "changed": round(float(np.mean(changed)), 4),
            "prompt_names_label": round(float(np.mean(names)), 4),
            "prompt_names_label_base": round(float(np.mean(names0)), 4)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--margins", default="none,-0.02,0,0.02,0.05,0.1")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--decode", action="store_true", help="decode the changed dev clips (minutes)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "adapt_gate.json"))
    args = ap.parse_args()
    margins = [None if m == "none" else float(m) for m in args.margins.split(",")]

    from mats.data.sounds import fetch_sound_split, read_metadata
    from mats.pipeline import MATS

    t0 = time.perf_counter()
    dev = fetch_sound_split("dev")
    rows = read_metadata(dev)
    # the benchmark's domain: the test split's class names (its metadata's labels; no clip is read)
    test_labels = sorted({lab for r in read_metadata(fetch_sound_split("test")) for lab in r["labels"]})
    base = MATS.from_pretrained(dtype="fast")
    emb = base.embed_audio([str(dev / r["file"]) for r in rows])
    reference = prompts_and_embeddings(base, base.santa, emb)

    dev_labels = sorted({r["labels"][0] for r in rows})
    rng = np.random.default_rng(args.seed)
    half = set(rng.permutation(dev_labels)[: len(dev_labels) // 2].tolist())
    inside = [i for i, r in enumerate(rows) if r["labels"][0] in half]
    outside = [i for i, r in enumerate(rows) if r["labels"][0] not in half]
    pseudo_texts = [f"The sound of {n}." for n in sorted(half)]
    test_texts = [f"The sound of {n}." for n in test_labels]

    result = {"format": "mats-bench-adapt-gate/1", "split": "dev", "clips": len(rows), "seed": args.seed,
              "pseudo_domain_labels": sorted(half), "rows": []}
    for m in margins:
        result["rows"].append({
            "gate_margin": m,
            "forgetting": measure(base, emb, rows, test_texts, m, reference),
            "pseudo_domain": {"domain_clips": measure(base, emb, rows, pseudo_texts, m, reference, inside),
                              "other_clips": measure(base, emb, rows, pseudo_texts, m, reference, outside)}})
    if args.decode:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="mats-adapt-gate-") as tmp:
            changed = {m: changed_clips(base, emb, test_texts, m, reference) for m in margins}
            union = sorted({i for _, clips in changed.values() for i in clips})
            before = decode_hits(base, dev, rows, union, Path(tmp))
            for row, m in zip(result["rows"], margins, strict=True):
                memory, clips = changed[m]
                adapted = MATS(base.model, base.clap, santa=memory, shift=base.shift,
                               train_config=base.train_config, trained_tasks=base.trained_tasks)
                adapted.folder = base.folder  # the runner names the model by its folder
                after = decode_hits(adapted, dev, rows, clips, Path(tmp))
                row["decoded"] = {"clips": len(clips),
                                  "won": sorted(f for f, h in after.items() if h and not before[f]),
                                  "lost": sorted(f for f, h in after.items() if before[f] and not h)}
                row["decoded"]["net"] = len(row["decoded"]["won"]) - len(row["decoded"]["lost"])
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return emit(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
