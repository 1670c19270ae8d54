"""Evaluation runner: a benchmark in, ``results.json`` + ``report.md`` (+ plots) out.

    from mats.evaluation.runner import EvalConfig, run_eval
    results = run_eval(EvalConfig(data="data/clotho", task="caption", out="eval/clotho", ablation=True))

Steps: load the benchmark (:func:`load_benchmark`), load the model, embed every clip's audio ONCE
(a clip whose audio cannot be read is recorded under ``failed`` and left out of every metric), then
decode once per bridge configuration -- the chosen ``bridge`` alone, or with ``ablation`` every bridge
and Santa's parameters swept one at a time -- all from the same embeddings, and score each run.

For sets with labels (the generic ``metadata.jsonl`` format with ``labels`` + ``synonyms``, ESC-50,
...) the runner also reports

* ``keyword_accuracy``: fraction of clips whose generated text mentions the clip's label or one of
  its synonyms (word-boundary, plural-tolerant, :func:`mats.evaluation.scoring.keyword_hits`);
* the CLAP zero-shot accuracy on the same clips (``zero_shot.accuracy``): top-1 of
  :func:`mats.zeroshot.zero_shot` over the sorted set of all the benchmark's labels equals the clip's
  label. It is the ceiling of what the text-trained decoder can recover from the same CLAP, so the
  tables read "zero-shot ceiling vs each bridge".

Deterministic: same data, model, seed and options give identical predictions and metrics
(timings aside).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..decoding import Decoding
from ..tasks import EVAL_TASKS, TASKS, get_eval_task, split_tags
from .ablation import DEFAULT_GRID, QUICK_GRID, RunSpec, merge_grids, plan_ablation
from .adapters import load_eval_benchmark

__all__ = ["EvalConfig", "Evaluation", "evaluate", "run_eval", "load_eval_benchmark", "write_results", "primary_metric",
           "choose_prompt_task", "RESULTS_FILE", "REPORT_FILE"]

RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"

def canonical_eval_task(task: str) -> str:
    return get_eval_task(task).name


@dataclass
class EvalConfig:
    data: str | os.PathLike
    task: str = "caption"
    benchmark: str | None = None          # adapter name; None: detect from the folder's files
    split: str | None = None
    model: str | os.PathLike | None = None  # model folder; None: the default model
    bridge: str | None = None             # the main run's bridge (None: the default bridge)
    limit: int | None = None              # first N clips of the benchmark
    seed: int = 0
    batch_size: int = 8
    out: str | os.PathLike | None = None  # folder for results.json / report.md / plots
    ablation: bool = False                # every bridge + Santa sweeps
    sweep: dict[str, list[float]] | None = None  # grid overrides (only these parameters are swept)
    quick: bool = False                   # the small QUICK_GRID instead of DEFAULT_GRID
    sweeps: bool = True                   # False: the ablation compares bridges only
    shift: str | os.PathLike | None = None  # shift vector file for the 'shift' bridge
    num_beams: int | None = None
    max_new_tokens: int | None = None
    rerank: int | None = None             # CLAP-scored beam candidates (default: per task)
    metrics: list[str] | None = None      # caption metrics (default: all of caption_metrics)
    device: str | None = None
    dtype: str | None = None              # LLM weights (mats.llm.pick_dtype; default "auto")
    runtime: str | None = None            # "auto" | "onnx" | "torch" (None: $MATS_RUNTIME or "auto")
    zero_shot: bool = True
    zero_shot_prompt: str = "the sound of {label}"
    progress: bool = True
    plots: bool = True

    def __post_init__(self) -> None:
        self.task = canonical_eval_task(self.task)
        if self.limit is not None and int(self.limit) < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")
        if int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        self.decoding(EVAL_TASKS[self.task].prompt_task)  # a bad option is refused before anything loads

    def decoding(self, prompt_task: str) -> Decoding:
        """The main run's :class:`~mats.decoding.Decoding` for the prompt task the evaluation asks with."""
        return Decoding(prompt_task, bridge=self.bridge, seed=self.seed, num_beams=self.num_beams,
                        max_new_tokens=self.max_new_tokens, rerank=self.rerank)

    def sweep_grid(self) -> dict[str, list[float]]:
        if not self.sweeps:
            return {}
        if self.sweep:
            return merge_grids({}, self.sweep, only_override=True)
        return merge_grids(QUICK_GRID if self.quick else DEFAULT_GRID, {})

    @property
    def run_ablation(self) -> bool:
        return bool(self.ablation or self.sweep)


# ----------------------------------------------------------------------------- helpers
def _jsonable(x: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python, Paths -> str (strict JSON)."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return v if math.isfinite(v) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, Path):
        return str(x)
    return x


def _scalar_metrics(m: dict) -> dict[str, float | None]:
    return {k: (float(v) if v is not None else None) for k, v in m.items()
            if v is None or isinstance(v, (int, float, np.floating, np.integer))}


def primary_metric(task: str, metrics: dict) -> str | None:
    """The number tables and plots lead with."""
    for k in get_eval_task(task).primary:
        if metrics.get(k) is not None:
            return k
    return next((k for k, v in metrics.items() if v is not None), None)


class _EmbeddedCLAP:
    """A CLAP whose audio side answers from embeddings already computed (so zero-shot reuses the
    run's embeddings instead of decoding the audio again); text goes to the real CLAP."""

    def __init__(self, clap, table: dict[str, np.ndarray]):
        self._clap, self._table = clap, table

    def encode_text(self, texts, *args, **kwargs):
        return self._clap.encode_text(texts, *args, **kwargs)

    def encode_audio(self, audio, *args, **kwargs):
        return np.stack([self._table[str(a)] for a in audio])

    def __getattr__(self, name):
        return getattr(self._clap, name)


# ----------------------------------------------------------------------------- evaluation
class Evaluation:
    """A benchmark embedded once with a model's CLAP; decode and score any task / bridge from it.

    ``items``: the clips that embedded; ``failed``: ``[{"id", "file", "error"}]`` for the others.
    Decodes are cached by (task, resolved bridge parameters, seed, decoding), so a sweep point equal
    to a bridge run is decoded once.
    """

    def __init__(self, mats, benchmark, limit: int | None = None, progress: bool = True,
                 batch_size: int = 8):
        from tqdm import tqdm

        self.mats = mats
        self.benchmark = benchmark
        all_items = list(benchmark.items)
        self.all_items = all_items[:limit] if limit else all_items
        self.progress = progress
        self.items: list = []
        self.failed: list[dict] = []
        rows = []
        t0 = time.perf_counter()
        for it in tqdm(self.all_items, desc="embed audio", unit="clip", disable=not progress,
                       dynamic_ncols=True, file=sys.stderr):
            try:
                e = np.asarray(mats.embed_audio([str(it.file)]), dtype=np.float32)
                if e.shape[0] != 1 or not np.isfinite(e).all():
                    raise ValueError("CLAP returned no finite embedding")
            except Exception as err:  # one unreadable clip must not stop the evaluation
                self.failed.append({"id": it.id or str(it.file), "file": str(it.file),
                                    "error": f"{type(err).__name__}: {err}"})
                continue
            self.items.append(it)
            rows.append(e[0])
        self.embed_seconds = time.perf_counter() - t0
        self.load_seconds = 0.0  # the model's load time, when Evaluation.load loaded it
        dim = getattr(mats.clap, "dim", 0)
        self.embeddings = np.stack(rows) if rows else np.zeros((0, dim), np.float32)
        self._decoded: dict[tuple, list[str]] = {}
        self._zero_shot: dict | None = None
        self.generate_seconds = 0.0
        self.score_seconds = 0.0
        self.zero_shot_seconds = 0.0

    @classmethod
    def load(cls, config: EvalConfig, mats=None, benchmark=None) -> "Evaluation":
        """The benchmark and the model the config names (each reused when given), every clip embedded.
        Refuses a benchmark none of whose clips could be read."""
        if benchmark is None:
            benchmark = load_eval_benchmark(config.data, config.benchmark, config.split)
        t_load = time.perf_counter()
        if mats is None:
            mats = _load_mats(config)
        load_seconds = time.perf_counter() - t_load
        ev = cls(mats, benchmark, limit=config.limit, progress=config.progress)
        ev.load_seconds = load_seconds
        if not ev.items:
            first = ev.failed[0]["error"] if ev.failed else "no clips in the benchmark"
            raise RuntimeError(f"none of the {len(ev.all_items)} clips could be embedded; first error: {first}")
        return ev

    # -- decoding ------------------------------------------------------------------------------
    def questions(self, prompt_task: str) -> list[str] | None:
        if not TASKS[prompt_task].needs_question:
            return None
        out = []
        for it in self.items:
            if not (it.question or "").strip():
                raise ValueError(f"clip {it.id or it.file} has no question: the qa task needs one per clip")
            q = it.question.strip()
            if it.choices:
                q = f"{q} Choose one of: " + "; ".join(str(c) for c in it.choices) + "."
            out.append(q)
        return out

    def decode(self, decoding: Decoding, batch_size: int = 8, bar=None) -> list[str]:
        """Every clip's answer under ``decoding`` (resolved by the model), through the model's run
        loop; cached by the resolved decoding, so a sweep point equal to a bridge run decodes once."""
        from ..pipeline import Item

        decoding = self.mats.decoding(decoding)
        key = (decoding, int(batch_size))
        if key in self._decoded:
            return self._decoded[key]
        qs = self.questions(decoding.task) or [None] * len(self.items)
        items = [Item(e, question=q, name=it.id or str(it.file))
                 for it, e, q in zip(self.items, self.embeddings, qs, strict=True)]
        out: list[str] = []
        t0 = time.perf_counter()
        for r in self.mats.run(items, decoding, batch_size=batch_size):
            if r.error is not None:
                raise RuntimeError(f"decoding {r.file} failed: {r.error}") from r.exception
            out.append(r.text)
            if bar is not None:
                bar.update(1)
        self.generate_seconds += time.perf_counter() - t0
        self._decoded[key] = out
        return out

    # -- scoring -------------------------------------------------------------------------------
    def has_labels(self) -> bool:
        return bool(self.items) and all(it.labels for it in self.items)

    def score(self, task: str, predictions: Sequence[str], caption_metrics: list[str] | None = None) -> dict:
        """``{"metrics", "per_item" (one dict per clip), "unavailable"}`` for one run."""
        from .scoring import keyword_hits, score_task

        task = canonical_eval_task(task)
        t0 = time.perf_counter()
        items = self.items
        metrics: dict[str, Any] = {}
        unavailable: dict[str, str] = {}
        per = [dict() for _ in items]
        extras: dict[str, Any] = {}

        def merge(res: dict) -> None:
            metrics.update(_scalar_metrics(res.get("metrics", {})))
            unavailable.update(res.get("unavailable") or {})
            for row, extra in zip(per, res.get("per_item") or [], strict=False):
                row.update({k: v for k, v in extra.items() if k not in ("id", "prediction")})
            for k in ("implementations", "tokenizer"):
                if res.get(k):
                    extras[k] = res[k]

        if task == "caption":
            if all(it.captions for it in items):
                merge(score_task("caption", items, predictions, metrics=caption_metrics))
            else:
                unavailable["caption_metrics"] = ("the clips have no reference captions; only label-based "
                                                  "metrics (keyword_accuracy) are reported")
        elif task in ("tag", "classify"):
            if not self.has_labels():
                raise ValueError(f"task {task!r} needs labels for every clip; {self.benchmark.name} has none")
            vocab = self.benchmark.labels or None
            merge(score_task("tag", items, predictions, labels=vocab))
            if task == "classify" or all(len(it.labels) == 1 for it in items):
                merge(score_task("classify", items, predictions, labels=vocab))
        elif task == "qa":
            merge(score_task("qa", items, predictions))
        if self.has_labels():
            hits = keyword_hits(items, predictions)
            metrics["keyword_accuracy"] = sum(hits) / len(hits)
            for row, h in zip(per, hits, strict=True):
                row["keyword_hit"] = h
        self.score_seconds += time.perf_counter() - t0
        return {"metrics": metrics, "per_item": per, "unavailable": unavailable, **extras}

    # -- zero-shot ceiling ---------------------------------------------------------------------
    def zero_shot(self, prompt: str = "the sound of {label}") -> dict:
        """CLAP zero-shot top-1 accuracy over the sorted set of all the benchmark's labels, on the
        clips that embedded (their embeddings are reused, not recomputed)."""
        if self._zero_shot is not None:
            return self._zero_shot
        from ..zeroshot import zero_shot

        labels = sorted(set(self.benchmark.labels or [lab for it in self.items for lab in it.labels]))
        if not self.has_labels():
            self._zero_shot = {"available": False, "reason": "the clips have no labels"}
            return self._zero_shot
        if len(labels) < 2:
            self._zero_shot = {"available": False, "reason": "zero-shot needs at least two labels in the set"}
            return self._zero_shot
        t0 = time.perf_counter()
        table = {str(it.file): e for it, e in zip(self.items, self.embeddings, strict=True)}
        rows = zero_shot(_EmbeddedCLAP(self.mats.clap, table), [it.file for it in self.items], labels,
                         prompt=prompt, top_k=3)
        per = [{"label": r["label"], "score": r["score"], "correct": r["label"] in it.labels}
               for r, it in zip(rows, self.items, strict=True)]
        self.zero_shot_seconds += time.perf_counter() - t0
        self._zero_shot = {"available": True, "accuracy": sum(p["correct"] for p in per) / len(per),
                           "n": len(per), "labels": labels, "prompt": prompt,
                           "clap": getattr(self.mats.clap, "name", None), "per_item": per}
        return self._zero_shot


# ----------------------------------------------------------------------------- the run
def evaluate(config: EvalConfig, mats=None, benchmark=None) -> dict:
    """Load the benchmark and the model (each reused when given), embed every clip once, and
    :func:`run_eval`. What ``mats eval`` runs."""
    return run_eval(config, Evaluation.load(config, mats, benchmark))


def run_eval(config: EvalConfig, evaluation: Evaluation) -> dict:
    """Run one evaluation (optionally the ablation) on a benchmark already embedded, and return the
    results dict; with ``config.out`` also write ``results.json``, ``report.md`` and the plots there.
    One ``evaluation`` serves several configs (e.g. several tasks over one set)."""
    t_start = time.perf_counter()
    ev = evaluation
    prompt = choose_prompt_task(config.task, ev.benchmark, ev.mats.trained_tasks)
    decoding = ev.mats.decoding(config.decoding(prompt["task"]))
    specs = plan_ablation(ev.mats.santa, shift_available=ev.mats.shift is not None,
                          grid=config.sweep_grid()) if config.run_ablation else []
    scored, runs = _decode_and_score(config, ev, decoding, specs)
    main = scored[decoding]
    zs = ev.zero_shot(config.zero_shot_prompt) if config.zero_shot else {"available": False,
                                                                          "reason": "disabled (--no-zero-shot)"}
    predictions = _prediction_rows(ev, decoding, ev.decode(decoding, config.batch_size), main, zs)
    results = _results(config, ev, prompt, decoding, main, predictions, zs, runs)
    results["timings"] = {"load_model_seconds": round(ev.load_seconds, 3),
                          "embed_seconds": round(ev.embed_seconds, 3),
                          "generate_seconds": round(ev.generate_seconds, 3),
                          "score_seconds": round(ev.score_seconds, 3),
                          "zero_shot_seconds": round(ev.zero_shot_seconds, 3),
                          "total_seconds": round(time.perf_counter() - t_start, 3)}
    if config.out is not None:
        write_results(results, config.out, plots=config.plots)
    return results


def _prompt_task(task: str, benchmark) -> str:
    """The prompt an evaluation task decodes with; MusicCaps captions are asked for as music."""
    prompt_task = EVAL_TASKS[task].prompt_task
    return "music" if prompt_task == "caption" and benchmark.name == "musiccaps" else prompt_task


def choose_prompt_task(task: str, benchmark, trained: set[str] | None) -> dict[str, str]:
    """``{"task", "tag", "reason"}``: the prompt task an evaluation asks with and why.

    The paper's prompt task for the set (``Benchmark.paper_tasks``: ``single`` for ESC-50, ...) when
    the model was trained on it (``trained``: :func:`mats.tasks.trained_tasks` of its folder);
    otherwise the evaluation task's own prompt task, as a model never trained on a tag cannot be
    expected to answer it."""
    task = canonical_eval_task(task)
    default = _prompt_task(task, benchmark)
    paper = (getattr(benchmark, "paper_tasks", None) or {}).get(task)
    name = getattr(benchmark, "name", "the benchmark")
    if paper is None:
        chosen, reason = default, f"the {task!r} evaluation prompt (the paper names no other for {name})"
    elif paper == default or (trained is not None and paper in trained):
        chosen, reason = paper, f"the paper's prompt for {name}" + (
            f"; the model was trained on [{TASKS[paper].tag}]" if trained is not None else "")
    elif trained is None:
        chosen, reason = default, (f"fallback: the model folder does not record its trained tasks (no "
                                   f"\"trained_tasks\" in config.json), so not the paper's "
                                   f"[{TASKS[paper].tag}] for {name}")
    else:
        chosen, reason = default, (f"fallback: model never trained on [{TASKS[paper].tag}] "
                                   f"(the paper's prompt for {name})")
    return {"task": chosen, "tag": TASKS[chosen].tag, "reason": reason}


def _decode_and_score(config: EvalConfig, ev: Evaluation, decoding: Decoding,
                      specs: list[RunSpec]) -> tuple[dict[Decoding, dict], list[dict]]:
    """Decode and score the main run and every ablation run that is not skipped, once per distinct
    resolved decoding; returns the scores by decoding and one row per ablation run (skipped ones
    with their reason)."""
    from tqdm import tqdm

    mats = ev.mats
    runs_of = {spec.name: mats.decoding(replace(decoding, bridge=spec.bridge)) for spec in specs if not spec.skipped}
    unique = {decoding, *runs_of.values()}
    bar = tqdm(total=len(unique) * len(ev.items), desc=f"decode {config.task}", unit="clip",
               disable=not config.progress, dynamic_ncols=True, file=sys.stderr)
    scored: dict[Decoding, dict] = {}
    for d in [decoding, *runs_of.values()]:
        if d not in scored:
            scored[d] = ev.score(config.task, ev.decode(d, config.batch_size, bar=bar), config.metrics)
    bar.close()
    runs: list[dict] = []
    for spec in specs:
        row: dict[str, Any] = {"name": spec.name, "kind": spec.kind, "param": spec.param, "value": spec.value}
        if spec.skipped:
            row.update(bridge=spec.bridge.describe(mats.santa), status="skipped", reason=spec.skipped, metrics={})
        else:
            d = runs_of[spec.name]
            row.update(bridge=d.bridge.describe(), status="ok", metrics=scored[d]["metrics"],
                       predictions=list(ev.decode(d, config.batch_size)))
        runs.append(row)
    return scored, runs


def _prediction_rows(ev: Evaluation, decoding: Decoding, preds: list[str], main: dict, zs: dict) -> list[dict]:
    """One row per evaluated clip: its prediction, references, per-clip scores and zero-shot answer."""
    rows = []
    tags = decoding.spec.output == "tags"
    for i, (it, p) in enumerate(zip(ev.items, preds, strict=True)):
        r: dict[str, Any] = {"id": it.id or str(it.file), "file": str(it.file), "prediction": p}
        if tags:
            r["tags"] = split_tags(p)
        if it.labels:
            r["labels"] = list(it.labels)
        if it.captions:
            r["references"] = list(it.captions)
        if it.question is not None:
            r["question"] = it.question
            r["answer"] = it.answer
        r.update(main["per_item"][i])
        if zs.get("available"):
            r["zero_shot_label"] = zs["per_item"][i]["label"]
            r["zero_shot_correct"] = zs["per_item"][i]["correct"]
        rows.append(r)
    return rows


def _results(config: EvalConfig, ev: Evaluation, prompt: dict, decoding: Decoding,
             main: dict, predictions: list[dict], zs: dict, runs: list[dict]) -> dict[str, Any]:
    """The ``results.json`` document (timings are filled in by the caller, last)."""
    mats, benchmark, task = ev.mats, ev.benchmark, config.task
    metrics = dict(main["metrics"])
    if zs.get("available"):
        metrics["zero_shot_accuracy"] = zs["accuracy"]
    versions = _versions()
    results: dict[str, Any] = {
        "format": "mats-eval/1",
        "task": task,
        "benchmark": {"name": benchmark.name, "split": benchmark.split, "data": str(Path(config.data).resolve()),
                      "n_total": len(benchmark.items), "n_selected": len(ev.all_items),
                      "n_missing_audio": len(benchmark.missing), "missing": list(benchmark.missing[:50]),
                      "labels": list(benchmark.labels)},
        "config": {
            "model": _describe_model(mats),
            "task": task, "prompt_task": prompt["task"], "prompt_tag": prompt["tag"],
            "prompt_reason": prompt["reason"],
            "bridge": decoding.bridge.describe(),
            "seed": decoding.seed, "batch_size": config.batch_size, "limit": config.limit,
            "decoding": {k: v for k, v in decoding.to_dict().items() if k not in ("task", "bridge", "seed")},
            "caption_metrics": config.metrics,
            "ablation": config.run_ablation,
            "sweep_grid": config.sweep_grid() if config.run_ablation else None,
            "shift_file": str(config.shift) if config.shift else None,
            "zero_shot_prompt": config.zero_shot_prompt if config.zero_shot else None,
            "device": str(getattr(mats.model, "device", "")) or None,
            "runtime": mats.runtime,
            "llm_dtype": str(next(mats.model.llm.parameters()).dtype).replace("torch.", "")
            if hasattr(mats.model, "llm") else None,
            "mats_version": versions["mats"], "versions": versions,
        },
        "n_evaluated": len(ev.items),
        "n_failed": len(ev.failed),
        "failed": ev.failed,
        "primary_metric": primary_metric(task, metrics),
        "metrics": metrics,
        "unavailable": main["unavailable"],
        "zero_shot": {k: v for k, v in zs.items() if k != "per_item"},
        "predictions": predictions,
        "ablation": ({"runs": runs, "bridges": [r["name"] for r in runs if r["kind"] == "bridge"]}
                     if config.run_ablation else None),
        "timings": {},
    }
    for k in ("implementations", "tokenizer"):
        if main.get(k):
            results[k] = main[k]
    return results


def _load_mats(config: EvalConfig):
    from ..pipeline import MATS
    m = MATS.from_pretrained(config.model, device=config.device, dtype=config.dtype, runtime=config.runtime)
    if config.shift is not None:
        from ..bridge.shift import load_shift
        p = Path(config.shift)
        if not p.exists():
            raise FileNotFoundError(f"shift vector file not found: {p}")
        m.shift = load_shift(p)
    return m


def _describe_model(mats) -> dict:
    d: dict[str, Any] = {"folder": str(Path(mats.folder).resolve())}
    try:
        d["llm"] = mats.model.config.llm
        d["clap_spec"] = mats.model.config.clap
        d["mapper"] = dataclasses.asdict(mats.model.config.mapper)
    except Exception:  # pragma: no cover - a stand-in model without a dataclass config
        pass
    try:
        d["clap"] = mats.clap.describe()
    except Exception:  # pragma: no cover
        d["clap"] = {"name": getattr(mats.clap, "name", None)}
    d["santa"] = (dataclasses.asdict(mats.santa.config) | {"num_entries": int(mats.santa.num_entries)}
                  if mats.santa is not None else None)
    d["has_shift"] = mats.shift is not None
    return d


def _versions() -> dict:
    from ..version import __version__
    v = {"mats": __version__, "python": platform.python_version()}
    for mod in ("torch", "transformers", "peft", "numpy"):
        try:
            v[mod] = __import__(mod).__version__
        except Exception:  # pragma: no cover
            pass
    return v


def write_results(results: dict, out: str | os.PathLike, plots: bool = True) -> Path:
    """``results.json`` + plots + ``report.md`` in ``out``; returns the folder."""
    from .report import make_plots, render_report

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if plots and results.get("ablation"):
        results["plots"] = make_plots(results, out)
    # File names that are not UTF-8 hold lone surrogates; backslashreplace writes them as \udcXX,
    # which is also the JSON escape that reads back to the same name.
    (out / RESULTS_FILE).write_text(json.dumps(_jsonable(results), indent=2, ensure_ascii=False) + "\n",
                                    encoding="utf-8", errors="backslashreplace")
    (out / REPORT_FILE).write_text(render_report(results), encoding="utf-8", errors="backslashreplace")
    return out
