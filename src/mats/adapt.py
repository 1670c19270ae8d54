"""Adapt a model to a domain from text alone (``mats adapt``): the domain's words, no recordings.

Two ways, both starting from a base model folder (default: the shipped default):

* **memory only** (``steps = 0``, seconds): the base model's Santa memory plus the domain's texts
  (:meth:`SantaMemory.with_texts`; each joins its nearest cluster, or all are re-clustered), so a
  clip from the domain finds its words among the memory's neighbours and, for a retrieval-augmented
  model, in its prompt. The texts sit behind a gate (``gate``): a clip sees them only when one of
  them is nearer to its embedding than the base memory's best by a margin; every other clip gets
  exactly the base model's memory, Santa pull and prompt (so the rest is not forgotten). The weights
  are the base model's, unchanged.
* **mixed fine-tune** (``steps > 0``, minutes): mapper + LoRA trained on from the base model on a mix
  of the domain's corpus (share ``mix`` of every batch) and rows of the base model's own training
  corpus (the rest), so that it learns the new words without forgetting the old ones; the memory as
  above. ``mix = 1`` is a domain-only fine-tune (the recipe that forgets; kept for comparison).

The domain comes as a text file (one description per line), a JSONL corpus (the training format) or
sound names (expanded into captions, tags and QA as the default corpus is). Every input is checked
before anything is written; the folder appears only when complete (written to a temporary sibling,
then renamed). A fine-tune keeps its checkpoints in ``.<out>.adapt-work`` beside the output: the
same command resumes it after a kill.

Before/after: :func:`evaluate` (tag keyword accuracy through the evaluation runner) on the user's
labelled folder and on the dev split of the real sounds (the forgetting check); the base model's
scores are remembered by content (:func:`evaluate_cached`), so only the adapted model is evaluated
when the same base was measured before.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .config import DEFAULT_MODEL, from_dict, read_model_config, save_json, to_dict

__all__ = ["AdaptConfig", "AdaptError", "Domain", "read_domain", "adapt_memory", "mixed_sources",
           "adapt", "evaluate", "evaluate_cached", "evaluation_key", "compare", "MAX_TEXT_CHARS", "GATE_MARGIN"]

log = logging.getLogger(__name__)

MAX_TEXT_CHARS = 1000  # a description longer than this is refused (the CLAP text encoder cuts far earlier)
ADAPT_FILE = "adapt.json"
# The gate's margin (cosine), chosen on the dev split (benchmarks/adapt_gate.py, docs/adapt.md).
GATE_MARGIN = 0.1


class AdaptError(ValueError):
    """Bad input to an adaptation: one line naming the file (and line) or the option."""


@dataclass
class AdaptConfig:
    """One adaptation; saved as ``adapt.json`` in the adapted folder (and its work folder)."""

    out: str
    model: str | None = None          # base model folder (None: the shipped default)
    texts: str | None = None          # text file, one description per line
    corpus: str | None = None         # JSONL corpus in the training format
    labels: str | None = None         # sound names, comma-separated
    steps: int = 0                    # 0: memory only; N: a fine-tune of N steps
    mix: float = 0.2                  # the domain's share of every fine-tune batch (1: domain only); chosen on
                                      # dev: 0.5 lost 4 dev clips net in 40 steps, 0.2 none (docs/adapt.md)
    batch_size: int = 16
    lr: float = 3e-4
    warmup_steps: int = 5
    replay_rows: int = 2000           # rows of each base corpus file kept for the mix (seeded subsample)
    base_corpus: list[str] | None = None  # the base model's corpus files (default: its config's, or rebuilt)
    recluster: bool = False           # re-run k-means over base + domain texts (default: each new text joins
                                      # its nearest old cluster, so the base's clusters stay as they were)
    gate: float | None = GATE_MARGIN  # a clip sees the domain's texts only when one is nearer to it than the
                                      # base memory's best by this margin (None: no gate; docs/adapt.md)
    seed: int = 0
    held_out: int = 32                # fine-tune rows kept out for the held-out loss
    device: str | None = None
    dtype: str | None = None          # inference weights for the evaluations (see mats.devices.DTYPES)

    def __post_init__(self) -> None:
        given = [k for k in ("texts", "corpus", "labels") if getattr(self, k) is not None]
        if len(given) != 1:
            raise AdaptError("give exactly one of --texts FILE, --corpus FILE.jsonl, --labels \"a,b,c\""
                             + (f" (got {', '.join('--' + g for g in given)})" if given else ""))
        if isinstance(self.steps, bool) or int(self.steps) != self.steps or int(self.steps) < 0:
            raise AdaptError(f"--steps must be a whole number >= 0, got {self.steps}")
        if not 0.0 < float(self.mix) <= 1.0:
            raise AdaptError(f"--mix must lie in (0, 1] (the domain's share of a batch), got {self.mix}")
        for name in ("batch_size", "replay_rows"):
            if int(getattr(self, name)) < 1:
                raise AdaptError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not float(self.lr) > 0:
            raise AdaptError(f"lr must be > 0, got {self.lr}")
        if int(self.warmup_steps) < 0 or int(self.held_out) < 0:
            raise AdaptError("warmup_steps and held_out must be >= 0")
        if self.gate is not None and not -1.0 <= float(self.gate) <= 1.0:
            raise AdaptError(f"--gate must lie in [-1, 1] (a cosine margin), got {self.gate}")

    @property
    def base(self) -> Path:
        return Path(self.model) if self.model is not None else DEFAULT_MODEL


# ----------------------------------------------------------------------------- the domain
@dataclass
class Domain:
    """The domain's corpus rows, the texts its memory gets, and where they came from."""

    samples: list                     # mats.data.corpus.Sample
    texts: list[str]                  # distinct descriptions (the memory's new rows)
    source: str                       # "texts:NAME" | "corpus:NAME" | "labels:N names"
    labels: list[str] = field(default_factory=list)


def _read_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, stripped text) of the non-blank lines; every bad byte or line is one error."""
    if not path.is_file():
        raise AdaptError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    out = []
    try:
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise AdaptError(f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column "
                                     f"{e.start + 1})") from None
                line = " ".join(line.split())
                if len(line) > MAX_TEXT_CHARS:
                    raise AdaptError(f"{path}:{lineno}: a line of {len(line)} characters; a description has at "
                                     f"most {MAX_TEXT_CHARS}")
                if line:
                    out.append((lineno, line))
    except OSError as e:
        raise AdaptError(f"{path}: cannot read: {(e.strerror or type(e).__name__).lower()}") from None
    return out


def _distinct(texts: Sequence[str], where: str, minimum: int = 2) -> list[str]:
    distinct = list(dict.fromkeys(texts))
    if not distinct:
        raise AdaptError(f"{where}: no descriptions (the file is empty or blank)")
    if len(distinct) < minimum:
        raise AdaptError(f"{where}: every line is the same description ({distinct[0][:60]!r}); give at least "
                         f"{minimum} different ones")
    return distinct


def read_domain(config: AdaptConfig) -> Domain:
    """The domain of ``config`` (checked: one :class:`AdaptError` naming the file and line)."""
    from .data.corpus import CorpusError, Sample, validate_row
    from .jsonl import iter_jsonl

    if config.texts is not None:
        path = Path(config.texts)
        lines = _read_lines(path)
        texts = _distinct([t for _, t in lines], str(path))
        samples = [Sample(t, "caption", t, source="domain-texts") for t in texts]
        return Domain(samples, texts, f"texts:{path.name}")
    if config.corpus is not None:
        path = Path(config.corpus)
        if not path.is_file():
            raise AdaptError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
        samples = []
        try:
            for where, row in iter_jsonl(path, CorpusError):
                s = validate_row(row, where)
                for key in ("text", "answer"):
                    if len(getattr(s, key)) > MAX_TEXT_CHARS:
                        raise AdaptError(f"{where}: field {key!r} has {len(getattr(s, key))} characters; at most "
                                         f"{MAX_TEXT_CHARS}")
                samples.append(s)
        except CorpusError as e:
            raise AdaptError(str(e)) from None
        texts = _distinct([s.text for s in samples], str(path))
        return Domain(samples, texts, f"corpus:{path.name}")
    from .data.default_corpus import label_corpus

    names = [" ".join(n.split()) for n in str(config.labels).split(",")]
    names = list(dict.fromkeys(n for n in names if n))
    if not names:
        raise AdaptError("--labels: no sound names (every name is empty after stripping)")
    for n in names:
        if len(n) > MAX_TEXT_CHARS:
            raise AdaptError(f"--labels: a name of {len(n)} characters; at most {MAX_TEXT_CHARS}")
    samples = label_corpus(names, seed=config.seed)
    # The memory gets one text per name, not the corpus's several phrasings: a name then takes at
    # most one of the prompt's retrieved slots and one row of Santa's mix, and the base texts around
    # it keep theirs (chosen on the dev split: with the corpus's ~6 phrasings per name the prompt hints
    # of dev clips named their label less often; see docs/adapt.md).
    texts = [f"The sound of {n}." for n in names]
    return Domain(samples, texts, f"labels:{len(names)} names", labels=names)


# ----------------------------------------------------------------------------- the memory
def adapt_memory(santa, clap, texts: Sequence[str], recluster: bool = False, gate_margin: float | None = None):
    """The base memory plus ``texts`` (CLAP-text encoded), each in its nearest old cluster (or all
    re-clustered), behind the gate when ``gate_margin`` is given (a clip sees them only when one is
    nearer to it than the base memory's best by that margin); ``santa`` is unchanged."""
    if santa is None:
        raise AdaptError("the base model has no Santa memory to add the domain's texts to")
    if santa.texts is None:
        raise AdaptError("the base model's Santa memory has no texts (santa/texts.txt); its rows cannot be "
                         "told from the domain's")
    emb = np.asarray(clap.encode_text(list(texts)), np.float32)
    return santa.with_texts(emb, list(texts), recluster=recluster, gate_margin=gate_margin)


# ----------------------------------------------------------------------------- the mix
def _base_corpus_files(config: AdaptConfig, raw: dict) -> list[tuple[Path, float]]:
    """The base model's training corpus: ``--base-corpus``, else the files its config names (when
    present here), else, for a model trained on the default recipe, the default corpus rebuilt
    (deterministic, cached in ``$MATS_HOME/corpus-default``)."""
    if config.base_corpus:
        files = [Path(p) for p in config.base_corpus]
        for p in files:
            if not p.is_file():
                raise AdaptError(f"{p}: no such corpus file (--base-corpus)")
        return [(p, 1.0 / len(files)) for p in files]
    named = [(Path(c["path"]), float(c.get("weight", 1.0))) for c in (raw.get("train") or {}).get("corpus", [])]
    if named and all(p.is_file() for p, _ in named):
        return named
    default_names = {"captions.jsonl", "tags.jsonl", "qa.jsonl"}
    if named and {p.name for p, _ in named} <= default_names and raw["model"].get("clap") == "yamnet-minilm":
        from .data.default_corpus import build_default_corpus
        from .store import mats_home

        folder = mats_home() / "corpus-default"
        if not (folder / ".complete").is_file():
            log.info("[mats] building the default corpus once into %s (the base model's replay rows)", folder)
            build_default_corpus(folder)
            (folder / ".complete").write_text("seed 0\n")
        return [(folder / p.name, w) for p, w in named]
    shown = ", ".join(str(p) for p, _ in named) or "none recorded"
    raise AdaptError(f"the base model's training corpus ({shown}) is not on this machine: pass --base-corpus "
                     "FILE ... for the mix (or --mix 1 for a domain-only fine-tune, which forgets)")


def mixed_sources(config: AdaptConfig, domain: Domain, raw: dict, work: Path) -> list:
    """The fine-tune's corpus files and weights (``CorpusSpec``): the domain's rows with weight
    ``mix`` and a seeded subsample of each base corpus file sharing ``1 - mix`` by their weights."""
    from .data.corpus import read_jsonl, write_jsonl
    from .train.config import CorpusSpec

    work.mkdir(parents=True, exist_ok=True)
    write_jsonl(domain.samples, work / "domain.jsonl")
    specs = [CorpusSpec(str(work / "domain.jsonl"), float(config.mix))]
    if float(config.mix) >= 1.0:
        return specs
    files = _base_corpus_files(config, raw)
    total = sum(w for _, w in files)
    rng = np.random.default_rng(config.seed)
    for i, (path, w) in enumerate(files):
        rows = read_jsonl(path)
        if len(rows) > config.replay_rows:
            rows = [rows[j] for j in np.sort(rng.choice(len(rows), config.replay_rows, replace=False))]
        name = work / f"base-{i}-{path.name}"
        write_jsonl(rows, name)
        specs.append(CorpusSpec(str(name), (1.0 - float(config.mix)) * w / total))
    return specs


def _fine_tune(config: AdaptConfig, domain: Domain, raw: dict, memory, work: Path, progress: bool) -> Path:
    """Train from the base model on the mix; returns the trainer's model folder (in ``work``)."""
    from .model import ModelConfig
    from .train.config import RunConfig, SantaBuild, TrainConfig
    from .train.trainer import train

    base_train = raw.get("train") or {}
    steps = int(config.steps)
    tc = TrainConfig(corpus=mixed_sources(config, domain, raw, work), out_dir=str(work / "run"), seed=config.seed,
                     steps=steps, batch_size=config.batch_size, lr=config.lr,
                     warmup_steps=min(int(config.warmup_steps), steps), min_lr_ratio=0.1,
                     noise_variance=float(base_train.get("noise_variance", TrainConfig.noise_variance)),
                     noise_kind=str(base_train.get("noise_kind", "gaussian")), held_out=config.held_out,
                     eval_every=steps, save_every=max(1, min(10, steps)), keep_checkpoints=2,
                     log_every=1, init_from=str(config.base),
                     device=config.device or "auto", santa=SantaBuild(bank_size=memory.num_entries))
    cfg = RunConfig(model=from_dict(ModelConfig, raw["model"], f"{config.base}/config.json: model"), train=tc)
    return train(cfg, resume=True, progress=progress, santa=memory)


# ----------------------------------------------------------------------------- before / after
def evaluate(mats, data: str | os.PathLike, limit: int | None = None, progress: bool = False) -> dict:
    """Tag keyword accuracy of ``mats`` on a labelled folder (generic evaluation format), through the
    evaluation runner. The one place this module calls it."""
    from .evaluation import runner

    t0 = time.perf_counter()
    res = runner.evaluate(runner.EvalConfig(data=str(data), task="tag", limit=limit, zero_shot=False, plots=False,
                                            progress=progress), mats=mats)
    hits = [bool(p.get("keyword_hit")) for p in res["predictions"]]
    return {"data": Path(data).name, "n": len(hits), "correct": int(sum(hits)),
            "accuracy": res["metrics"].get("keyword_accuracy"), "hits": hits,
            "files": [p["id"] for p in res["predictions"]],
            "predictions": [p["prediction"] for p in res["predictions"]],
            "n_failed": res["n_failed"], "seconds": round(time.perf_counter() - t0, 2)}


def evaluation_key(mats, data: str | os.PathLike, limit: int | None = None) -> str | None:
    """What a model's evaluation depends on, hashed: every file of its folder, the labelled folder's
    metadata and audio, its weights' dtype and device, the limit, and the source of this package
    (any code change is a new key). None for a model not loaded from a folder."""
    import hashlib

    from .store import cached_sha256

    if mats.folder is None:
        return None
    h = hashlib.sha256()
    if mats.runtime == "torch":
        param = next(mats.model.parameters())
        engine = f"{param.dtype}\0{param.device}"
    else:
        engine = mats.runtime
    h.update(f"tag\0{limit}\0{engine}\0{mats.model.config.llm}\0".encode())
    for root in (Path(mats.folder), Path(data)):
        for p in sorted(q for q in root.rglob("*") if q.is_file()):
            h.update(f"{p.relative_to(root)}\0{cached_sha256(p)}\0".encode())
    here = Path(__file__).resolve().parent
    for p in sorted(here.rglob("*.py")):
        h.update(str(p.relative_to(here)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:32]


def evaluate_cached(mats, data: str | os.PathLike, limit: int | None = None, progress: bool = False) -> dict:
    """:func:`evaluate`, remembered in ``$MATS_HOME/adapt-evaluations`` by :func:`evaluation_key`: the
    base model's scores are measured once per model, data, settings and code, so a second
    adaptation of the same base (``--steps 0`` in particular) evaluates only the adapted model."""
    from .store import mats_home, unique_partial

    key = evaluation_key(mats, data, limit)
    path = mats_home() / "adapt-evaluations" / f"{key}.json"
    if key is not None and path.is_file():
        try:
            found = json.loads(path.read_text()) | {"cached": True}
            log.info("[mats] %s: the base model's scores measured before (%s)", Path(data).name, path.name)
            return found
        except (OSError, ValueError):
            pass  # a damaged entry costs the evaluation
    res = evaluate(mats, data, limit=limit, progress=progress)
    if key is not None and res["n_failed"] == 0:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = unique_partial(path)
            tmp.write_text(json.dumps(res))
            os.replace(tmp, path)
        except OSError:
            pass
    return res


def compare(before: dict, after: dict) -> dict:
    """Accuracy before and after on the same clips: points gained and clips won and lost."""
    if before["files"] != after["files"]:
        raise ValueError("before and after were evaluated on different clips")
    won = sum(1 for b, a in zip(before["hits"], after["hits"], strict=True) if a and not b)
    lost = sum(1 for b, a in zip(before["hits"], after["hits"], strict=True) if b and not a)
    return {"data": after["data"], "n": after["n"], "before": before["accuracy"], "after": after["accuracy"],
            "points": round(100.0 * (after["accuracy"] - before["accuracy"]), 2),
            "correct_before": before["correct"], "correct_after": after["correct"], "won": won, "lost": lost}


# ----------------------------------------------------------------------------- the run
def _check_out(out: Path, base: Path) -> None:
    if out.resolve() == base.resolve():
        raise AdaptError(f"{out}: the output folder is the base model's; choose a new --out")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AdaptError(f"{out}: already exists; choose a new --out (nothing is overwritten)")


def _relative_train_config(train_cfg: dict, out: Path, base: Path) -> dict:
    """The fine-tune's ``train`` section with the machine's paths replaced by names."""
    cfg = json.loads(json.dumps(train_cfg))
    for c in cfg.get("corpus", []):
        c["path"] = f"adapt/{Path(c['path']).name}"
    cfg["out_dir"] = out.name
    cfg["init_from"] = "mats default model" if base.resolve() == DEFAULT_MODEL.resolve() else base.name
    return cfg


def adapt(config: AdaptConfig, base=None, evals: dict[str, str | os.PathLike] | None = None,
          before: dict[str, dict] | None = None, progress: bool = True, eval_limit: int | None = None) -> dict:
    """Make the adapted folder ``config.out`` and return the report (``adapt.json``'s content).

    ``base``: the base model already loaded (its folder must be ``config.base``); ``evals``: labelled
    folders (name -> folder) evaluated before and after (``before``: the base model's results,
    when already measured); the comparison goes into the report and the model card."""
    from .pipeline import MATS

    t_start = time.perf_counter()
    base_dir = config.base
    raw = read_model_config(base_dir)  # a folder that is not a model: one line, before anything else
    out = Path(config.out)
    _check_out(out, base_dir)
    domain = read_domain(config)
    evals = dict(evals or {})
    for name, folder in evals.items():
        if not (Path(folder) / "metadata.jsonl").is_file() and not Path(folder).is_dir():
            raise AdaptError(f"{folder}: no such evaluation folder ({name})")

    t0 = time.perf_counter()
    if base is None:
        base = MATS.from_pretrained(base_dir, device=config.device, dtype=config.dtype, runtime="torch")
    load_seconds = time.perf_counter() - t0
    before = dict(before or {})
    for name, folder in evals.items():
        if name not in before:
            log.info("[mats] evaluating the base model on %s", name)
            before[name] = evaluate_cached(base, folder, limit=eval_limit, progress=progress)

    t_adapt = time.perf_counter()
    memory = adapt_memory(base.santa, base.clap, domain.texts, recluster=config.recluster, gate_margin=config.gate)
    added = memory.num_entries - base.santa.num_entries
    log.info("[mats] memory: %d base texts + %d domain texts, %d clusters", base.santa.num_entries, added,
             memory.num_clusters)
    work = out.parent / f".{out.name}.adapt-work"
    if int(config.steps) == 0:
        adapted = MATS(base.model, base.clap, santa=memory, shift=base.shift, train_config=base.train_config,
                       trained_tasks=base.trained_tasks)
        adapted.folder = base.folder
        logs_from = [p for p in sorted(base_dir.glob("log*.csv"))] + [p for p in [base_dir / "loss.png"]
                                                                         if p.is_file()]
        train_cfg = base.train_config
    else:
        record = to_dict(config)
        if work.is_dir() and (work / ADAPT_FILE).is_file():
            if json.loads((work / ADAPT_FILE).read_text())["config"] != record:
                raise AdaptError(f"{work}: an adaptation with other options was started there; rerun with the "
                                 "same options to resume it, or remove the folder")
            log.info("[mats] resuming the fine-tune in %s", work)
        work.mkdir(parents=True, exist_ok=True)
        save_json({"format": "mats-adapt", "config": record}, work / ADAPT_FILE)
        final = _fine_tune(config, domain, raw, memory, work, progress)
        adapted = MATS.from_pretrained(final, device=config.device, dtype=config.dtype, clap=base.clap,
                                       runtime="torch")
        tasks = set(base.trained_tasks or []) | {s.task for s in domain.samples}
        adapted.trained_tasks = sorted(tasks)
        train_cfg = _relative_train_config(adapted.train_config or {}, out, base_dir)
        adapted.train_config = train_cfg
        logs_from = [p for p in sorted(base_dir.glob("log*.csv")) if p.name != "log.csv"]
        logs_from += [final / "log.csv", final / "loss.png"]
    adapt_seconds = time.perf_counter() - t_adapt

    after, comparison = {}, {}
    for name, folder in evals.items():
        log.info("[mats] evaluating the adapted model on %s", name)
        after[name] = evaluate(adapted, folder, limit=eval_limit, progress=progress)
        comparison[name] = compare(before[name], after[name])

    report = {
        "format": "mats-adapt", "config": to_dict(config),
        "base": "mats default model" if base_dir.resolve() == DEFAULT_MODEL.resolve() else base_dir.name,
        "how": "memory only" if int(config.steps) == 0 else
               ("domain-only fine-tune" if float(config.mix) >= 1.0 else "mixed fine-tune"),
        "domain": {"source": domain.source, "rows": len(domain.samples), "texts": len(domain.texts),
                   "labels": domain.labels},
        "memory": {"base_texts": base.santa.num_entries, "added": added, "clusters": memory.num_clusters,
                   "reclustered": bool(config.recluster), "gate_margin": config.gate},
        "seconds": {"load_base": round(load_seconds, 2), "adapt": round(adapt_seconds, 2)},
        "evaluation": comparison,
    }
    _write(adapted, out, report, logs_from)
    shutil.rmtree(work, ignore_errors=True)
    report["seconds"]["total"] = round(time.perf_counter() - t_start, 2)
    report["_after"], report["_before"], report["_model"] = after, before, adapted
    return report


def _card_quality(report: dict) -> dict:
    """What the model card shows: how it was adapted, and the before/after numbers when measured."""
    rows = [{"name": f"{name}: tag keyword acc. before -> after", "before": c["before"], "after": c["after"],
             "clips won": c["won"], "clips lost": c["lost"]} for name, c in report["evaluation"].items()]
    cfg = report["config"]
    source = {"texts": cfg.get("texts"), "corpus": cfg.get("corpus")}
    named = next((Path(v).name for v in source.values() if v), None)
    how = report["how"] + (f", {cfg['steps']} steps x batch {cfg['batch_size']}, domain share {cfg['mix']:g}"
                           if cfg["steps"] else "")
    labels = report["domain"]["labels"]
    if not named and labels:
        named = "sound names: " + ", ".join(labels[:12]) + (f" and {len(labels) - 12} more" if len(labels) > 12 else "")
    return {"source": "mats adapt (evaluation runner, tags prompt, keyword accuracy)", "rows": rows,
            "adaptation": {"base": report["base"], "how": how,
                           "domain": named or report["domain"]["source"],
                           "memory": f"{report['memory']['base_texts']} base texts + {report['memory']['added']} "
                                     f"domain texts, {report['memory']['clusters']} clusters"
                                     + ("" if report["memory"].get("gate_margin") is None else
                                        f"; a clip sees the domain texts only when one is nearer to it than "
                                        f"the base texts by {report['memory']['gate_margin']:g}")}}


def _write(adapted, out: Path, report: dict, logs_from: Sequence[Path]) -> None:
    """The folder, complete or not at all: written by ``MATS.save_pretrained`` into a temporary
    sibling (the base's training logs and ``adapt.json`` placed first, as the trainer places its
    log), then renamed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.adapt-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        for p in logs_from:
            if p.is_file():
                shutil.copyfile(p, tmp / p.name)
        save_json({k: v for k, v in report.items() if not k.startswith("_")}, tmp / ADAPT_FILE)
        adapted.save_pretrained(tmp, quality=_card_quality(report))
        if out.is_dir():
            out.rmdir()  # empty (checked before anything was done)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    adapted.folder = out


def describe(report: dict) -> dict[str, Any]:
    """The report without the loaded objects (for JSON)."""
    return {k: v for k, v in report.items() if not k.startswith("_")}

