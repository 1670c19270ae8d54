#!/usr/bin/env bash
# Reproduce the paper-scale MATS setup (MS-CLAP 2023 + Vicuna-7B) on a GPU machine, from public data.
# Step by step, see docs/reproduce.md. Every stage can be run alone: STAGES="corpus train" bash ...
#
#   WEIGHTS=~/models DATA=~/datasets NPROC=2 bash scripts/reproduce_paper.sh
#
# WEIGHTS must hold (stage "weights" fetches them with huggingface-cli if HF access is available):
#   $WEIGHTS/msclap/CLAP_weights_2023.pth, $WEIGHTS/msclap/gpt2/ , $WEIGHTS/vicuna-7b-v1.5/
# DATA holds local copies of the public sets in their published layouts (docs/reproduce.md):
#   $DATA/audiocaps  $DATA/clotho  $DATA/musiccaps  $DATA/esc50  $DATA/fsd50k  $DATA/clothoaqa
set -euo pipefail
cd "$(dirname "$0")/.."

WEIGHTS=${WEIGHTS:-$HOME/models}
DATA=${DATA:-$HOME/datasets}
NPROC=${NPROC:-$(python -c 'import torch; print(max(1, torch.cuda.device_count()))' 2>/dev/null || echo 1)}
RUN=${RUN:-runs/paper-msclap-vicuna7b}
RESULTS=${RESULTS:-results/paper}
CORPUS=${CORPUS:-data/audiotia}
STAGES=${STAGES:-"weights corpus train eval"}
PY=${PY:-python}

CLAP_SPEC="msclap-2023:$WEIGHTS/msclap/CLAP_weights_2023.pth"
LLM_DIR="$WEIGHTS/vicuna-7b-v1.5"

has_stage() { [[ " $STAGES " == *" $1 "* ]]; }
log() { printf '\n== %s\n' "$*"; }

# -- 1. weights into local folders (nothing is downloaded later: every path below is local) --------
if has_stage weights; then
  log "weights -> $WEIGHTS"
  if [[ -f "$WEIGHTS/msclap/CLAP_weights_2023.pth" && -f "$LLM_DIR/config.json" ]]; then
    echo "already there"
  elif command -v huggingface-cli >/dev/null; then
    huggingface-cli download microsoft/msclap CLAP_weights_2023.pth --local-dir "$WEIGHTS/msclap"
    huggingface-cli download openai-community/gpt2 --local-dir "$WEIGHTS/msclap/gpt2"
    huggingface-cli download lmsys/vicuna-7b-v1.5 --local-dir "$LLM_DIR"
  else
    echo "put CLAP_weights_2023.pth, gpt2/ and vicuna-7b-v1.5/ under $WEIGHTS (see docs/reproduce.md)" >&2
    exit 1
  fi
fi

# -- 2. text corpus from public caption / label / QA sets (our JSONL: text, task, answer, instruction, source)
if has_stage corpus; then
  log "corpus -> $CORPUS"
  mkdir -p "$CORPUS"
  DATA="$DATA" CORPUS="$CORPUS" $PY - <<'PYEOF'
import csv, json, os, sys
from pathlib import Path

data, out = Path(os.environ["DATA"]), Path(os.environ["CORPUS"])
close, open_ = [], []

def rows(path):
    with open(path, newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))

def cap(text, source, task="caption"):
    text = " ".join(str(text).split())
    if text:
        close.append({"text": text, "task": task, "answer": text, "source": source})

def tags(labels, source):
    labels = [" ".join(l.replace("_", " ").split()) for l in labels if l.strip()]
    if labels:
        close.append({"text": "the sound of " + ", ".join(labels), "task": "tags",
                      "answer": ", ".join(labels), "source": source})

# training splits only: the evaluation splits (AudioCaps test, Clotho evaluation) stay unseen
p = data / "audiocaps" / "train.csv"
if p.is_file():
    for r in rows(p): cap(r["caption"], "audiocaps")
clotho_caps = {}
for split in ("development", "validation"):
    p = data / "clotho" / f"clotho_captions_{split}.csv"
    if p.is_file():
        for r in rows(p):
            cs = [r[k] for k in r if k and k.startswith("caption_") and r[k].strip()]
            clotho_caps.setdefault(r["file_name"], cs)
            for c in cs: cap(c, "clotho")
p = data / "musiccaps" / "musiccaps-public.csv"
if p.is_file():
    for r in rows(p):
        if str(r.get("is_audioset_eval", "")).lower() != "true":
            cap(r["caption"], "musiccaps", task="music")
p = data / "esc50" / "meta" / "esc50.csv"
if p.is_file():
    for r in rows(p): tags([r["category"]], "esc50")
p = data / "fsd50k" / "FSD50K.ground_truth" / "dev.csv"
if p.is_file():
    for r in rows(p): tags(r["labels"].split(","), "fsd50k")
# QA: the question is asked about the clip's (first) Clotho caption, the text that stands in for the audio
p = data / "clothoaqa" / "clotho_aqa_train.csv"
if p.is_file():
    for r in rows(p):
        cs = clotho_caps.get(r["file_name"])
        if cs and r["QuestionText"].strip() and r["answer"].strip():
            open_.append({"text": cs[0], "task": "qa", "instruction": r["QuestionText"].strip(),
                          "answer": r["answer"].strip(), "source": "clothoaqa"})
# optional: OpenAQA / MusicQA text exports in our format, dropped in as JSONL files
for extra in sorted((data / "extra_corpus").glob("*.jsonl")) if (data / "extra_corpus").is_dir() else []:
    with open(extra, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                (open_ if row.get("task") in ("qa", "open") else close).append(row)
if not close:
    sys.exit(f"no caption/label data found under {data} (see docs/reproduce.md for the layouts)")
if not open_:
    print("warning: no QA rows; open_ended.jsonl repeats the close-ended rows", file=sys.stderr)
    open_ = close
for name, rs in (("close_ended.jsonl", close), ("open_ended.jsonl", open_)):
    with open(out / name, "w", encoding="utf-8") as f:
        for r in rs: f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{out / name}: {len(rs)} rows")
PYEOF
  $PY -m mats.cli corpus check "$CORPUS/close_ended.jsonl" "$CORPUS/open_ended.jsonl"
fi

# -- 3. text-only training (resumable: re-running continues from the last checkpoint) -------------
if has_stage train; then
  log "train on $NPROC GPU(s) -> $RUN"
  torchrun --nproc-per-node "$NPROC" -m mats.cli train --config configs/paper-msclap-vicuna7b.json \
    --set "model.clap=$CLAP_SPEC" --set "model.llm=$LLM_DIR" \
    --set "train.corpus=[{\"path\": \"$CORPUS/close_ended.jsonl\", \"weight\": 0.3}, {\"path\": \"$CORPUS/open_ended.jsonl\", \"weight\": 0.7}]" \
    --set "train.out_dir=$RUN"
fi

# -- 4. evaluation with the bridge ablation (embeddings computed once per benchmark) ---------------
if has_stage eval; then
  MODEL=${MODEL:-$RUN/model}
  for set in clotho audiocaps; do
    if [[ -d "$DATA/$set" ]]; then
      log "eval $set -> $RESULTS/$set"
      $PY -m mats.cli eval --data "$DATA/$set" --benchmark "$set" --task caption --model "$MODEL" \
        --beams 4 --ablation --out "$RESULTS/$set"
    fi
  done
  if [[ -d "$DATA/esc50" ]]; then
    log "eval esc50 -> $RESULTS/esc50"
    $PY -m mats.cli eval --data "$DATA/esc50" --benchmark esc50 --task classify --model "$MODEL" \
      --ablation --out "$RESULTS/esc50"
  fi
  echo "reports: $RESULTS/*/report.md"
fi
