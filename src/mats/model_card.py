"""The model card (``README.md``) written into every model folder by :meth:`MATS.save_pretrained`.

It is generated from what the folder holds — config, training config, the held-out loss in the
training log, the Santa memory — plus measured quality when the caller has some, so a folder found on
a disk says what it is, how it was made and how good it is, without anyone having to remember.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

__all__ = ["render_model_card", "held_out_losses"]


def held_out_losses(log_csv: str | Path) -> list[tuple[int, float]]:
    """(step, held-out loss) rows of a training ``log.csv`` (rows without a held-out value skipped)."""
    path = Path(log_csv)
    if not path.is_file():
        return []
    out = []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            held = (row.get("held_out_loss") or "").strip()
            if held:
                try:
                    out.append((int(row["step"]), float(held)))
                except (KeyError, ValueError):
                    continue
    return out


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def render_model_card(name: str, config: dict, santa=None, has_shift: bool = False,
                      held_out: list[tuple[int, float]] | None = None,
                      quality: dict[str, Any] | None = None) -> str:
    """Markdown for ``README.md``. ``config``: the folder's ``config.json`` content; ``quality``:
    ``{"source": "...", "rows": [{"name": ..., metric: value, ...}]}`` or None (not measured)."""
    model = config.get("model", {})
    train = config.get("train")
    mapper = model.get("mapper", {})
    lora = model.get("lora", {})
    noise = {"variance": train.get("noise_variance"), "kind": train.get("noise_kind")} if train else {}
    L = [f"# {name}", "",
         "A MATS model (audio-language model trained on text alone): a frozen CLAP embeds the audio, a "
         "gap bridge (Santa) pulls the audio embedding towards training-text embeddings, a mapper turns "
         "it into LLM prefix embeddings, and a LoRA-tuned LLM writes the answer. No audio was used in "
         "training.", "",
         "## Parts", "",
         f"- CLAP: `{model.get('clap')}`" + (f" (fingerprint `{config['clap_fingerprint']}`)"
                                               if config.get("clap_fingerprint") else ""),
         f"- LLM: `{model.get('llm')}` with LoRA r {lora.get('r')}, alpha {lora.get('alpha')} on "
         f"{', '.join(lora.get('target_modules', []))}",
         f"- Mapper: {mapper.get('kind')} {mapper.get('depth')} layers x {mapper.get('width')}, "
         f"{mapper.get('prefix_length')} prefix tokens, CLAP dim {mapper.get('clap_dim')} -> LLM "
         f"{mapper.get('llm_hidden')}",
         f"- Prompt style: {model.get('prompt_style')}"]
    if noise:
        L.append(f"- Training noise: {noise.get('kind')}, variance {_fmt(noise.get('variance'))} "
                 "(also on the Santa memory's entries)")
    if santa is not None:
        c = santa.config
        L.append(f"- Santa memory: {santa.num_entries} training texts, {santa.num_clusters} clusters; "
                 f"lambda {_fmt(c.lam)}, tau {_fmt(c.tau)}, L {c.top_l}, search {c.search}")
        if santa.gated:
            L.append(f"- Added texts behind a gate: rows {c.gate_from}-{santa.num_entries - 1} reach a clip only "
                     f"when one is nearer to it than the other texts by {_fmt(c.gate_margin)} (cosine)")
    L.append(f"- Shift vector (the 'shift' bridge): {'yes' if has_shift else 'no'}")
    retrieval = model.get("retrieval") or {}
    if retrieval.get("k"):
        L.append(f"- Retrieval-augmented prompt: the memory's {retrieval['k']} texts nearest to the bridged "
                 f"embedding, as `{retrieval.get('template')}` between the audio and the task tag")
    L += ["", "## Training", ""]
    if train:
        corpus = train.get("corpus", [])
        L.append("Text-only corpus: " + ", ".join(f"`{c.get('path')}` (weight {_fmt(c.get('weight'))})"
                                                 for c in corpus) + ".")
        L.append(f"Steps {train.get('steps')} x batch {train.get('batch_size')}, lr {_fmt(train.get('lr'))}, "
                 f"warm-up {train.get('warmup_steps')}, weight decay {_fmt(train.get('weight_decay'))}, "
                 f"seed {train.get('seed')}"
                 + (f", initialised from `{train.get('init_from')}`" if train.get("init_from") else "") + ".")
        L += ["", "Reproduce: write the `train` and `model` sections of `config.json` into a run config "
              "and run `mats train --config run_config.json` (resumable)."]
    else:
        L.append("Not recorded (the folder was not written by `mats train`).")
    if held_out:
        step, loss = held_out[-1]
        L += ["", f"Held-out loss (answer tokens, text embeddings with training noise): {loss:.4f} at step "
              f"{step} (first measured: {held_out[0][1]:.4f} at step {held_out[0][0]})."]
    adaptation = (quality or {}).get("adaptation")
    if adaptation:
        L += ["", "## Adaptation", "",
              f"Adapted from {adaptation.get('base')} with `mats adapt` ({adaptation.get('how')}) to the "
              f"domain `{adaptation.get('domain')}`; Santa memory: {adaptation.get('memory')}. "
              "`adapt.json` in this folder has every option."]
    L += ["", "## Quality", ""]
    if quality and quality.get("rows"):
        rows = quality["rows"]
        cols = [k for k in rows[0] if k != "name"]
        L += [f"Measured by {quality.get('source', 'an evaluation')}:", "",
              "| | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        L += ["| " + str(r["name"]) + " | " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    else:
        L.append("Not measured yet: `mats eval --data DIR --task caption --model THIS_FOLDER --out eval/`.")
    L += ["", "## Use", "", "```python", "from mats import MATS",
          "m = MATS.from_pretrained(\"THIS_FOLDER\")", "m.caption([\"clip.wav\"])", "```", "",
          "Limits: the model knows what its CLAP can tell apart and its corpus describes; fine-grained "
          "questions (counts, pitch, timing) are beyond a single pooled CLAP embedding. "
          "Long recordings: `--events` (`MATS.events`) cuts a recording where its CLAP windows change and "
          "answers each event alone; the summary then names the events in order, but only as well as each "
          "event's own answer names it, it says nothing of how the events relate, it merges two sounds that "
          "overlap in time into one event, and boundaries are placed to about a second. The whole-recording "
          "caption (windows averaged) names one event at most. Measured figures: docs/default-model.md, "
          "\"Long recordings\".", ""]
    return "\n".join(L)
