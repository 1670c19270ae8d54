"""Before/after alignment of the default CLAP's label bridge, on real recorded sounds.

Zero-shot top-1 accuracy on the labelled Debian sound set (``mats.data.sounds``): each clip's audio
embedding against "the sound of {label}" for every class of the set. The naive bridge and each
variant tried on the way to the defaults are reported, plus the modality gap of the defaults.

YAMNet runs once per clip and window (both short-clip modes); the variants only re-pool its scores,
so the whole run takes well under a minute on 2 CPU cores.

    python benchmarks/clap_alignment.py [--sounds DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from mats.clap.base import l2_normalize
from mats.clap.default import DefaultCLAP
from mats.data.sounds import fetch_real_sounds, read_metadata

NAIVE = dict(pooling="max", temperature=1.0, top_classes=None, generic_penalty=0.0, parent_penalty=0.0,
             short_clip="repeat", label_prompt="the sound of {label}")

# The path taken from naive to the defaults, one change at a time, plus alternatives that lost.
VARIANTS = [
    ("naive: max-pool, T=1, all classes", {}),
    ("T=2", dict(temperature=2.0)),
    ("mean-pool", dict(pooling="mean")),
    ("top3-patch-pool", dict(pooling="topk", top_patches=3)),
    ("energy-pool", dict(pooling="energy")),
    ("mean-pool, T=0.5", dict(pooling="mean", temperature=0.5)),
    ("mean-pool, T=0.5, top5 classes", dict(pooling="mean", temperature=0.5, top_classes=5)),
    ("mean-pool, T=0.5, top5, generic penalty 2", dict(pooling="mean", temperature=0.5, top_classes=5,
                                                       generic_penalty=2.0)),
    ("... + generic penalty 5", dict(pooling="mean", temperature=0.5, top_classes=5, generic_penalty=5.0)),
    ("... + top3 classes", dict(pooling="mean", temperature=0.5, top_classes=3, generic_penalty=2.0)),
    ("... + top10 classes", dict(pooling="mean", temperature=0.5, top_classes=10, generic_penalty=2.0)),
    ("... + T=1", dict(pooling="mean", temperature=1.0, top_classes=5, generic_penalty=2.0)),
    ("... + prompt '{label}'", dict(pooling="mean", temperature=0.5, top_classes=5, generic_penalty=2.0,
                                   label_prompt="{label}")),
    ("... + prompt 'a recording of {label}'", dict(pooling="mean", temperature=0.5, top_classes=5,
                                                  generic_penalty=2.0, label_prompt="a recording of {label}")),
    ("... + short clips as a single patch", dict(pooling="mean", temperature=0.5, top_classes=5,
                                                generic_penalty=2.0, short_clip="single")),
    ("... + max-pool", dict(pooling="max", temperature=0.5, top_classes=5, generic_penalty=2.0)),
    ("... + top3-patch-pool", dict(pooling="topk", temperature=0.5, top_classes=5, generic_penalty=2.0)),
    ("... + parent penalty 2", dict(pooling="mean", temperature=0.5, top_classes=5, generic_penalty=2.0,
                                    parent_penalty=2.0)),
    ("... + parent penalty 4", dict(pooling="mean", temperature=0.5, top_classes=5, generic_penalty=2.0,
                                    parent_penalty=4.0)),
    ("... + parent penalty 8", dict(pooling="mean", temperature=0.5, top_classes=5, generic_penalty=2.0,
                                    parent_penalty=8.0)),
    ("... + parent penalty 4, top3-patch-pool", dict(pooling="topk", temperature=0.5, top_classes=5,
                                                     generic_penalty=2.0, parent_penalty=4.0)),
    ("... + parent penalty 4, T=1", dict(pooling="mean", temperature=1.0, top_classes=5,
                                         generic_penalty=2.0, parent_penalty=4.0)),
    ("... + parent penalty 4, top3 classes", dict(pooling="mean", temperature=0.5, top_classes=3,
                                                  generic_penalty=2.0, parent_penalty=4.0)),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sounds", type=Path, default=None, help="sound set folder (default: fetch/cache)")
    args = ap.parse_args()
    t0 = time.time()
    folder = fetch_real_sounds(args.sounds) if args.sounds is None else args.sounds
    meta = read_metadata(folder)
    classes = sorted({r["labels"][0] for r in meta})
    truth = np.array([classes.index(r["labels"][0]) for r in meta])

    clap = DefaultCLAP()
    defaults = clap.settings()
    class_text = clap.encode_text([f"the sound of {c}" for c in classes])

    # YAMNet once per clip and short-clip mode: [(scores, energy) per window]
    waves = [clap.load(folder / r["file"]) for r in meta]
    cached = {}
    for mode in ("repeat", "single"):
        c = clap.with_settings(short_clip=mode)
        cached[mode] = [[c.patch_scores(w) for w in c.windows(x)[0]] for x in waves]
    t_yamnet = time.time() - t0

    def embed(settings: dict) -> np.ndarray:
        c = clap.with_settings(**settings)
        return l2_normalize(np.stack([np.mean([c.bridge(s, e) for s, e in wins], 0)
                                      for wins in cached[c.short_clip]]))

    results = []
    for name, change in VARIANTS:
        settings = {**NAIVE, **change}
        sims = embed(settings) @ class_text.T
        pred = sims.argmax(1)
        top5 = (np.argsort(-sims, 1)[:, :5] == truth[:, None]).any(1)
        results.append({"variant": name, "top1": round(float((pred == truth).mean()), 4),
                        "correct": int((pred == truth).sum()), "top5": round(float(top5.mean()), 4),
                        "settings": settings})

    # Modality gap of the shipped defaults.
    audio = embed(defaults)
    sims = audio @ class_text.T
    own = sims[np.arange(len(truth)), truth]
    other = (sims.sum(1) - own) / (len(classes) - 1)
    syn_texts = [", ".join(r["synonyms"]) for r in meta]
    syn = clap.encode_text(syn_texts)
    text_text = (syn * class_text[truth]).sum(1)
    out = {
        "sound_set": str(folder), "n_clips": len(meta), "n_classes": len(classes),
        "sources": sorted({r["source"] for r in meta}),
        "defaults": defaults,
        "default_top1": round(float((sims.argmax(1) == truth).mean()), 4),
        "variants": results,
        "gap": {"audio_to_own_label_text": round(float(own.mean()), 4),
                "audio_to_other_label_texts": round(float(other.mean()), 4),
                "synonym_text_to_label_text": round(float(text_text.mean()), 4)},
        "seconds": {"yamnet_and_loading": round(t_yamnet, 1), "total": round(time.time() - t0, 1)},
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
