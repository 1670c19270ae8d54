"""Training: answer-only loss, corpus validation, exact resume after SIGKILL, multi-process agreement,
the paper's config, mapper shapes and the run folder.

Everything runs the real code paths: the tiny random llama (real SmolLM2 tokenizer) as LLM, the real
default CLAP ("yamnet-minilm") for the text embeddings, and ``python -m mats.cli train`` as a
subprocess for the end-to-end runs. Embeddings are cached in a per-session temporary folder
(``train.cache_dir``), never in the user's ``$MATS_HOME``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mats import store
from mats.data.corpus import Corpus, CorpusError, CorpusSource, read_jsonl
from mats.mapper import MapperConfig, build_mapper
from mats.model import IGNORE, MATSModel, ModelConfig, Request
from mats.train.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]
PAPER_CONFIG = ROOT / "configs" / "paper-msclap-vicuna7b.json"

needs_default_clap = pytest.mark.requires(  # skips without it, fails under CI (tests/conftest.py)
    store.is_cached("all-minilm-l6-v2") and store.is_cached("yamnet"),
    "default CLAP (MiniLM + YAMNet) not in the offline store (run `mats models fetch`)")

# -- a tiny corpus: 40 rows over caption / tags / qa -------------------------------------------------
SOURCES = ["a dog", "a bell", "rain", "a car engine", "a violin", "a crowd", "a door", "thunder",
           "a bird", "a siren", "a drum", "wind"]
CAPTIONS = [{"text": f"{s} heard {w}", "task": "caption", "answer": f"{s.capitalize()} is heard {w}."}
            for s in SOURCES for w in ("in the distance", "up close")][:16]
TAGS = [{"text": f"{a} and {b}", "task": "tags", "answer": f"{a.split()[-1]}, {b.split()[-1]}"}
        for a, b in zip(SOURCES, SOURCES[1:] + SOURCES[:1], strict=True)] + \
       [{"text": f"{s} repeatedly", "task": "tags", "answer": s.split()[-1],
         "instruction": "Tag this audio clip."} for s in SOURCES[:2]]
QA = [{"text": f"{s} far away", "task": "qa", "instruction": "Is the sound close or far?",
       "answer": "It is far away."} for s in SOURCES[:5]] + \
     [{"text": f"{s} nearby", "task": "qa", "instruction": "What makes the sound?",
       "answer": f"It is {s}."} for s in SOURCES[5:10]]


def write_corpus(folder: Path) -> list[dict]:
    folder.mkdir(parents=True, exist_ok=True)
    specs = []
    for name, rows, weight in (("captions", CAPTIONS, 0.4), ("tags", TAGS, 0.35), ("qa", QA, 0.25)):
        path = folder / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        specs.append({"path": str(path), "weight": weight})
    return specs


# -- run configs ---------------------------------------------------------------------------------------
def run_config(llm: Path, corpus: list[dict], out: Path, cache: Path, **train) -> dict:
    t = {
        "corpus": corpus, "out_dir": str(out), "seed": 3, "steps": 12, "batch_size": 4, "lr": 2e-3,
        "warmup_steps": 2, "min_lr_ratio": 0.1, "noise_variance": 0.015, "precision": "fp32",
        "device": "cpu", "held_out": 4, "eval_every": 4, "save_every": 2, "keep_checkpoints": 2,
        "log_every": 1, "cache_dir": str(cache),
        "santa": {"bank_size": 24, "clusters": 4, "kmeans_iters": 5, "top_l": 4},
    }
    t.update(train)
    model = {
        "clap": "yamnet-minilm", "llm": str(llm), "prompt_style": "chat", "max_answer_tokens": 16,
        "mapper": {"kind": "transformer", "clap_dim": 384, "llm_hidden": 64, "clip_length": 2,
                   "prefix_length": 3, "width": 32, "depth": 1, "heads": 2, "dropout": 0.1},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.1},
    }
    return {"model": model, "train": t}


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(json.dumps(cfg, indent=1))
    return path


def child_env() -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    src = str(ROOT / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def train_cmd(config: Path) -> list[str]:
    return [sys.executable, "-m", "mats.cli", "train", "--config", str(config)]


def run_train(config: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    p = subprocess.run(train_cmd(config), env=child_env(), capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"training failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


def final_tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    out = {}
    for name in ("mapper.safetensors", "lora/adapter_model.safetensors"):
        for k, v in load_file(str(model_dir / name)).items():
            out[f"{name}:{k}"] = v
    return out


@pytest.fixture(scope="module")
def reference_run(train_env):
    """One uninterrupted end-to-end run through the CLI (lora + mapper dropout, noise on)."""
    e = train_env
    out = e["root"] / "reference"
    cfg = write_config(e["root"] / "reference.json", run_config(e["llm"], e["corpus"], out, e["cache"]))
    run_train(cfg)
    return out, cfg


# -- 1. answer-only loss ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_model(tiny_llm):
    torch.manual_seed(0)
    cfg = ModelConfig(llm=str(tiny_llm), max_answer_tokens=12,
                      mapper=MapperConfig(clap_dim=16, width=32, depth=1, heads=2, clip_length=2,
                                          prefix_length=3))
    model = MATSModel.from_config(cfg, device="cpu")
    model.eval()  # no dropout: the loss is a deterministic function of the inputs
    return model


def test_labels_mask_prompt_and_prefix(small_model):
    m = small_model
    reqs = [Request("caption", "Describe the following audio in a caption.", "A dog barks twice."),
            Request("qa", "What is it?", "A very long answer " + "with many words " * 10)]
    z = torch.randn(2, 16)
    batch = m.build_inputs(z, reqs, with_answers=True)
    labels, mask, emb = batch["labels"], batch["attention_mask"], batch["inputs_embeds"]
    prefix = m.mapper(z)
    assert labels.shape == mask.shape == emb.shape[:2]
    for i, r in enumerate(reqs):
        before, after = m.prompt_ids(r.task, r.instruction)
        answer = m.tokenizer(r.answer, add_special_tokens=False)["input_ids"][:12] + [m.tokenizer.eos_token_id]
        assert answer == m._answer_ids(r.answer)
        n_prompt = len(before) + 3 + len(after)
        n = n_prompt + len(answer)
        assert (labels[i, :n_prompt] == IGNORE).all()  # prompt + prefix positions
        assert labels[i, n_prompt:n].tolist() == answer  # answer tokens then EOS
        assert (labels[i, n:] == IGNORE).all()  # right padding
        assert mask[i, :n].all() and not mask[i, n:].any()
        # the prefix sits between the two prompt halves
        torch.testing.assert_close(emb[i, len(before):len(before) + 3], prefix[i], rtol=0, atol=0)
    assert (labels != IGNORE).sum().item() == sum(len(m._answer_ids(r.answer)) for r in reqs)
    # the long answer was truncated to max_answer_tokens (+ EOS)
    assert len(m._answer_ids(reqs[1].answer)) == 13


def test_loss_equals_hand_computed_answer_ce(small_model):
    m = small_model
    reqs = [Request("tags", "Tag this audio clip.", "dog, bark"),
            Request("caption", "Write a short caption for this sound.", "Rain falls on a tin roof.")]
    z = torch.randn(2, 16)
    with torch.no_grad():
        batch = m.build_inputs(z, reqs, with_answers=True)
        logits = m.llm(inputs_embeds=batch["inputs_embeds"], attention_mask=batch["attention_mask"]).logits
        logp = torch.log_softmax(logits.double(), dim=-1)
        total, count = 0.0, 0
        for i, r in enumerate(reqs):
            before, after = m.prompt_ids(r.task, r.instruction)
            start = len(before) + 3 + len(after)
            for k, tok in enumerate(m._answer_ids(r.answer)):
                # the token at position start + k is predicted by the logits at start + k - 1
                total -= logp[i, start + k - 1, tok].item()
                count += 1
        loss_mean = m(z, reqs).item()
        loss_sum = m(z, reqs, reduction="sum").item()
    assert count == sum(len(m._answer_ids(r.answer)) for r in reqs)
    assert loss_sum == pytest.approx(total, rel=1e-5)
    assert loss_mean == pytest.approx(total / count, rel=1e-5)


def test_loss_ignores_prompt_content(small_model):
    """Changing what the prompt *says* changes the logits, but labels never cover prompt tokens:
    the gradient only flows from answer positions (checked by the label count above); here the
    number of scored tokens stays the answer length whatever the instruction length."""
    m = small_model
    z = torch.randn(1, 16)
    short = m.build_inputs(z, [Request("qa", "Why?", "Because.")], with_answers=True)["labels"]
    long = m.build_inputs(z, [Request("qa", "Why? " * 30, "Because.")], with_answers=True)["labels"]
    assert (short != IGNORE).sum() == (long != IGNORE).sum() == len(m._answer_ids("Because."))


# -- 2. corpus validation ---------------------------------------------------------------------------
GOOD = {"text": "a dog barks", "task": "caption", "answer": "A dog barks."}


@pytest.mark.parametrize("bad_line, message", [
    ('{"text": "a dog", "task": "caption", "answer": ', "invalid JSON"),
    (json.dumps({"text": "a dog", "task": "caption"}), "missing field 'answer'"),
    (json.dumps({"text": "a dog", "task": "dance", "answer": "x"}), "unknown task 'dance'"),
    (json.dumps({"text": "a dog", "task": "qa", "answer": "yes"}), "needs an 'instruction'"),
    (json.dumps({"text": "a dog", "task": "qa", "answer": "yes", "instruction": "  "}), "needs an 'instruction'"),
    (json.dumps({"text": "", "task": "caption", "answer": "x"}), "'text' must be a non-empty string"),
    (json.dumps(["not", "an", "object"]), "expected a JSON object"),
    (json.dumps({**GOOD, "lable": "x"}), "unknown field(s) ['lable']"),
])
def test_corpus_errors_name_file_and_line(tmp_path, bad_line, message):
    path = tmp_path / "corpus.jsonl"
    # line 1 good, line 2 blank (skipped but counted), line 3 good, line 4 bad
    path.write_text(json.dumps(GOOD) + "\n\n" + json.dumps(GOOD) + "\n" + bad_line + "\n")
    with pytest.raises(CorpusError) as e:
        read_jsonl(path)
    assert f"{path}:4:" in str(e.value)
    assert message in str(e.value)
    # the same through Corpus.load (what the trainer calls)
    with pytest.raises(CorpusError, match=":4:"):
        Corpus.load([CorpusSource(str(path))])


def test_corpus_empty_and_missing(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    with pytest.raises(CorpusError, match=f"{empty}: the corpus is empty"):
        read_jsonl(empty)
    with pytest.raises(CorpusError, match="does not exist"):
        read_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(CorpusError, match="weight must be > 0"):
        good = tmp_path / "good.jsonl"
        good.write_text(json.dumps(GOOD) + "\n")
        Corpus.load([CorpusSource(str(good), 0.0)])


def test_corpus_fixture_is_valid(tmp_path):
    specs = write_corpus(tmp_path)
    corpus = Corpus.load([CorpusSource(s["path"], s["weight"]) for s in specs])
    assert len(corpus) == 40
    assert {s.task for s in corpus.samples} == {"caption", "tags", "qa"}
    p = corpus.sampling_probabilities()
    assert p.sum() == pytest.approx(1.0)
    assert p[corpus.source_of == 0].sum() == pytest.approx(0.4)


def test_row_sampling_matches_generator_choice():
    """The trainer draws rows from a CDF computed once; the draws are those of
    ``Generator.choice(p=...)`` (so runs started before that change resume onto the same rows)."""
    import numpy as np
    p = np.random.default_rng(0).random(1000)
    p /= p.sum()
    cdf = p.cumsum()
    cdf /= cdf[-1]
    for step in range(20):
        want = np.random.default_rng([3, step]).choice(len(p), size=16, replace=True, p=p)
        got = cdf.searchsorted(np.random.default_rng([3, step]).random(16), side="right")
        assert np.array_equal(want, got)


# -- 3. mapper shapes ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["transformer", "mlp"])
def test_mapper_output_shape(kind):
    cfg = MapperConfig(kind=kind, clap_dim=24, llm_hidden=40, clip_length=3, prefix_length=5, width=16,
                       depth=2, heads=2)
    mapper = build_mapper(cfg)
    out = mapper(torch.randn(7, 24))
    assert out.shape == (7, 5, 40)
    assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match="unknown mapper kind"):
        build_mapper(MapperConfig(kind="rnn"))


# -- 4. the paper's configuration -------------------------------------------------------------------
def transformer_mapper_params(clap_dim, clip, prefix, width, depth, mlp_ratio, hidden) -> int:
    ff = int(width * mlp_ratio)
    layer = (3 * width * width + 3 * width) + (width * width + width)  # attention in/out projections
    layer += (width * ff + ff) + (ff * width + width)  # MLP
    layer += 2 * 2 * width  # two LayerNorms
    return (clap_dim * clip * width + clip * width  # to_clip
            + prefix * width  # learned constants
            + depth * layer
            + 2 * width  # final LayerNorm
            + width * hidden + hidden)  # to_llm


def test_unknown_strategy_is_refused_when_the_config_is_read(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"train": {"strategy": "zero3"}}))
    with pytest.raises(ValueError, match="unknown train.strategy 'zero3'; choose one of ddp, fsdp"):
        RunConfig.load(path)
    with pytest.raises(ValueError, match="unknown train.strategy"):
        RunConfig.load(None, ["train.strategy=\"deepspeed\""])
    assert RunConfig.load(None, ["train.strategy=\"fsdp\""]).train.strategy == "fsdp"


def test_paper_config_parses():
    cfg = RunConfig.load(PAPER_CONFIG)
    m, t = cfg.model, cfg.train
    assert m.clap.startswith("msclap-2023:") and m.clap.endswith(".pth")
    assert "vicuna-7b" in m.llm.lower()
    assert (m.mapper.kind, m.mapper.clap_dim, m.mapper.clip_length, m.mapper.prefix_length) == \
        ("transformer", 1024, 40, 40)
    assert (m.mapper.width, m.mapper.depth, m.mapper.heads, m.mapper.mlp_ratio) == (1024, 8, 8, 2.0)
    assert m.mapper.llm_hidden == 4096
    assert (m.lora.r, m.lora.alpha, m.lora.dropout, tuple(m.lora.target_modules)) == \
        (8, 32, 0.1, ("q_proj", "v_proj"))
    assert m.prompt_style == "plain"
    assert (t.lr, t.warmup_steps, t.weight_decay, t.batch_size) == (3e-5, 3000, 0.05, 96)
    assert tuple(t.betas) == (0.9, 0.999)
    assert t.noise_variance == 0.015 and t.precision == "bf16"
    s = t.santa
    assert (s.bank_size, s.clusters, s.top_l, s.tau, s.lam) == (5172, 100, 32, 10.0, 0.3)


def test_paper_model_with_tiny_llm(tiny_llm):
    from mats.llm import load_llm
    from mats.prompts import render_prompt

    cfg = RunConfig.load(PAPER_CONFIG)
    llm, tok = load_llm(str(tiny_llm), device="cpu")
    torch.manual_seed(0)
    model = MATSModel.from_config(cfg.model, llm=llm, tokenizer=tok)
    hidden = llm.config.hidden_size
    assert cfg.model.mapper.llm_hidden == hidden  # from_config adopts the stand-in's hidden size
    n = sum(p.numel() for p in model.mapper.parameters())
    assert n == transformer_mapper_params(1024, 40, 40, 1024, 8, 2.0, hidden)
    assert all(p.requires_grad for p in model.mapper.parameters())
    assert len(model.mapper.transformer.layers) == 8
    assert model.mapper.transformer.layers[0].self_attn.num_heads == 8
    model.eval()
    with torch.no_grad():
        prefix = model.mapper(torch.randn(3, 1024))
    assert prefix.shape == (3, 40, hidden)
    # LoRA on q/v only, rank 8; the LLM itself stays frozen
    lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert lora and all(("q_proj" in n or "v_proj" in n) and p.requires_grad for n, p in lora.items())
    assert all(8 in p.shape for p in lora.values())
    frozen = [p for n, p in model.llm.named_parameters() if "lora_" not in n]
    assert frozen and not any(p.requires_grad for p in frozen)
    # the paper's plain prompt layout
    before, after = render_prompt(tok, "caption", "Describe the following audio in a caption.", "plain")
    assert before == (tok.bos_token or "") + "USER: <Speech>"
    assert after == "</Speech> [audio caption] Describe the following audio in a caption.\nASSISTANT: "


# -- 5. end-to-end run: the run folder ----------------------------------------------------------------
@pytest.mark.slow
@needs_default_clap
def test_run_folder(reference_run, tiny_llm):
    out, cfg_path = reference_run
    saved = json.loads((out / "run_config.json").read_text())
    assert saved["format"] == "mats-run"
    assert RunConfig.load(out / "run_config.json").to_dict() == RunConfig.load(cfg_path).to_dict()
    final = out / "model"
    for name in ("config.json", "mapper.safetensors", "lora/adapter_model.safetensors", "lora/adapter_config.json",
                 "loss.png", "log.csv", "santa"):
        assert (final / name).exists(), name
    assert (final / "loss.png").stat().st_size > 1000
    steps = [int(line.split(",")[0]) for line in (out / "log.csv").read_text().splitlines()[1:]]
    assert steps == sorted(steps) and steps[-1] == 12
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts == ["step-00000010", "step-00000012"]  # keep_checkpoints = 2
    model = MATSModel.from_pretrained(final, device="cpu")
    assert model.config.mapper.prefix_length == 3
    ref = final_tensors(final)
    for k, v in model.mapper.state_dict().items():
        assert torch.equal(v, ref[f"mapper.safetensors:{k}"])
    out_text = model.generate(torch.randn(1, 384), [Request("caption", "Describe the sound.")], max_new_tokens=3)
    assert isinstance(out_text[0], str)
    # training moved the LoRA B matrices away from their zero init
    assert any(v.abs().sum() > 0 for k, v in ref.items() if "lora_B" in k)


# -- 6. exact resume after SIGKILL ---------------------------------------------------------------------
def _checkpoint_steps(out: Path) -> list[int]:
    try:
        names = os.listdir(out / "checkpoints")
    except FileNotFoundError:
        return []
    return sorted(int(n.split("-")[1]) for n in names if n.startswith("step-"))


def _last_logged_step(out: Path) -> int:
    try:
        lines = (out / "log.csv").read_text().splitlines()
    except FileNotFoundError:
        return -1
    try:
        return int(lines[-1].split(",")[0])
    except (IndexError, ValueError):  # header only, or a row being written
        return -1


@pytest.mark.slow
@needs_default_clap
def test_exact_resume_after_sigkill(reference_run, train_env):
    ref_out, _ = reference_run
    e = train_env
    out = e["root"] / "killed"
    cfg = write_config(e["root"] / "killed.json", run_config(e["llm"], e["corpus"], out, e["cache"]))
    cfg_ref = json.loads((e["root"] / "reference.json").read_text())
    cfg_kill = json.loads(cfg.read_text())
    cfg_ref["train"].pop("out_dir"), cfg_kill["train"].pop("out_dir")
    assert cfg_ref == cfg_kill

    proc = subprocess.Popen(train_cmd(cfg), env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            # kill between two checkpoints, once the log has a step past the last one (those
            # steps are replayed after the resume)
            ckpts = _checkpoint_steps(out)
            if ckpts and ckpts[-1] > 2 and _last_logged_step(out) > ckpts[-1]:
                break
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = proc.stdout.read().decode(errors="replace")
    assert proc.returncode == -signal.SIGKILL, f"run ended before it could be killed:\n{log[-2000:]}"
    done = _checkpoint_steps(out)
    assert done and 2 < done[-1] < 12 and not (out / "model").exists(), done
    assert _last_logged_step(out) > done[-1]

    p = run_train(cfg)
    assert "resumed from" in p.stderr  # status on stderr; stdout holds the result (the model folder)
    assert p.stdout.strip().endswith("model")
    steps = [int(line.split(",")[0]) for line in (out / "log.csv").read_text().splitlines()[1:]]
    assert steps == list(range(13)), f"log.csv should hold each step once after the resume: {steps}"
    got, ref = final_tensors(out / "model"), final_tensors(ref_out / "model")
    assert got.keys() == ref.keys()
    differ = [k for k in ref if not torch.equal(got[k], ref[k])]
    assert not differ, f"{len(differ)} tensors differ after resume, e.g. {differ[:3]}"


# -- 7. two processes (gloo) agree with one ----------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@needs_default_clap
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_match_one(train_env, strategy):
    e = train_env
    # dropout off (masks depend on how the batch is split); same global batch of 8
    kw = dict(steps=3, batch_size=8, save_every=2, held_out=4, eval_every=3)
    cfgs = {}
    for name in ("one", "two"):
        c = run_config(e["llm"], e["corpus"], e["root"] / f"ddp-{name}", e["cache"], **kw)
        c["model"]["mapper"]["dropout"] = 0.0
        c["model"]["lora"]["dropout"] = 0.0
        if name == "two":  # a fresh cache: the embeddings are computed in the distributed path
            c["train"]["cache_dir"] = str(e["root"] / f"embeddings-{strategy}")
            c["train"]["strategy"] = strategy
            c["train"]["out_dir"] = str(e["root"] / f"{strategy}-two")
        cfgs[name] = write_config(e["root"] / f"{strategy}-{name}.json", c)
    if not (e["root"] / "ddp-one" / "model").is_dir():
        run_train(cfgs["one"])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
           "-m", "mats.cli", "train", "--config", str(cfgs["two"])]
    env = child_env()
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"torchrun failed:\n{p.stdout[-3000:]}\n{p.stderr[-4000:]}"
    assert "data parallel: 2 processes (gloo)" in p.stderr
    assert len(list((e["root"] / f"embeddings-{strategy}").iterdir())) == 1
    two_dir = e["root"] / f"{strategy}-two"
    one, two = final_tensors(e["root"] / "ddp-one" / "model"), final_tensors(two_dir / "model")
    assert one.keys() == two.keys()
    for k in one:
        a, b = one[k], two[k]
        if k.endswith("self_attn.in_proj_bias"):
            # The attention *key* bias has an analytically zero gradient (softmax ignores a shift
            # shared by all keys), so its gradient is rounding noise that Adam rescales to steps of
            # up to lr: it cannot agree to 1e-5. Queries and values must.
            w = a.shape[0] // 3
            torch.testing.assert_close(b[w:2 * w], a[w:2 * w], rtol=0, atol=3 * 2e-3)
            a, b = torch.cat([a[:w], a[2 * w:]]), torch.cat([b[:w], b[2 * w:]])
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=lambda m, k=k: f"{k}: {m}")
    # only rank 0 wrote: one checkpoint folder per save, no leftovers
    assert _checkpoint_steps(two_dir) == [2, 3]
    # the logged losses agree too (rank 0 logs the all-reduced global loss)
    def losses(out):
        rows = (out / "log.csv").read_text().splitlines()[1:]
        return [float(r.split(",")[2]) for r in rows if r.split(",")[2]]
    assert losses(two_dir) == pytest.approx(losses(e["root"] / "ddp-one"), rel=1e-4)

    # Resuming a sharded run from its step-2 checkpoint (weights and optimiser state scattered back
    # to the shards) ends with the same weights.
    shutil.rmtree(two_dir / "model")
    shutil.rmtree(two_dir / "checkpoints" / "step-00000003")
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"torchrun resume failed:\n{p.stdout[-3000:]}\n{p.stderr[-4000:]}"
    assert "resumed from" in p.stderr and "step 2" in p.stderr
    resumed = final_tensors(two_dir / "model")
    for k in two:
        torch.testing.assert_close(resumed[k], two[k], rtol=0, atol=1e-6, msg=lambda m, k=k: f"{k}: {m}")
