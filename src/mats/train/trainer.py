"""The training loop: text in, a model folder out. Read it top to bottom.

Determinism and exact resume come from one rule: everything random in step ``s`` (which rows, which
instruction variant, the noise, LoRA dropout) is drawn from generators seeded by ``(seed, s)``. A run
killed at any point and resumed from its last checkpoint therefore replays the same steps and ends
with the same weights as an uninterrupted run.

Multi-process (``torchrun --nproc-per-node N -m mats.cli train ...``): every rank draws the same global
batch and takes its slice; the loss is normalised by the global number of answer tokens, so gradients
agree with a single process on the same global batch.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from ..bridge.noise import add_noise
from ..bridge.retrieval import training_hints
from ..config import save_json
from ..data.corpus import Corpus, CorpusSource, pick_instruction
from ..llm import native_bf16_cpu, pick_device
from ..model import MATSModel, Request
from .batching import epoch_batches
from .checkpoint import all_checkpoints, resume_from_intact, save_checkpoint
from .config import RunConfig
from .parallel import full_state, wrap_model
from .step import train_step

log = logging.getLogger(__name__)


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size())


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up, then cosine decay to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def step_generators(seed: int, step: int, device: torch.device):
    s = seed * 1_000_003 + step
    torch.manual_seed(s)  # LoRA / mapper dropout
    gen = torch.Generator(device="cpu").manual_seed(s)
    return np.random.default_rng([seed, step]), random.Random(s), gen


def resolve_precision(device: torch.device, precision: str) -> str:
    """"auto" made concrete: bf16 (fp16 without bf16 support) on CUDA; bf16 on CPUs with native bf16
    (where autocast speeds the step up; emulated bf16 slows it down: docs/speed.md, "Training step");
    fp32 elsewhere."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if device.type == "cpu" and native_bf16_cpu() else "fp32"


def autocast_context(device: torch.device, precision: str):
    precision = resolve_precision(device, precision)
    if precision == "fp32":
        return torch.autocast(device.type, enabled=False), None
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    return torch.autocast(device.type, dtype=dtype), scaler


def prepare_frozen_llm(model, device: torch.device) -> None:
    """Training-only choices for the frozen LLM. On CPU, attention in plain matmuls: for these short
    sequences PyTorch's CPU flash-attention backward costs a large share of the step and the plain one
    much less, with the same math (docs/speed.md, "Training step"). GPUs keep SDPA."""
    if device.type == "cpu":
        base = model.llm.get_base_model() if hasattr(model.llm, "get_base_model") else model.llm
        base.set_attn_implementation("eager")


def batch_rows(cdf: np.ndarray, train_rows: np.ndarray, np_rng: np.random.Generator, batch_size: int) -> np.ndarray:
    """The corpus rows of one "weighted" step: ``batch_size`` draws by the rows' sampling
    probabilities (``cdf``, their running sum), from the step's generator."""
    return train_rows[cdf.searchsorted(np_rng.random(batch_size), side="right")]


def sampling_cdf(corpus: Corpus, train_rows: np.ndarray) -> np.ndarray:
    """The running sum of the training rows' sampling probabilities (per-source weights)."""
    probs = corpus.sampling_probabilities()[train_rows]
    # Generator.choice(p=probs) re-checks and re-sums p on every call (O(rows) per step, which shows
    # on corpora of millions of rows: docs/speed.md, "Training step"); its own recipe (CDF, uniform
    # draws, searchsorted) with the CDF computed once gives the very same rows.
    cdf = (probs / probs.sum()).cumsum()
    cdf /= cdf[-1]
    return cdf


def train(cfg: RunConfig, resume: bool = True, progress: bool = True, santa=None) -> Path:
    """Train and write ``train.out_dir/model``. ``santa``: the Santa memory to store with the model
    (and to read a retrieval-augmented model's training hints from) instead of one built from the
    training texts (``mats adapt`` passes the base model's memory plus the domain's texts)."""
    from ..clap import load_clap
    from ..data.cache import EmbeddingCache

    tc = cfg.train
    device = pick_device(tc.device)
    dinfo = init_distributed(device)
    if dinfo.world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", dinfo.rank)))
        torch.cuda.set_device(device)
    if dinfo.world > 1 and dinfo.main:
        log.info("[mats] data parallel: %d processes (%s)", dinfo.world, dist.get_backend())
    out = Path(tc.out_dir)
    if dinfo.main:
        out.mkdir(parents=True, exist_ok=True)
        save_json({"format": "mats-run", **cfg.to_dict()}, out / "run_config.json")

    # 1. Data: corpus rows and their CLAP text embeddings (cached on disk across runs).
    corpus = Corpus.load([CorpusSource(c.path, c.weight) for c in tc.corpus])
    train_rows, held_rows = corpus.split(tc.held_out, tc.seed)
    cdf = sampling_cdf(corpus, train_rows)
    clap = load_clap(cfg.model.clap)
    if clap.dim != cfg.model.mapper.clap_dim:
        raise ValueError(f"mapper.clap_dim={cfg.model.mapper.clap_dim} but CLAP {clap.name} has dim {clap.dim}")
    text_emb = EmbeddingCache(tc.cache_dir).embed(corpus.texts(), clap, batch_size=tc.embed_batch_size,
                                                 progress=progress and dinfo.main, rank=dinfo.rank,
                                                 world_size=dinfo.world)

    # 2. Model, optimiser, schedule.
    torch.manual_seed(tc.seed)
    # The frozen weights are stored in the step's precision: autocast would cast them to it on every
    # forward anyway (12 % of a CPU step went to those copies). The mapper and LoRA stay fp32.
    model = MATSModel.from_config(cfg.model, device=str(device), dtype=resolve_precision(device, tc.precision))
    prepare_frozen_llm(model, device)
    if tc.init_from:
        model.load_trainable_from(tc.init_from)
    model.train()
    # Wrap before building the optimiser: FSDP replaces the parameters by sharded ones.
    ddp_model = wrap_model(model, tc.strategy, dinfo.world, device)
    params = model.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, tc.warmup_steps, tc.steps, tc.min_lr_ratio))
    autocast, scaler = autocast_context(device, tc.precision)
    retrieval = cfg.model.retrieval

    start = 0
    if resume:
        # A damaged newest checkpoint is reported and skipped: the run resumes from the newest
        # intact one (every rank verifies the same files, so all ranks pick the same one).
        report = (lambda line: log.warning("%s", line)) if dinfo.main else (lambda line: None)
        ckpt, start = resume_from_intact(out, model, optimizer, scheduler, scaler, report=report)
        if ckpt is not None and dinfo.main:
            newest = all_checkpoints(out)[0]
            note = "" if ckpt == newest else " (the newest intact checkpoint)"
            log.info("[mats] resumed from %s at step %d%s", ckpt, start, note)

    # The Santa memory stored with the model; a retrieval-augmented model also reads its prompt
    # hints from it during training, so that training and inference retrieve from the same bank.
    if santa is None and (dinfo.main or retrieval.enabled):
        santa = build_santa_memory(text_emb, train_rows, corpus, cfg)

    def make_batch(rows: np.ndarray, rng: random.Random, gen: torch.Generator):
        """Noisy CLAP text embeddings and prompts for ``rows`` (the whole global batch)."""
        clean = torch.from_numpy(np.ascontiguousarray(text_emb[rows])).float()
        z = add_noise(clean, tc.noise_variance, tc.noise_kind, generator=gen)
        samples = [corpus.samples[r] for r in rows]
        hints = [None] * len(samples)
        if retrieval.enabled:
            # Related sounds, never the sample's own text: the model learns to read the hints,
            # not to copy them.
            hints = training_hints(santa, retrieval, z.numpy(), clean.numpy(), [s.text for s in samples])
        reqs = [Request(s.task, pick_instruction(s, rng), s.answer, hint)
                for s, hint in zip(samples, hints, strict=True)]
        return z, reqs

    # 3. Held-out loss: fixed rows, fixed noise, no dropout.
    def held_out_loss() -> float:
        if len(held_rows) == 0:
            return float("nan")
        model.eval()
        rng, gen = random.Random(tc.seed), torch.Generator().manual_seed(tc.seed)
        total, tokens = 0.0, 0
        with torch.no_grad():
            for i in range(0, len(held_rows), 32):
                z, reqs = make_batch(held_rows[i:i + 32], rng, gen)
                with autocast:
                    total += model(z.to(device), reqs, reduction="sum").item()
                tokens += model.answer_token_count(reqs)
        model.train()
        return total / max(tokens, 1)

    log_path = out / "log.csv"
    if start == 0:
        # Every rank runs the forward: under FSDP it is a collective (parameters are all-gathered).
        held0 = f"{held_out_loss():.5f}" if tc.held_out else None
        if dinfo.main:
            with open(log_path, "w", newline="") as f:
                csv.writer(f).writerow(["step", "lr", "loss", "held_out_loss", "samples_per_s", "elapsed_s"])
            if held0 is not None:
                _append_log(log_path, [0, 0.0, "", held0, "", 0.0])
    elapsed0 = _truncate_log(log_path, start) if dinfo.main and start > 0 else 0.0

    micro = tc.batch_size // (tc.grad_accum * dinfo.world)
    if micro * tc.grad_accum * dinfo.world != tc.batch_size:
        raise ValueError(f"batch_size {tc.batch_size} must be divisible by grad_accum x processes "
                         f"({tc.grad_accum} x {dinfo.world})")
    bar = tqdm(range(start, tc.steps), initial=start, total=tc.steps, disable=not (progress and dinfo.main),
               desc="train", unit="step", dynamic_ncols=True)
    t0, window_t, window_n, running = time.time() - elapsed0, time.time(), 0, None
    answer_chars = np.array([len(corpus.samples[r].answer) for r in train_rows])
    epochs: dict[int, list[np.ndarray]] = {}

    def bucketed(step: int) -> np.ndarray:
        """Positions in train_rows for this step: epoch by epoch, batches of similar answer length."""
        per_epoch = len(train_rows) // tc.batch_size
        if per_epoch == 0:
            raise ValueError(f"batching 'bucketed' needs at least batch_size={tc.batch_size} training rows")
        epoch, i = divmod(step, per_epoch)
        if epoch not in epochs:
            epochs.clear()
            epochs[epoch] = epoch_batches(answer_chars, tc.batch_size, tc.seed, epoch, drop_last=True)
        return epochs[epoch][i]

    for step in bar:
        # 4. One optimiser step over the global batch, drawn reproducibly from (seed, step).
        np_rng, py_rng, gen = step_generators(tc.seed, step, device)
        if tc.batching == "bucketed":
            rows = train_rows[bucketed(step)]
        else:
            rows = batch_rows(cdf, train_rows, np_rng, tc.batch_size)
        # Noise and prompts are drawn for the whole global batch, then each process takes its slice:
        # 1 process or N, the same step sees the same data.
        z_all, reqs_all = make_batch(rows, py_rng, gen)
        step_loss = train_step(model, (z_all, reqs_all), optimizer, grad_clip=tc.grad_clip,
                               grad_accum=tc.grad_accum, autocast=autocast, scaler=scaler,
                               wrapped=ddp_model, rank=dinfo.rank, world=dinfo.world)
        scheduler.step()

        running = step_loss if running is None else 0.9 * running + 0.1 * step_loss
        window_n += tc.batch_size
        done = step + 1
        if dinfo.main:
            bar.set_postfix(loss=f"{running:.3f}", sps=f"{window_n / max(time.time() - window_t, 1e-9):.1f}")
        held = ""
        if tc.held_out and (done % tc.eval_every == 0 or done == tc.steps):
            held = f"{held_out_loss():.5f}"
        if dinfo.main and (done % tc.log_every == 0 or held or done == tc.steps):
            sps = window_n / max(time.time() - window_t, 1e-9)
            _append_log(log_path, [done, f"{scheduler.get_last_lr()[0]:.3e}", f"{step_loss:.5f}", held,
                                   f"{sps:.2f}", f"{time.time() - t0:.1f}"])
            window_t, window_n = time.time(), 0
        if done % tc.save_every == 0 or done == tc.steps:
            save_checkpoint(out, done, model, optimizer, scheduler, scaler, tc.keep_checkpoints,
                            write=dinfo.main)
            if dinfo.world > 1:
                dist.barrier()

    # 5. The model folder (written by MATS.save_pretrained, its one owner): weights, config, the
    #    Santa memory bank, the model card; the training log and its plot beside them.
    final = out / "model"
    state = full_state(model)  # a collective under FSDP
    if dinfo.main:
        from ..pipeline import MATS
        final.mkdir(parents=True, exist_ok=True)
        shutil.copy(log_path, final / "log.csv")
        MATS(model, clap, santa=santa, train_config=cfg.to_dict()["train"],
             trained_tasks=sorted({s.task for s in corpus.samples})).save_pretrained(final, state=state)
        plot_log(log_path, final / "loss.png")
    if dinfo.world > 1:
        dist.barrier()
    return final


def build_santa_memory(text_emb: np.ndarray, train_rows: np.ndarray, corpus: Corpus, cfg: RunConfig):
    """The Santa memory of a trained model: ``bank_size`` distinct training texts, seeded, with the
    training noise on its entries."""
    from ..bridge.santa import SantaConfig, SantaMemory

    sb = cfg.train.santa
    # Unique texts only: repeated descriptions would just pull Santa towards popular rows.
    seen, unique_rows = set(), []
    for r in train_rows:
        t = corpus.samples[r].text
        if t not in seen:
            seen.add(t)
            unique_rows.append(r)
    rng = np.random.default_rng(cfg.train.seed)
    take = np.sort(rng.choice(unique_rows, size=min(sb.bank_size, len(unique_rows)), replace=False))
    bank = np.asarray(text_emb[take], dtype=np.float32)
    config = SantaConfig(clusters=sb.clusters, kmeans_iters=sb.kmeans_iters, top_l=sb.top_l, tau=sb.tau,
                         lam=sb.lam, noise_variance=cfg.train.noise_variance, noise_kind=cfg.train.noise_kind,
                         seed=cfg.train.seed)
    return SantaMemory.build(bank, config, texts=[corpus.samples[r].text for r in take])


def _append_log(path: Path, row: list) -> None:
    with open(path, "a", newline="") as f:
        csv.writer(f).writerow(row)


def _truncate_log(path: Path, step: int) -> float:
    """Drop log rows after ``step`` (a killed run logged steps past its last checkpoint; they are
    replayed after the resume). Returns the elapsed time logged at ``step``."""
    if not path.is_file():
        return 0.0
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    keep = rows[:1] + [r for r in rows[1:] if r and int(r[0]) <= step]
    if len(keep) != len(rows):
        tmp = path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as f:
            csv.writer(f).writerows(keep)
        os.replace(tmp, path)
    try:
        return float(keep[-1][5]) if len(keep) > 1 else 0.0
    except (IndexError, ValueError):
        return 0.0


def plot_log(log_path: Path, png: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, loss, hsteps, held = [], [], [], []
    with open(log_path) as f:
        for row in csv.DictReader(f):
            if row["loss"]:
                steps.append(int(row["step"]))
                loss.append(float(row["loss"]))
            if row["held_out_loss"]:
                hsteps.append(int(row["step"]))
                held.append(float(row["held_out_loss"]))
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    if steps:
        ax.plot(steps, loss, lw=0.8, alpha=0.7, label="train (per step)")
    if hsteps:
        ax.plot(hsteps, held, "o-", lw=1.5, label="held-out")
    ax.set_xlabel("step")
    ax.set_ylabel("answer-token cross-entropy")
    ax.set_title("MATS text-only training")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
