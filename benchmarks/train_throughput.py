"""Training-step throughput: MATS's training step next to a minimal plain PyTorch loop doing the same math.

For each LLM and batch size two paths are timed in the same process, on the same batches:

- ``mats_*``: the trainer's real step, ``mats.train.step.train_step`` (Gaussian noise on the CLAP
  text embeddings, prompts through ``MATSModel.build_inputs``, answer-only cross-entropy summed and
  divided by the answer-token count, backward, gradient clipping, AdamW; then the LR schedule), in
  variants timed round-robin step by step in one run: ``mats_before`` (the step before the speed
  work: the output layer over every position, kept in this file to measure against), ``mats_step``
  (output layer at answer positions only) and, on CPUs with native bf16 or on CUDA when the run is
  fp32, ``mats_step_bf16`` (plus bf16 autocast: what ``precision="auto"`` picks there),
  ``mats_step_bf16_bucketed`` (plus length-bucketed batches) and ``mats_step_bf16_trainer`` (plus the
  frozen weights stored in bf16 and eager attention on CPU: how ``mats train`` runs the step now);
- ``plain``: the same LLM + peft LoRA + a hand-written mapper of the same shape, inputs tokenised
  once before timing, ``inputs_embeds`` built with one batched ``cat``, the same CE / clip / AdamW.

``speedup_*_over_before`` are the ratios of median step times; ``step_over_plain_step_time`` is our
overhead over the plain loop. Reported: median step time over ``--steps`` timed
steps after ``--warmup`` steps, samples/s, tokens/s (non-padding positions, prefix included) and
answer tokens/s.

Runs:

- ``real``: the default config (``configs/default.json``: SmolLM2-135M-Instruct from the offline
  store, its mapper and LoRA), batches 8 and 16, on ``--device`` (CPU unless given);
- ``--shapes``: LLMs with random weights and exact shapes (compute does not depend on the values):
  ``smollm2-135m`` and ``vicuna-7b`` with the paper's mapper (8 x 1024, 40 + 40 tokens, plain prompt,
  sequences of about 95 positions), bf16 autocast, batches 12 and 48 (the defaults when CUDA is
  available); ``tiny`` (hidden 64, 2 layers) is a quick smoke test anywhere.

    python benchmarks/train_throughput.py                       # real default config on CPU (+ shapes on CUDA)
    python benchmarks/train_throughput.py --skip-real --shapes tiny --steps 2 --warmup 1
    python benchmarks/train_throughput.py --device cuda --skip-real --shapes vicuna-7b --batches 12,48

JSON goes to stdout (and ``--out FILE``); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import platform
import random
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from _output import emit  # benchmarks/ is on sys.path when a script runs
from torch import nn

ROOT = Path(__file__).resolve().parents[1]

# Random-weight LLM shapes (LlamaConfig arguments).
SHAPES = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=49152, tie_word_embeddings=True),
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True,
                         rope_theta=100000.0),
    "vicuna-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=32, vocab_size=32000, tie_word_embeddings=False),
}

WORDS = ("a dog barks loudly while cars pass by on a wet road and people talk in the distance "
         "birds chirp wind blows through trees a bell rings twice music plays softly with drums "
         "guitar and a male voice singing over a steady beat rain falls on a metal roof").split()


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- tokenizers ------------------------------------------------------------------------------------
class ModuloTokenizer:
    """Wraps a tokenizer so ids fit a smaller vocabulary (``id % vocab``). Only for random-weight
    shapes, where which ids are looked up does not change the compute."""

    def __init__(self, tok, vocab: int):
        self._tok, self._vocab = tok, vocab

    def __getattr__(self, name):
        return getattr(self._tok, name)

    def __len__(self) -> int:
        return self._vocab

    def __call__(self, text, **kwargs):
        ids = self._tok(text, **kwargs)["input_ids"]
        if ids and isinstance(ids[0], list):
            return {"input_ids": [[i % self._vocab for i in row] for row in ids]}
        return {"input_ids": [i % self._vocab for i in ids]}

    @property
    def eos_token_id(self):
        return self._tok.eos_token_id % self._vocab

    @property
    def pad_token_id(self):
        return self._tok.pad_token_id % self._vocab

    @property
    def bos_token_id(self):
        return None if self._tok.bos_token_id is None else self._tok.bos_token_id % self._vocab


def shape_tokenizer():
    """SmolLM2's tokenizer from the offline store if it is there (no model load), else a word-level
    stand-in built in memory (token counts then differ from a real BPE tokenizer)."""
    try:
        from transformers import AutoTokenizer

        from mats import store
        from mats.llm import _gguf_cache_dir, resolve_llm
        if store.is_cached("smollm2-135m-instruct"):
            folder, gguf = resolve_llm("smollm2-135m-instruct")
            if gguf is not None:
                folder = _gguf_cache_dir(folder, gguf)
            tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
            return tok, "smollm2 (offline store)"
    except Exception as e:  # noqa: BLE001 - fall back below
        log(f"no SmolLM2 tokenizer ({type(e).__name__}: {e}); using a word-level stand-in")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>"] + sorted(set(WORDS) | {
        "USER", "ASSISTANT", "Speech", "audio", "caption", "Describe", "the", "following", "in", "tags"}))}
    t = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=t, bos_token="<s>", eos_token="</s>", pad_token="</s>",
                                  unk_token="<unk>")
    return tok, "word-level stand-in"


# -- the batches both paths see ----------------------------------------------------------------------
def corpus_requests(cfg, limit: int = 4000):
    """(task, instruction, answer) rows from the config's corpus files when present."""
    from mats.data.corpus import read_jsonl

    rows = []
    for spec in cfg.train.corpus:
        path = Path(spec.path) if Path(spec.path).is_absolute() else ROOT / spec.path
        if path.is_file():
            rows.extend(read_jsonl(path)[: limit // max(1, len(cfg.train.corpus))])
    return rows


def synthetic_requests(n: int, answer_words: tuple[int, int], seed: int = 0):
    from mats.data.corpus import Sample

    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(*answer_words)))
        task = ("caption", "tags", "qa")[i % 3]
        out.append(Sample(text=words, task=task, answer=words.capitalize() + ".",
                          instruction="What is happening in this recording?" if task == "qa" else None))
    return out


def make_batches(samples, n_steps: int, batch: int, clap_dim: int, seed: int = 0):
    """Per step: unit CLAP-like embeddings [B, clap_dim] and Requests (instruction variants drawn as
    the trainer draws them)."""
    from mats.bridge.noise import l2_normalize
    from mats.data.corpus import pick_instruction
    from mats.model import Request

    rng = np.random.default_rng(seed)
    prng = random.Random(seed)
    batches = []
    for _ in range(n_steps):
        rows = rng.choice(len(samples), size=batch, replace=True)
        z = l2_normalize(torch.from_numpy(rng.standard_normal((batch, clap_dim)).astype(np.float32)))
        reqs = [Request(samples[r].task, pick_instruction(samples[r], prng), samples[r].answer) for r in rows]
        batches.append((z, reqs))
    return batches


# -- models ------------------------------------------------------------------------------------------
@dataclass
class Setup:
    name: str
    model_cfg: object  # mats.model.ModelConfig
    device: torch.device
    precision: str  # fp32 | bf16
    shape: dict | None = None  # LlamaConfig kwargs for random weights; None = the configured LLM
    tokenizer: object = None


def build_llm(setup: Setup, dtype: str | None = None):
    """(frozen base LLM, tokenizer) on the device; weights in ``dtype`` (default: the setup's precision)."""
    from mats.llm import load_llm

    if setup.shape is None:
        return load_llm(setup.model_cfg.llm, device=setup.device, dtype=dtype or setup.precision)
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = setup.tokenizer
    config = LlamaConfig(max_position_embeddings=2048, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **setup.shape)
    dtype = torch.bfloat16 if (dtype or setup.precision) == "bf16" else torch.float32
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built directly in bf16 on the device: no fp32 copy of a 7B model
    try:
        with torch.device(setup.device):
            llm = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    llm.eval()
    for p in llm.parameters():
        p.requires_grad_(False)
    return llm, tok


def autocast(setup: Setup):
    if setup.precision == "bf16":
        return torch.autocast(setup.device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class PlainMapper(nn.Module):
    """ClipCap-style mapper written out by hand: the same shapes and math as mats.mapper's."""

    def __init__(self, clap_dim, clip, prefix, width, depth, heads, mlp_ratio, hidden):
        super().__init__()
        self.clip, self.width = clip, width
        self.to_clip = nn.Linear(clap_dim, clip * width)
        self.constants = nn.Parameter(torch.randn(prefix, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, int(width * mlp_ratio), dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.to_llm = nn.Linear(width, hidden)

    def forward(self, z):
        b = z.shape[0]
        x = torch.cat([self.to_clip(z).view(b, self.clip, self.width),
                       self.constants.unsqueeze(0).expand(b, -1, -1)], 1)
        return self.to_llm(self.norm(self.transformer(x))[:, self.clip:])


def time_steps(step, n_warmup: int, n_steps: int, device: torch.device) -> list[float]:
    times = []
    for i in range(n_warmup + n_steps):
        sync(device)
        t = time.perf_counter()
        step(i)
        sync(device)
        if i >= n_warmup:
            times.append(time.perf_counter() - t)
    return times


def _full_logits_class():
    from mats.model import IGNORE, MATSModel

    class FullLogits(MATSModel):
        """The step as it was before the speed work: the output layer over every position, then
        the answer-only cross-entropy. Kept here only to measure the real step against."""

        def forward(self, clap_embeddings, requests, reduction="mean"):
            batch = self.build_inputs(clap_embeddings, requests, with_answers=True)
            labels = batch.pop("labels")
            logits = self.llm(**batch).logits[:, :-1].float()
            return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                               ignore_index=IGNORE, reduction=reduction)

    return FullLogits


def mats_variants(setup: Setup) -> list[tuple[str, bool, str, bool, bool]]:
    """(name, output layer at answer positions only, autocast precision, length-bucketed batches,
    trainer set-up) of the real step to time. ``before``: main before the speed work (full logits,
    the setup's precision). ``trainer set-up``: the frozen weights stored in the autocast precision
    and the trainer's attention choice (``mats.train.trainer.prepare_frozen_llm``), as ``mats train``
    now runs the step; the other variants keep fp32 frozen weights and SDPA."""
    from mats.llm import native_bf16_cpu

    out = [("before", False, setup.precision, False, False), ("step", True, setup.precision, False, False)]
    fast = setup.device.type == "cuda" or (setup.device.type == "cpu" and native_bf16_cpu())
    if setup.precision == "fp32" and fast:
        out.append(("step_bf16", True, "bf16", False, False))
        out.append(("step_bf16_bucketed", True, "bf16", True, False))
        out.append(("step_bf16_trainer", True, "bf16", False, True))
    else:
        out.append(("step_bucketed", True, setup.precision, True, False))
        out.append(("step_trainer", True, setup.precision, False, True))
    return out


def bucketed(batches):
    """The same samples regrouped as ``train.batching="bucketed"`` groups them: one window of all
    the steps, sorted by answer length and cut into batches (mats.train.batching.epoch_batches)."""
    from mats.train.batching import epoch_batches

    z = torch.cat([b[0] for b in batches])
    reqs = [r for b in batches for r in b[1]]
    size = len(batches[0][1])
    order = epoch_batches(np.array([len(r.answer) for r in reqs]), size, seed=0, epoch=0, window=len(batches))
    return [(z[torch.from_numpy(o)], [reqs[i] for i in o]) for o in order]


def build_mats_step(setup: Setup, answer_only: bool, precision: str, tcfg, trainer_setup: bool = False):
    """A fresh model + optimiser and a function running the trainer's real step (train_step) on
    batch i, as the trainer's loop does (noise, train_step, LR schedule). ``trainer_setup``: frozen
    weights in ``precision`` and the trainer's attention choice, as ``mats.train.trainer.train``."""
    from mats.bridge.noise import add_noise
    from mats.model import MATSModel
    from mats.train.step import train_step
    from mats.train.trainer import lr_factor, prepare_frozen_llm, step_generators

    llm, tok = build_llm(setup, precision if trainer_setup else None)
    torch.manual_seed(0)
    cls = MATSModel if answer_only else _full_logits_class()
    model = cls.from_config(replace(setup.model_cfg), llm=llm, tokenizer=tok)
    if trainer_setup:
        prepare_frozen_llm(model, setup.device)
    model.mapper.to(setup.device)
    model.train()
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=tcfg.lr, betas=tuple(tcfg.betas),
                            weight_decay=tcfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, tcfg.warmup_steps, tcfg.steps, tcfg.min_lr_ratio))
    gen = torch.Generator().manual_seed(0)
    cast = torch.autocast(setup.device.type, dtype=torch.bfloat16) if precision == "bf16" else None

    def step(i, batch):
        step_generators(tcfg.seed, i, setup.device)  # per-step seeding, as in the trainer
        z, reqs = batch
        z = add_noise(z, tcfg.noise_variance, tcfg.noise_kind, generator=gen)
        loss = train_step(model, (z, reqs), opt, grad_clip=tcfg.grad_clip, autocast=cast)
        sched.step()
        return loss

    return model, step


def run_mats_variants(setup: Setup, batches, n_warmup: int, tcfg) -> dict[str, dict]:
    """The real step in each variant, timed round-robin step by step (same batches, same machine
    state), so the ratios between them are fair on a shared machine."""
    variants = mats_variants(setup)
    built = {name: build_mats_step(setup, answer_only, prec, tcfg, trainer)
             for name, answer_only, prec, _, trainer in variants}
    regrouped = bucketed(batches)
    data = {name: regrouped if buck else batches for name, _, _, buck, _ in variants}
    times = {name: [] for name in built}
    losses = {name: [] for name in built}
    totals = {name: 0.0 for name in built}  # every step: the bucketed variant sees other batches
    for i in range(len(batches)):
        for name, (_, step) in built.items():
            sync(setup.device)
            t = time.perf_counter()
            losses[name].append(round(step(i, data[name][i]), 5))
            sync(setup.device)
            totals[name] += time.perf_counter() - t
            if i >= n_warmup:
                times[name].append(time.perf_counter() - t)
    model = next(iter(built.values()))[0]
    stats = {}
    with torch.no_grad():  # sizes of the timed batches (outside the timing)
        for kind, group in (("random", batches), ("bucketed", regrouped)):
            stats[kind] = {"tokens": [], "answer": [], "seq": []}
            for z, reqs in group[n_warmup:]:
                b = model.build_inputs(z, reqs, with_answers=True)
                stats[kind]["tokens"].append(int(b["attention_mask"].sum()))
                stats[kind]["answer"].append(int((b["labels"] != -100).sum()))
                stats[kind]["seq"].append(b["attention_mask"].shape[1])
    n_trainable = sum(p.numel() for p in model.trainable_parameters())
    out = {}
    for name, answer_only, prec, buck, trainer in variants:
        r = _result(f"mats_{name}", times[name], batches, stats["bucketed" if buck else "random"],
                    n_trainable, setup.device)
        out[name] = {**r, "logits": "answer positions" if answer_only else "all positions",
                     "autocast": prec, "batches": "length-bucketed" if buck else "random",
                     "frozen_weights": prec if trainer else setup.precision,
                     "attention": "trainer's choice (eager on CPU)" if trainer else "sdpa",
                     "total_s_all_steps": round(totals[name], 3),
                     "losses": losses[name]}
    del built, model
    return out


def run_plain(setup: Setup, batches, n_warmup: int, tcfg) -> dict:
    """A minimal loop: same LLM + peft LoRA + same-shape mapper, pre-tokenised inputs."""
    from peft import LoraConfig, get_peft_model

    from mats.prompts import get_task, render_prompt

    llm, tok = build_llm(setup)
    mc = setup.model_cfg
    lc = mc.lora
    llm = get_peft_model(llm, LoraConfig(r=lc.r, lora_alpha=lc.alpha, lora_dropout=lc.dropout,
                                         target_modules=list(lc.target_modules), bias="none",
                                         task_type="CAUSAL_LM"))
    m = mc.mapper
    torch.manual_seed(0)
    mapper = PlainMapper(m.clap_dim, m.clip_length, m.prefix_length, m.width, m.depth, m.heads, m.mlp_ratio,
                         llm.config.hidden_size).to(setup.device)
    mapper.train()
    llm.train()
    params = [p for p in list(mapper.parameters()) + list(llm.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=tcfg.lr, betas=tuple(tcfg.betas), weight_decay=tcfg.weight_decay)
    embed = llm.get_input_embeddings()

    # Tokenise everything once, outside the timing.
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    prepared, stats = [], {"tokens": [], "answer": [], "seq": []}
    for z, reqs in batches:
        befores, rests, labels = [], [], []
        for r in reqs:
            before, after = render_prompt(tok, get_task(r.task).name, r.instruction, mc.prompt_style,
                                          mc.system_prompt)
            answer = enc(r.answer)[: mc.max_answer_tokens] + [tok.eos_token_id]
            befores.append(enc(before))
            a = enc(after)
            rests.append(a + answer)
            labels.append([-100] * len(a) + answer)
        assert all(b == befores[0] for b in befores), "the text before the prefix differs between tasks"
        width = max(len(r) for r in rests)
        rest_ids = torch.full((len(reqs), width), tok.pad_token_id, dtype=torch.long)
        lab = torch.full((len(reqs), len(befores[0]) + m.prefix_length + width), -100, dtype=torch.long)
        mask = torch.zeros(lab.shape, dtype=torch.long)
        for i, (r, lb) in enumerate(zip(rests, labels, strict=True)):
            rest_ids[i, :len(r)] = torch.tensor(r)
            lab[i, len(befores[0]) + m.prefix_length:][:len(lb)] = torch.tensor(lb)
            mask[i, :len(befores[0]) + m.prefix_length + len(r)] = 1
        before_ids = torch.tensor(befores[0]).expand(len(reqs), -1)
        d = setup.device
        prepared.append((z.to(d), before_ids.to(d), rest_ids.to(d), lab.to(d), mask.to(d)))
        stats["tokens"].append(int(mask.sum()))
        stats["answer"].append(int((lab != -100).sum()))
        stats["seq"].append(lab.shape[1])
    std = tcfg.noise_variance ** 0.5

    def step(i):
        z, before_ids, rest_ids, lab, mask = prepared[i]
        z = z / z.norm(dim=-1, keepdim=True)
        z = z + torch.randn_like(z) * std
        z = z / z.norm(dim=-1, keepdim=True)
        with autocast(setup):
            prefix = mapper(z).to(embed.weight.dtype)
            x = torch.cat([embed(before_ids), prefix, embed(rest_ids)], 1)
            logits = llm(inputs_embeds=x, attention_mask=mask).logits
        loss = nn.functional.cross_entropy(logits[:, :-1].float().flatten(0, 1), lab[:, 1:].flatten(),
                                           ignore_index=-100)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, tcfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)

    times = time_steps(step, n_warmup, len(batches) - n_warmup, setup.device)
    for k in stats:
        stats[k] = stats[k][n_warmup:]
    n_trainable = sum(p.numel() for p in params)
    llm = mapper = opt = prepared = None  # free them before the next variant (step() is done with them)
    return _result("plain", times, batches, stats, n_trainable, setup.device)


def _result(path, times, batches, stats, n_trainable, device) -> dict:
    med = statistics.median(times)
    b = len(batches[0][1])
    out = {
        "path": path, "batch": b, "step_s_median": round(med, 4), "step_s_all": [round(t, 4) for t in times],
        "samples_per_s": round(b / med, 2),
        "tokens_per_s": round(statistics.mean(stats["tokens"]) / med, 1),
        "answer_tokens_per_s": round(statistics.mean(stats["answer"]) / med, 1),
        "seq_len_mean": round(statistics.mean(stats["tokens"]) / b, 1),
        "seq_len_padded_mean": round(statistics.mean(stats["seq"]), 1),
        "trainable_params": n_trainable,
    }
    if device.type == "cuda":
        out["peak_gpu_mem_gb"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2)
    return out


def _cleanup(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


class _Skip(Exception):
    pass


def bench(setup: Setup, samples, batch_sizes, steps: int, warmup: int, tcfg,
          skip_plain: bool = False) -> list[dict]:
    results = []
    for b in batch_sizes:
        batches = make_batches(samples, warmup + steps, b, setup.model_cfg.mapper.clap_dim)
        row = {"llm": setup.name, "device": str(setup.device), "precision": setup.precision}
        _cleanup(setup.device)
        log(f"{setup.name} batch {b}: the real step, variants round-robin ...")
        try:
            pair = {f"mats_{k}": v for k, v in run_mats_variants(setup, batches, warmup, tcfg).items()}
        except torch.cuda.OutOfMemoryError as e:
            pair = {"mats_step": {"path": "mats_step", "batch": b, "error": f"out of memory: {e}".splitlines()[0]}}
        _cleanup(setup.device)
        log(f"{setup.name} batch {b}: plain ...")
        try:
            if skip_plain:
                raise _Skip
            pair["plain"] = run_plain(setup, batches, warmup, tcfg)
        except _Skip:
            pass
        except torch.cuda.OutOfMemoryError as e:  # report and go on with the next size
            pair["plain"] = {"path": "plain", "batch": b, "error": f"out of memory: {e}".splitlines()[0]}
        for r in pair.values():
            log(f"  {json.dumps(r)}")
            results.append({**row, **r})
        med = {k: v["step_s_median"] for k, v in pair.items() if "step_s_median" in v}
        ratios = {}
        if "total_s_all_steps" in pair.get("mats_before", {}):
            ratios.update({f"speedup_total_{k[5:]}_over_before": round(
                pair["mats_before"]["total_s_all_steps"] / v["total_s_all_steps"], 3)
                for k, v in pair.items() if k.startswith("mats_") and k != "mats_before" and "total_s_all_steps" in v})
        if "mats_before" in med:
            ratios.update({f"speedup_{k[5:]}_over_before": round(med["mats_before"] / v, 3)
                           for k, v in med.items() if k.startswith("mats_") and k != "mats_before"})
        if "mats_step" in med and "plain" in med:
            ratios["step_over_plain_step_time"] = round(med["mats_step"] / med["plain"], 3)
        if ratios:
            results.append({**row, "path": "ratio", "batch": b, **ratios})
        _cleanup(setup.device)
    return results


def main(argv=None) -> int:
    from mats.llm import pick_device
    from mats.mapper import MapperConfig
    from mats.model import ModelConfig
    from mats.train.config import RunConfig

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None,
                    help="device for all runs (default: cpu for the real model, cuda for --shapes when available)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per measurement (median reported)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--batches", default=None,
                    help="comma-separated batch sizes for every run (default: 8,16 real; 12,48 shapes)")
    ap.add_argument("--skip-real", action="store_true", help="skip the real default-config model")
    ap.add_argument("--config", default=str(ROOT / "configs" / "default.json"), help="config of the real run")
    ap.add_argument("--shapes", "--llm-shape", dest="shapes", default=None,
                    help=f"random-weight LLM shapes, comma-separated, from {sorted(SHAPES)} "
                         "(default: smollm2-135m,vicuna-7b when CUDA is available, else none)")
    ap.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                    help="auto: bf16 autocast on CUDA, fp32 on CPU")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--skip-plain", action="store_true", help="time only the real step's variants")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args(argv)
    if args.threads:
        from mats import threads
        threads.configure(args.threads)
    batch_override = [int(x) for x in args.batches.split(",")] if args.batches else None
    cuda = torch.cuda.is_available()
    shapes = args.shapes.split(",") if args.shapes is not None else (["smollm2-135m", "vicuna-7b"] if cuda else [])
    shapes = [s for s in (x.strip() for x in shapes) if s]
    for s in shapes:
        if s not in SHAPES:
            ap.error(f"unknown shape {s!r}; choose from {sorted(SHAPES)}")

    def precision(device):
        if args.precision != "auto":
            return args.precision
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"

    report = {"torch": torch.__version__, "python": platform.python_version(),
              "threads": torch.get_num_threads(), "cuda": torch.cuda.get_device_name() if cuda else None,
              "steps": args.steps, "warmup": args.warmup, "results": []}
    run_cfg = RunConfig.load(args.config)
    tcfg = run_cfg.train

    if not args.skip_real:
        device = pick_device(args.device or "cpu")
        setup = Setup(f"{run_cfg.model.llm} (real, {Path(args.config).name})", run_cfg.model, device,
                      precision(device))
        samples = corpus_requests(run_cfg)
        report["real_requests"] = "config corpus" if samples else "synthetic"
        samples = samples or synthetic_requests(512, (3, 12))
        report["results"] += bench(setup, samples, batch_override or [8, 16], args.steps, args.warmup, tcfg,
                                   args.skip_plain)

    if shapes:
        device = pick_device(args.device or ("cuda" if cuda else "cpu"))
        tok, tok_name = shape_tokenizer()
        report["shape_tokenizer"] = tok_name
        # The paper's mapper and plain prompt (about 95 positions: BOS + prompt + 40 prefix + answer).
        paper = RunConfig.load(ROOT / "configs" / "paper-msclap-vicuna7b.json").model
        samples = synthetic_requests(512, (12, 30))
        for name in shapes:
            shape = SHAPES[name]
            t = ModuloTokenizer(tok, shape["vocab_size"]) if len(tok) > shape["vocab_size"] else tok
            if name == "tiny":
                mcfg = ModelConfig(llm="tiny", prompt_style="plain", system_prompt=None, max_answer_tokens=48,
                                   mapper=MapperConfig(clap_dim=1024, clip_length=10, prefix_length=10, width=64,
                                                       depth=2, heads=4), lora=paper.lora)
            else:
                mcfg = replace(paper, llm=name, mapper=replace(paper.mapper), max_answer_tokens=64)
            setup = Setup(f"{name} (random weights)", mcfg, device, precision(device), shape=shape, tokenizer=t)
            report["results"] += bench(setup, samples, batch_override or [12, 48], args.steps, args.warmup, tcfg,
                                   args.skip_plain)

    return emit(report, args.out, indent=1)


if __name__ == "__main__":
    sys.exit(main())
