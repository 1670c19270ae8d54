"""Inference latency on this machine: model load, and caption time per clip.

Measured, all in one run, on the real sound set (:func:`mats.data.sounds.fetch_real_sounds`):

* ``load_s``: ``MATS.from_pretrained()`` in this process (files in the OS cache, as for any run after
  the first), ``--repeats`` times;
* ``cli_first_output_s``: wall time of a fresh ``mats caption ONE_FILE`` process (Python start,
  imports, load, one caption), ``--repeats`` times;
* ``caption_batch1_s``: ``MATS.caption([clip])`` for each of ``--clips`` clips, one at a time
  (audio read + CLAP + Santa + beam search);
* ``caption_batch8_per_clip_s``: ``MATS.caption(clips)`` on batches of 8 divided by 8, ``--repeats``
  times.

Captions use the task's default decoding (beam 8, the CLAP reranks the 8 candidates); the same two
per-clip timings with ``rerank=0`` (the top beam of 4) are reported beside them as ``*_top_beam``,
with the ratios, interleaved clip by clip so both see the same machine state.

``speed`` (the speed issue; ``--speed-only`` skips the rows above), every variant side by side in
one run, round-robin clip by clip, with ratios to ``before``:

* ``decode``: caption per clip alone and in batches of 8 (default decoding: beam 8 + rerank 8) for
  ``before`` (peft-wrapped LoRA, one prefill per beam, fp32: main before the speed work),
  ``prefill_once`` (peft, the prompt's KV cache computed once per clip), ``default`` (LoRA merged +
  prefill once; ``dtype="auto"``: fp32 on CPU) and ``fast`` (merged + prefill once +
  ``dtype="fast"``: bf16 weights on a CPU with native bf16); whether each variant's captions equal
  ``before``'s, and whether its captions of the 8 clips decoded as one batch equal those decoded
  alone (batch invariance);
* ``floors``: a decode step (ms per token) of 1 row (greedy) and of 8 rows (the beams of one
  caption) for the default (fp32) and fast (bf16) weights, beside two floors: the LLM's weight bytes over the
  measured read bandwidth (``torch.sum`` over 1 GiB) and over the rate at which this machine's
  matmul kernels stream weights (``F.linear`` over 20 weight matrices of 16 M values each, in the
  weights' dtype, 1 and 8 rows): a decode step reads every weight once;
* ``start``: fresh processes: ``python -c pass``, ``import torch``, ``import mats.pipeline``, the
  import floor (``IMPORT_FLOOR``: the modules every run of the default model imports, transformers'
  LLM runtime included), ``mats --help`` and ``mats tag FILE``; a phase-by-phase
  breakdown of one fresh ``tag`` (imports, model load, audio + CLAP, decoding); the 521 label
  embeddings encoded vs read from the disk cache; ``unreadable``: a fresh ``mats tag`` on a missing
  and on an empty file (answered before any model loads) beside one on a readable clip
  (``--unreadable-only`` runs just these);
* ``text_encoding``: the default CLAP's text encoder on 2,048 corpus texts, batches of 64 cut from
  the texts in corpus order (before) and from the texts sorted by length (now), texts/s and the
  lowest cosine between the two;
* ``targets``: each unmet target (caption alone 0.4 s, per clip in batches of 8 0.25 s, fresh tag
  3 s) beside the measured time and a lower bound: the weight matmuls the default decoding of these
  clips cannot avoid (prompt positions once, plus the counted decode steps at their row count, on
  the model's own weights) with torch's fp32 and bf16 kernels and with OpenBLAS, plus the import
  floor for the fresh tag (:func:`target_floors`);
* ``threads``: a fresh ``mats tag FILE`` with 2 threads and spinning OpenMP workers
  (``OMP_WAIT_POLICY=ACTIVE``: the old default), 2 threads waiting passively (the new default) and
  1 thread.

``runtimes`` (issue 22; ``--runtimes-only`` runs just these), torch and ONNX Runtime side by side in one
run, alternated (which runtime goes first changes clip by clip and repeat by repeat):

* ``export_first_use_s``: a fresh ``mats export onnx`` into an empty folder (what the first
  ``--runtime onnx`` run of a model pays once);
* ``caption_alone_s`` / ``caption_batch8_per_clip_s``: warm default captions (beam 8 + rerank 8) per
  clip, alone and in batches of 8, with the ratio torch / onnx and how many captions are equal;
* ``greedy_step``: ms per decoded token of one row (greedy), beside the matmul floor of one row on the
  same weights (torch's kernels and OpenBLAS: :func:`llm_matmul_ms`) and the bandwidth floor;
* ``fresh_tag_s``: fresh ``mats tag FILE`` per runtime and as a user types it (``default``: no
  ``--runtime``, no ``MATS_RUNTIME``) beside a bare ``python -c "import torch"`` (all with Python's
  bytecode cache on, as after a ``pip install``, whatever ``PYTHONDONTWRITEBYTECODE`` says), and whether
  ``-X importtime`` of the default run lists torch / transformers; ``fresh_tag_phases``: where such a
  run spends its time per runtime (imports, model load, audio + CLAP, decoding);
* ``peak_rss_mb``: the peak resident memory of a fresh process that loads the model and captions the
  clips in one batch, per runtime.

Every figure is reported as median, min and max with the raw samples. Prints JSON; ``--out FILE``
also writes it.

    python benchmarks/latency.py [--model DIR] [--clips 8] [--repeats 3] [--speed-only | --unreadable-only]
                                 [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _output import emit  # benchmarks/ is on sys.path when a script runs


def summary(samples: list[float]) -> dict:
    return {"median": round(statistics.median(samples), 4), "min": round(min(samples), 4),
            "max": round(max(samples), 4), "n": len(samples), "samples": [round(s, 4) for s in samples]}


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="model folder (default: the offline default model)")
    ap.add_argument("--clips", type=int, default=8, help="clips for the per-clip timings")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", help="cpu, cuda, ... (default: best available)")
    ap.add_argument("--speed-only", action="store_true", help="only the speed-issue rows (see above)")
    ap.add_argument("--unreadable-only", action="store_true",
                    help="only the fresh `mats tag` on unreadable files (see unreadable_rows)")
    ap.add_argument("--runtimes-only", action="store_true",
                    help="only the torch vs ONNX Runtime rows (see above)")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args(argv)
    if args.speed_only or args.unreadable_only or args.runtimes_only:
        return speed_main(args)

    import torch

    from mats.data.sounds import fetch_real_sounds
    from mats.pipeline import MATS

    clips = sorted((fetch_real_sounds() / "clips").rglob("*.wav"))[: args.clips]
    if len(clips) < args.clips:
        raise SystemExit(f"only {len(clips)} clips in the sound set")

    loads = [timed(lambda: MATS.from_pretrained(args.model, device=args.device)) for _ in range(args.repeats)]
    mats = MATS.from_pretrained(args.model, device=args.device)
    mats.caption(clips[:1])  # warm-up: first-call allocations, YAMNet session, prompt cache

    batch1, batch1_top, batch8, batch8_top = [], [], [], []
    for c in clips:
        batch1.append(timed(lambda c=c: mats.caption([c])))
        batch1_top.append(timed(lambda c=c: mats.caption([c], rerank=0)))
    for _ in range(args.repeats):
        batch8.append(timed(lambda: mats.caption(clips[:8], batch_size=8)) / 8)
        batch8_top.append(timed(lambda: mats.caption(clips[:8], batch_size=8, rerank=0)) / 8)

    cli = [sys.executable, "-m", "mats.cli", "caption", str(clips[0])]
    if args.model:
        cli += ["--model", args.model]
    fresh = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        subprocess.run(cli, check=True, capture_output=True, env=dict(os.environ))
        fresh.append(time.perf_counter() - t)

    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "device": str(mats.model.device)},
        "model": str(mats.folder), "clips": [c.name for c in clips],
        "load_s": summary(loads),
        "cli_first_output_s": summary(fresh),
        "caption_batch1_s": summary(batch1),
        "caption_batch8_per_clip_s": summary(batch8),
        "caption_batch1_s_top_beam": summary(batch1_top),
        "caption_batch8_per_clip_s_top_beam": summary(batch8_top),
        "rerank_cost_ratio_batch1": round(statistics.median(batch1) / statistics.median(batch1_top), 3),
        "rerank_cost_ratio_batch8": round(statistics.median(batch8) / statistics.median(batch8_top), 3),
    }
    return emit(result, args.out, indent=2)


def fresh(cmd: list[str], repeats: int, env: dict | None = None, exit_code: int = 0) -> dict:
    """Wall time of ``cmd`` in a fresh process; ``env`` entries set to None are removed."""
    merged = {**os.environ, **(env or {})}
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, env={k: v for k, v in merged.items() if v is not None})
        times.append(time.perf_counter() - t)
        if p.returncode != exit_code:
            raise RuntimeError(f"{cmd}: exit {p.returncode}, expected {exit_code}: {p.stderr.decode()[-2000:]}")
    return summary(times)


def unreadable_rows(args, clips: list[Path]) -> dict:
    """A fresh ``mats tag`` on files that cannot be read (missing; empty) answers with their errors
    before any model loads; beside it, the same command on a readable clip."""
    import tempfile

    py = [sys.executable, "-m", "mats.cli", "tag"] + (["--model", args.model] if args.model else [])
    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty.wav"
        empty.write_bytes(b"")
        return {"tag_missing_file_s": fresh(py + [str(Path(tmp) / "missing.wav")], args.repeats, exit_code=1),
                "tag_empty_file_s": fresh(py + [str(empty)], args.repeats, exit_code=1),
                "tag_readable_clip_s": fresh(py + [str(clips[0])], args.repeats)}


def read_bandwidth_gbs() -> float:
    import torch
    a = torch.ones(2 ** 28 // 4 * 4)  # 1 GiB of float32
    a.sum()
    times = [timed(a.sum) for _ in range(5)]
    return round(a.numel() * 4 / statistics.median(times) / 1e9, 1)


def matmul_stream_gbs(dtype, rows: int) -> float:
    """GB/s of weights the matmul kernels get through when each weight is used by ``rows`` rows,
    as in a decode step: 20 distinct 4096 x 4096 matrices (1.3 GB in fp32), far beyond any cache."""
    import torch
    import torch.nn.functional as F

    w = torch.randn(20, 4096, 4096).to(dtype)
    x = torch.randn(rows, 4096).to(dtype)

    def run():
        for i in range(w.shape[0]):
            F.linear(x, w[i])

    run()
    times = [timed(run) for _ in range(5)]
    return round(w.numel() * w.element_size() / statistics.median(times) / 1e9, 1)


FRESH_TAG_PHASES = """
import json, sys, time
t0 = time.perf_counter()
import mats.pipeline
from mats import MATS
t1 = time.perf_counter()
m = MATS.from_pretrained(sys.argv[2] or None, runtime=sys.argv[3])
t2 = time.perf_counter()
emb = m.embed_audio([sys.argv[1]])
t3 = time.perf_counter()
text = m.generate(emb, "tags")
t4 = time.perf_counter()
print(json.dumps({"imports_s": t1 - t0, "model_load_s": t2 - t1, "audio_and_clap_s": t3 - t2,
                  "decode_and_rerank_s": t4 - t3, "text": text[0]}))
"""


# Modules every run of the default model imports (checked in a `mats tag` process's sys.modules):
# torch, numpy, onnxruntime (YAMNet), mats, and transformers' modelling, generation, tokenizer and
# Llama modules (the LLM runtime). Their fresh import is a floor under any such run.
IMPORT_FLOOR = ("import torch, numpy, onnxruntime, mats.pipeline, transformers.modeling_utils, "
                "transformers.generation.utils, transformers.tokenization_utils_base, "
                "transformers.models.llama.modeling_llama")


def fresh_tag_phases(clip: Path, model: str | None, repeats: int, runtime: str = "torch") -> dict:
    """Where a fresh `mats tag FILE` spends its time on ``runtime``, phase by phase (the CLI itself adds
    argument parsing and printing, and skips interpreter teardown)."""
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # as in runtime_rows
        out = subprocess.run([sys.executable, "-c", FRESH_TAG_PHASES, str(clip), model or "", runtime],
                             check=True, capture_output=True, text=True, env=env)
        total = time.perf_counter() - t
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["process_total_s"] = total
        runs.append(row)
    keys = [k for k in runs[0] if k.endswith("_s")]
    return {k: summary([r[k] for r in runs]) for k in keys} | {"text": runs[0]["text"]}


def text_encoding_rows(clap, n: int = 2048) -> dict:
    """Texts/s of the CLAP text encoder: batches of 64 in corpus order (before) vs length-sorted."""
    import tempfile

    import numpy as np

    from mats.data.default_corpus import build_default_corpus

    with tempfile.TemporaryDirectory() as tmp:
        build_default_corpus(tmp, seed=0)
        rows = (Path(tmp) / "captions.jsonl").read_text().splitlines()
    texts = list(dict.fromkeys(json.loads(r)["text"] for r in rows))[:n]

    def unsorted():
        return np.concatenate([clap.encode_text(texts[i:i + 64]) for i in range(0, len(texts), 64)])

    def sorted_():
        return clap.encode_text(texts, batch_size=64)

    a, b = unsorted(), sorted_()
    ta, tb = [], []
    for _ in range(2):
        ta.append(timed(unsorted))
        tb.append(timed(sorted_))
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"texts": len(texts), "before_texts_per_s": round(len(texts) / statistics.median(ta), 1),
            "sorted_texts_per_s": round(len(texts) / statistics.median(tb), 1),
            "speedup": round(statistics.median(ta) / statistics.median(tb), 3),
            "min_cosine_sorted_vs_before": round(float(cos.min()), 6)}


def llm_matmul_ms(llm, rows: int, dtype, library: str = "torch", output_layer: bool = True) -> float:
    """The weight matmuls of one pass of ``rows`` rows through the LLM, alone: every linear layer on
    its real weights and shapes, in ``dtype``; ``output_layer=False`` leaves out the output layer
    (the prompt's positions, which need no logits). A decode step (rows = beams x clips) or a
    prefill (rows = prompt positions) cannot take less with these kernels; attention, the KV cache,
    beam bookkeeping and Python come on top. ``library``: "torch" (MKL for fp32, oneDNN for bf16, as
    the model runs) or "numpy" (OpenBLAS, fp32 only: other kernels on the same weights, as a check)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    head = llm.get_output_embeddings()
    weights = [m.weight.detach() for m in llm.modules()
               if isinstance(m, torch.nn.Linear) and (output_layer or m is not head)]
    if library == "numpy":
        matrices = [w.float().numpy().T.copy() for w in weights]
        xs = {w.shape[0]: np.random.default_rng(0).standard_normal((rows, w.shape[0]), dtype=np.float32)
              for w in matrices}

        def run():
            for w in matrices:
                xs[w.shape[0]] @ w
    else:
        matrices = [w.to(dtype) for w in weights]
        xs = {w.shape[1]: torch.randn(rows, w.shape[1]).to(dtype) for w in matrices}

        def run():
            for w in matrices:
                F.linear(xs[w.shape[1]], w)
    run()
    return 1000 * statistics.median(timed(run) for _ in range(5))


def count_forwards(mats_, fn) -> tuple[int, list[int]]:
    """LLM forward calls (decode steps, the last prompt position included) while ``fn`` runs, and
    each prompt's length in positions (unpadded, as the model built it: retrieved texts included)."""
    model = mats_.model
    llm = model.llm
    calls, prompts = [0], []
    forward, build_inputs = llm.forward, model.build_inputs

    def counting(*a, **kw):
        calls[0] += 1
        return forward(*a, **kw)

    def recording(*a, **kw):
        batch = build_inputs(*a, **kw)
        prompts.extend(int(n) for n in batch["attention_mask"].sum(1))
        return batch

    llm.forward, model.build_inputs = counting, recording
    try:
        fn()
    finally:
        del llm.forward, model.build_inputs  # back to the classes' methods
    return calls[0], prompts


def target_floors(default, clips: list[Path], decode: dict, start: dict) -> dict:
    """Each decoding and start-up target of the speed issue beside a lower bound on this machine:
    the weight matmuls the default decoding cannot avoid on these clips, with the kernels at hand.
    That is the prompt's positions once through every layer but the output layer (unpadded), plus
    the decode steps it really takes (counted) times one step's matmuls at the step's row count
    (:func:`llm_matmul_ms`): for the default weights (fp32), bf16 weights and fp32 on OpenBLAS. The
    fresh tag adds the import floor (``IMPORT_FLOOR``: modules every tag run imports). Each bound
    leaves out the CLAP (its measured time per clip is reported beside), attention, the rerank and
    the weight load, so the real floor is higher."""
    import torch

    llm = default.model.llm
    emb = default.embed_audio(clips[:8])
    clap_per_clip = statistics.median(timed(lambda: default.embed_audio(clips[:8])) for _ in range(3)) / 8
    alone = [count_forwards(default, lambda i=i: default.generate(emb[i:i + 1], "caption")) for i in range(len(emb))]
    steps_batch8, prompts_batch8 = count_forwards(default, lambda: default.generate(emb, "caption"))
    steps_tag, (tag_prompt,) = count_forwards(default, lambda: default.generate(emb[:1], "tags"))
    # The prompt's positions but the last (which the first decode step runs), unpadded.
    caption_prompt = round(statistics.mean(p for _, (p,) in alone)) - 1
    batch8_prompt = sum(prompts_batch8) - len(prompts_batch8)
    tag_prompt -= 1
    passes = {"step_8_rows": (8, True), "step_64_rows": (64, True),
              "caption_prompt": (caption_prompt, False), "caption_prompts_batch8": (batch8_prompt, False),
              "tag_prompt": (tag_prompt, False)}
    kernels = {name: {"rows": rows, "output_layer": head,
                      "fp32_torch_ms": round(llm_matmul_ms(llm, rows, torch.float32, output_layer=head), 1),
                      "fp32_openblas_ms": round(llm_matmul_ms(llm, rows, torch.float32, "numpy", head), 1),
                      "bf16_torch_ms": round(llm_matmul_ms(llm, rows, torch.bfloat16, output_layer=head), 1)}
               for name, (rows, head) in passes.items()}

    def floors(prompt: str, steps: float, step: str, per: int = 1, plus: float = 0.0) -> dict:
        return {lib.replace("_ms", "_s"): round(plus + (kernels[prompt][lib] + steps * kernels[step][lib])
                                                / 1000 / per, 3)
                for lib in ("fp32_torch_ms", "fp32_openblas_ms", "bf16_torch_ms")}

    alone_steps = statistics.mean(steps for steps, _ in alone)
    return {
        "matmuls_ms": kernels,
        # Measured, not a bound: reading the audio, YAMNet and the bridge, per clip in a batch of 8
        # (part of every measured caption time above; the frozen CLAP, outside the LLM's floor).
        "audio_and_clap_per_clip_s": round(clap_per_clip, 3),
        "caption_alone": {
            "target_s": 0.4, "measured_s": decode["default"]["caption_batch1_s"]["median"],
            "prompt_positions": caption_prompt, "decode_steps_mean": round(alone_steps, 2),
            "rows_per_step": 8, "floor_s": floors("caption_prompt", alone_steps, "step_8_rows")},
        "caption_batch8_per_clip": {
            "target_s": 0.25, "measured_s": decode["default"]["caption_batch8_per_clip_s"]["median"],
            "prompt_positions": batch8_prompt, "decode_steps": steps_batch8, "rows_per_step": 64,
            "floor_s": floors("caption_prompts_batch8", steps_batch8, "step_64_rows", per=8)},
        "fresh_tag": {
            "target_s": 3.0, "measured_s": start["mats_tag_fresh_s"]["median"],
            "import_floor_s": start["import_floor_s"]["median"], "import_torch_s": start["import_torch_s"]["median"],
            "prompt_positions": tag_prompt, "decode_steps": steps_tag, "rows_per_step": 8,
            "floor_s": floors("tag_prompt", steps_tag, "step_8_rows", plus=start["import_floor_s"]["median"])},
    }


def speed_rows(args, clips: list[Path]) -> dict:
    import torch

    from mats.model import MATSModel
    from mats.pipeline import MATS

    default = MATS.from_pretrained(args.model, device=args.device)  # merged LoRA, prefill once, auto dtype
    fast = MATS.from_pretrained(args.model, device=args.device, dtype="fast", clap=default.clap)
    wrapped = MATSModel.from_pretrained(default.folder, device=args.device, merge=False, dtype="fp32")
    peft = MATS(wrapped, default.clap, default.folder, default.santa, default.shift)

    def before(files, **kw):
        wrapped.prefill_once = False
        try:
            return peft.caption(files, **kw)
        finally:
            wrapped.prefill_once = True

    variants = {"before": before, "prefill_once": peft.caption, "default": default.caption, "fast": fast.caption}
    for fn in variants.values():
        fn(clips[:1])  # warm-up
    b1 = {k: [] for k in variants}
    b8 = {k: [] for k in variants}
    texts = {k: [] for k in variants}
    for c in clips:
        for k, fn in variants.items():
            t = time.perf_counter()
            texts[k].extend(fn([c]))
            b1[k].append(time.perf_counter() - t)
    batched = {}  # each variant's captions of the 8 clips decoded as one batch
    for _ in range(args.repeats):
        for k, fn in variants.items():
            t = time.perf_counter()
            batched[k] = fn(clips[:8], batch_size=8)
            b8[k].append((time.perf_counter() - t) / 8)
    decode = {"default_weights": str(default.model.llm.dtype), "fast_weights": str(fast.model.llm.dtype),
              "clips": len(clips)}
    for k in variants:
        decode[k] = {"caption_batch1_s": summary(b1[k]), "caption_batch8_per_clip_s": summary(b8[k]),
                     "speedup_batch1": round(statistics.median(b1["before"]) / statistics.median(b1[k]), 3),
                     "speedup_batch8": round(statistics.median(b8["before"]) / statistics.median(b8[k]), 3),
                     "captions_equal_to_before": sum(a == b for a, b in zip(texts[k], texts["before"], strict=True)),
                     "batch_of_8_equal_to_alone": sum(a == b for a, b in zip(batched[k], texts[k][:8], strict=True))}

    # Decode steps against the floors: weights read once per step, at the memory's rate and at the
    # rate the matmul kernels stream them.
    emb = default.embed_audio(clips[:1])
    floors = {"read_bandwidth_gb_s": read_bandwidth_gbs()}
    for name, m in (("default", default), ("fast", fast)):
        dtype = next(m.model.llm.parameters()).dtype
        nbytes = sum(p.numel() * p.element_size() for p in m.model.llm.parameters())
        row = {"dtype": str(dtype), "llm_weight_bytes": nbytes,
               "bandwidth_floor_ms": round(1000 * nbytes / (floors["read_bandwidth_gb_s"] * 1e9), 2)}
        for rows, beams in ((1, 1), (8, 8)):
            kw = dict(num_beams=beams, rerank=0) | ({"length_penalty": 0.0} if beams > 1 else {})
            short = [timed(lambda m=m, kw=kw: m.generate(emb, "caption", max_new_tokens=1, min_new_tokens=1, **kw))
                     for _ in range(3)]
            long = [timed(lambda m=m, kw=kw: m.generate(emb, "caption", max_new_tokens=21, min_new_tokens=21, **kw))
                    for _ in range(3)]
            stream = matmul_stream_gbs(dtype, rows)
            row[f"{rows}_rows"] = {
                "decode_step_ms": round(1000 * (statistics.median(long) - statistics.median(short)) / 20, 2),
                "matmul_stream_gb_s": stream,
                "matmul_floor_ms": round(1000 * nbytes / (stream * 1e9), 2)}
        floors[name] = row

    # Label embeddings: encoded (what every fresh run did) vs read from the disk cache.
    clap = default.clap
    texts_ = [clap.label_prompt.format(label=n) for n in clap.class_names]
    enc = [timed(lambda: clap.encode_text(texts_)) for _ in range(args.repeats)]
    cached = []
    for _ in range(args.repeats):
        clap._label_cache = {}
        cached.append(timed(clap.label_embeddings))
    py = [sys.executable]
    tag = py + ["-m", "mats.cli", "tag", str(clips[0])] + (["--model", args.model] if args.model else [])
    start = {
        "python_s": fresh(py + ["-c", "pass"], args.repeats),
        "import_torch_s": fresh(py + ["-c", "import torch"], args.repeats),
        "import_mats_pipeline_s": fresh(py + ["-c", "import mats.pipeline"], args.repeats),
        "import_floor_s": fresh(py + ["-c", IMPORT_FLOOR], args.repeats),
        "mats_help_s": fresh(py + ["-m", "mats.cli", "--help"], args.repeats),
        "mats_tag_fresh_s": fresh(tag, args.repeats),
        "mats_tag_fresh_fast_s": fresh(tag + ["--dtype", "fast"], args.repeats),
        "fresh_tag_phases": fresh_tag_phases(clips[0], args.model, args.repeats),
        "unreadable": unreadable_rows(args, clips),
        "label_embeddings_encode_s": summary(enc),
        "label_embeddings_disk_cache_s": summary(cached),
    }
    threads = {
        "tag_2_threads_spinning_s": fresh(tag, args.repeats, {"OMP_WAIT_POLICY": "ACTIVE", "MATS_THREADS": "2"}),
        "tag_2_threads_passive_s": fresh(tag, args.repeats, {"OMP_WAIT_POLICY": "PASSIVE", "MATS_THREADS": "2"}),
        "tag_1_thread_passive_s": fresh(tag, args.repeats, {"OMP_WAIT_POLICY": "PASSIVE", "MATS_THREADS": "1"}),
    }
    return {"machine": {"platform": platform.platform(), "cpus_available": len(os.sched_getaffinity(0)),
                        "torch": torch.__version__, "torch_threads": torch.get_num_threads()},
            "decode": decode, "floors": floors, "start": start,
            "targets": target_floors(default, clips, decode, start),
            "text_encoding": text_encoding_rows(clap), "threads": threads}


# VmHWM (this process's memory map, new at exec), not getrusage's ru_maxrss, which Linux carries
# over from the parent across fork and exec (it reported the benchmark's own peak for both runtimes).
PEAK_RSS = """
import json, sys
from mats import MATS
m = MATS.from_pretrained(sys.argv[1] or None, runtime=sys.argv[2])
m.caption(sys.argv[3:], batch_size=8)
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"peak_rss_mb": int(hwm.split()[1]) / 1024}))
"""


def runtime_rows(args, clips: list[Path]) -> dict:
    """torch vs ONNX Runtime, alternated (see the module's docstring, ``runtimes``)."""
    import tempfile

    import torch

    from mats.pipeline import MATS

    py = [sys.executable]
    model_args = ["--model", args.model] if args.model else []
    names = ("torch", "onnx")
    with tempfile.TemporaryDirectory() as tmp:
        export = fresh(py + ["-m", "mats.cli", "export", "onnx", "--out", str(Path(tmp) / "onnx")] + model_args, 1)
    models = {name: MATS.from_pretrained(args.model, runtime=name) for name in names}
    for m in models.values():
        m.caption(clips[:1])  # warm-up: first-call allocations, sessions, prompt cache, label embeddings

    def order(i: int) -> tuple[str, ...]:
        return names if i % 2 == 0 else names[::-1]

    alone = {n: [] for n in names}
    texts = {n: [] for n in names}
    for i, c in enumerate(clips):
        for n in order(i):
            t = time.perf_counter()
            texts[n] += models[n].caption([c])
            alone[n].append(time.perf_counter() - t)
    batch8 = {n: [] for n in names}
    batched = {}
    for i in range(args.repeats):
        for n in order(i):
            t = time.perf_counter()
            batched[n] = models[n].caption(clips[:8], batch_size=8)
            batch8[n].append((time.perf_counter() - t) / 8)

    emb = models["torch"].embed_audio(clips[:1])
    short, long = {n: [] for n in names}, {n: [] for n in names}
    for i in range(5):  # alternated, so both runtimes see the same machine
        for n in order(i):
            m = models[n]
            short[n].append(timed(lambda m=m: m.generate(emb, "caption", num_beams=1, rerank=0, max_new_tokens=1,
                                                         min_new_tokens=1)))
            long[n].append(timed(lambda m=m: m.generate(emb, "caption", num_beams=1, rerank=0, max_new_tokens=21,
                                                        min_new_tokens=21)))
    steps = {n: round(1000 * (statistics.median(long[n]) - statistics.median(short[n])) / 20, 2) for n in names}
    llm = models["torch"].model.llm
    nbytes = sum(p.numel() * p.element_size() for p in llm.parameters())
    bandwidth = read_bandwidth_gbs()
    greedy_step = {
        "decode_step_ms": steps,
        "matmul_floor_ms_torch": round(llm_matmul_ms(llm, 1, torch.float32), 2),
        "matmul_floor_ms_openblas": round(llm_matmul_ms(llm, 1, torch.float32, library="numpy"), 2),
        "bandwidth_floor_ms": round(1000 * nbytes / (bandwidth * 1e9), 2), "read_bandwidth_gb_s": bandwidth,
        "llm_weight_bytes": nbytes}
    greedy_step["onnx_step_over_matmul_floor"] = round(steps["onnx"] / min(
        greedy_step["matmul_floor_ms_torch"], greedy_step["matmul_floor_ms_openblas"]), 2)
    del models

    tag = py + ["-m", "mats.cli", "tag", str(clips[0])] + model_args
    # "default": `mats tag FILE` as a user types it (no --runtime, no MATS_RUNTIME): "auto"
    fresh_rows = {"import_torch": [], "torch": [], "onnx": [], "default": []}
    cmds = {"import_torch": py + ["-c", "import torch"], "torch": tag + ["--runtime", "torch"],
            "onnx": tag + ["--runtime", "onnx"], "default": tag}
    # As after any `pip install` (which compiles the modules): bytecode cached, each command run once
    # first to write it, so a sandbox's PYTHONDONTWRITEBYTECODE does not make mats compile its sources
    # in every process while torch's were compiled at install.
    as_installed = {"MATS_RUNTIME": None, "PYTHONDONTWRITEBYTECODE": None}
    for n in fresh_rows:
        fresh(cmds[n], 1, env=as_installed)
    for i in range(args.repeats):
        for n in (list(fresh_rows) if i % 2 == 0 else list(fresh_rows)[::-1]):
            fresh_rows[n].append(fresh(cmds[n], 1, env=as_installed)["median"])
    phases = {n: fresh_tag_phases(clips[0], args.model, args.repeats, n) for n in names}
    env = {k: v for k, v in os.environ.items() if k not in as_installed}
    p = subprocess.run(py + ["-X", "importtime", "-m", "mats.cli", "tag", str(clips[0])] + model_args,
                       capture_output=True, text=True, env=env)
    imported = {line.rsplit("|", 1)[-1].strip() for line in p.stderr.splitlines() if line.startswith("import time:")}
    memory = {}
    for n in names:
        out = subprocess.run(py + ["-c", PEAK_RSS, args.model or "", n] + [str(c) for c in clips[:8]],
                             capture_output=True, text=True, check=True).stdout
        memory[n] = round(json.loads(out.strip().splitlines()[-1])["peak_rss_mb"], 1)

    def ratio(rows: dict) -> float:
        return round(statistics.median(rows["torch"]) / statistics.median(rows["onnx"]), 3)

    fresh_summary = {n: summary(v) for n, v in fresh_rows.items()}
    return {
        "machine": {"platform": platform.platform(), "cpus_available": len(os.sched_getaffinity(0)),
                    "torch": torch.__version__, "threads": torch.get_num_threads()},
        "export_first_use_s": export,
        "caption_alone_s": {n: summary(v) for n, v in alone.items()} | {"ratio_torch_over_onnx": ratio(alone)},
        "caption_batch8_per_clip_s": {n: summary(v) for n, v in batch8.items()}
        | {"ratio_torch_over_onnx": ratio(batch8)},
        "captions_equal_alone": f"{sum(a == b for a, b in zip(texts['torch'], texts['onnx'], strict=True))}"
                                f"/{len(clips)}",
        "captions_equal_batch8": f"{sum(a == b for a, b in zip(batched['torch'], batched['onnx'], strict=True))}/8",
        "onnx_batch8_equal_to_alone": f"{sum(a == b for a, b in zip(batched['onnx'], texts['onnx'], strict=True))}/8",
        "greedy_step": greedy_step,
        "fresh_tag_s": fresh_summary | {
            "onnx_over_import_torch": round(fresh_summary["onnx"]["median"]
                                            / fresh_summary["import_torch"]["median"], 2),
            "default_over_import_torch": round(fresh_summary["default"]["median"]
                                               / fresh_summary["import_torch"]["median"], 2),
            "torch_over_import_torch": round(fresh_summary["torch"]["median"]
                                             / fresh_summary["import_torch"]["median"], 2)},
        "fresh_tag_phases": phases,
        # `python -X importtime -m mats tag FILE` (the default runtime)
        "default_tag_imports_torch": "torch" in imported,
        "default_tag_imports_transformers": "transformers" in imported,
        "peak_rss_mb": memory,
    }


def speed_main(args) -> int:
    from mats.data.sounds import fetch_real_sounds

    clips = sorted((fetch_real_sounds() / "clips").rglob("*.wav"))[: args.clips]
    if args.unreadable_only:
        result = {"unreadable": unreadable_rows(args, clips), "clip": clips[0].name}
    elif args.runtimes_only:
        result = {"runtimes": runtime_rows(args, clips), "clips": [c.name for c in clips]}
    else:
        result = {"speed": speed_rows(args, clips), "clips": [c.name for c in clips]}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
