"""Benchmark adapters: local copies of the field's benchmarks, in their published layouts.

Every adapter returns a :class:`Benchmark` of :class:`EvalItem`; :func:`load_benchmark` picks the
adapter by name or, with ``name=None``, by the files it finds. Audio paths are resolved against the
folder; rows whose clip is missing are skipped and listed in ``Benchmark.missing`` (YouTube-sourced
sets are never complete), unless ``missing="error"``. A missing metadata file raises
:class:`BenchmarkLayoutError` naming the file that was expected.
"""

from __future__ import annotations

import ast
import csv
import json
import os
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ..jsonl import iter_jsonl

AUDIO_EXTS = (".wav", ".flac", ".mp3", ".ogg", ".m4a", ".opus", ".mp4", ".mkv", ".webm")


class BenchmarkLayoutError(FileNotFoundError):
    """The folder does not have the files the benchmark's published layout puts there."""


@dataclass
class EvalItem:
    file: Path
    captions: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    synonyms: dict[str, list[str]] = field(default_factory=dict)
    question: str | None = None
    answer: str | None = None
    choices: list[str] = field(default_factory=list)
    id: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "file": str(self.file), "captions": self.captions, "labels": self.labels,
                "synonyms": self.synonyms, "question": self.question, "answer": self.answer,
                "choices": self.choices, "meta": self.meta}


@dataclass
class Benchmark:
    name: str
    items: list[EvalItem]
    tasks_supported: tuple[str, ...]
    split: str | None = None
    root: Path | None = None
    labels: list[str] = field(default_factory=list)      # class vocabulary where the set has one
    missing: list[str] = field(default_factory=list)     # rows skipped because their audio is absent
    # The prompt task the paper's evaluation configs use for this set, by evaluation task
    # ({"classify": "single"} for ESC-50); the runner uses it if the model was trained on it.
    paper_tasks: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(self.items)


# ----------------------------------------------------------------------------- helpers
def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise BenchmarkLayoutError(f"{what}: expected {path} (not found)")
    return path


def _read_csv(path: Path, header: bool = True) -> list[dict[str, str]] | list[list[str]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        if header:
            return list(csv.DictReader(f))
        return [r for r in csv.reader(f) if r]


def _need_columns(rows: list[dict[str, str]], cols: Sequence[str], path: Path) -> None:
    if rows:
        absent = [c for c in cols if c not in rows[0]]
        if absent:
            raise BenchmarkLayoutError(f"{path}: missing column(s) {absent}; found {list(rows[0])}")


def _find_audio(dirs: Sequence[Path], stems: Sequence[str]) -> Path | None:
    """First existing file ``dir/stem`` (stem may carry an extension) or ``dir/stem.ext``."""
    for d in dirs:
        if not d.is_dir():
            continue
        for s in stems:
            p = d / s
            if p.suffix.lower() in AUDIO_EXTS and p.is_file():
                return p
            for ext in AUDIO_EXTS:
                q = d / (s + ext)
                if q.is_file():
                    return q
    return None


def _finish(name: str, root: Path, split: str | None, tasks: tuple[str, ...], items: list[EvalItem],
            missing: list[str], missing_policy: str, audio_hint: str, labels: Iterable[str] = (),
            paper_tasks: dict[str, str] | None = None) -> Benchmark:
    if missing_policy not in ("skip", "error"):
        raise ValueError("missing must be 'skip' or 'error'")
    if missing and (missing_policy == "error" or not items):
        raise BenchmarkLayoutError(
            f"{name}: audio not found for {len(missing)} row(s) (e.g. {missing[:3]}); expected {audio_hint}")
    return Benchmark(name, items, tasks, split, root, sorted(set(labels)), missing, dict(paper_tasks or {}))


def _fold_rows(csv_path: Path, columns: Sequence[str], split: str | None) -> tuple[list[dict], list[dict]]:
    """All rows of a fold-based set's CSV (its label vocabulary) and those of the fold ``split`` names."""
    rows = _read_csv(csv_path)
    _need_columns(rows, columns, csv_path)
    fold = _fold_filter(split)
    return rows, [r for r in rows if fold is None or int(r["fold"]) == fold]


def _float_str(x: str) -> str:
    try:
        v = float(x)
    except ValueError:
        return x
    return str(int(v)) if v.is_integer() else str(v)


# ----------------------------------------------------------------------------- AudioCaps
def load_audiocaps(data_dir: str | Path, split: str | None = None, missing: str = "skip") -> Benchmark:
    """AudioCaps. Layout: ``{split}.csv`` (train / val / test) with columns
    ``audiocap_id,youtube_id,start_time,caption`` (one caption per row; val/test clips have 5 rows)
    in ``data_dir`` or ``data_dir/dataset/``; audio in ``audio/{split}/``, ``{split}/``, ``audio/``
    or ``data_dir`` named ``{youtube_id}_{start_time}``, ``Y{youtube_id}_{start}_{start+10}``
    (with ``.000`` decimals or without), ``{youtube_id}`` or ``{audiocap_id}``, any audio extension.
    Rows of one clip are merged into one item with all its captions. Default split: test."""
    root = Path(data_dir)
    split = split or "test"
    split_file = {"valid": "val", "validation": "val", "eval": "test", "evaluation": "test"}.get(split, split)
    csv_path = next((p for p in (root / f"{split_file}.csv", root / "dataset" / f"{split_file}.csv") if p.is_file()),
                    root / f"{split_file}.csv")
    _need(csv_path, f"AudioCaps {split_file} captions")
    rows = _read_csv(csv_path)
    _need_columns(rows, ("audiocap_id", "youtube_id", "start_time", "caption"), csv_path)
    groups: "OrderedDict[tuple[str, str], list[dict[str, str]]]" = OrderedDict()
    for r in rows:
        groups.setdefault((r["youtube_id"], _float_str(r["start_time"])), []).append(r)
    dirs = [root / "audio" / split_file, root / "audio" / split, root / split_file, root / split,
            root / "audio", root / "waveforms" / split_file, root]
    items, miss = [], []
    for (yt, start), rs in groups.items():
        s = float(start)
        stems = [f"{yt}_{start}", f"{yt}_{int(s)}", f"Y{yt}_{s:.3f}_{s + 10:.3f}", f"Y{yt}_{int(s)}_{int(s) + 10}",
                 f"{yt}_{int(s)}_{int(s) + 10}", f"Y{yt}", yt] + [r["audiocap_id"] for r in rs]
        f = _find_audio(dirs, stems)
        if f is None:
            miss.append(f"{yt}_{start}")
            continue
        items.append(EvalItem(file=f, captions=[r["caption"] for r in rs], id=f"{yt}_{start}",
                              meta={"youtube_id": yt, "start_time": s,
                                    "audiocap_ids": [r["audiocap_id"] for r in rs]}))
    return _finish("audiocaps", root, split_file, ("caption",), items, miss, missing,
                   f"clips such as audio/{split_file}/<youtube_id>_<start_time>.wav under {root}",
                   paper_tasks={"caption": "caption_audiocaps"})


# ----------------------------------------------------------------------------- Clotho
CLOTHO_SPLITS = {"dev": "development", "development": "development", "train": "development",
                 "val": "validation", "valid": "validation", "validation": "validation",
                 "eval": "evaluation", "evaluation": "evaluation", "test": "evaluation"}


def load_clotho(data_dir: str | Path, split: str | None = None, missing: str = "skip") -> Benchmark:
    """Clotho v2. Layout: ``clotho_captions_{development,validation,evaluation}.csv`` with columns
    ``file_name,caption_1..caption_5``; audio in ``{split}/`` (as the archives unpack),
    ``clotho_audio_files/{split}/``, ``audio/{split}/``, ``clotho_audio_{split}/`` or ``audio/``.
    Default split: evaluation."""
    root = Path(data_dir)
    sp = CLOTHO_SPLITS.get(split or "evaluation", split or "evaluation")
    csv_path = _need(root / f"clotho_captions_{sp}.csv", f"Clotho {sp} captions")
    rows = _read_csv(csv_path)
    _need_columns(rows, ("file_name", "caption_1"), csv_path)
    dirs = [root / sp, root / "clotho_audio_files" / sp, root / "audio" / sp, root / f"clotho_audio_{sp}",
            root / "audio", root]
    items, miss = [], []
    for r in rows:
        caps = [r[k] for k in sorted((k for k in r if k and k.startswith("caption_")),
                                     key=lambda k: int(k.split("_")[1])) if r[k] and r[k].strip()]
        f = _find_audio(dirs, [r["file_name"]])
        if f is None:
            miss.append(r["file_name"])
            continue
        items.append(EvalItem(file=f, captions=caps, id=r["file_name"]))
    return _finish("clotho", root, sp, ("caption",), items, miss, missing,
                   f"{root / sp}/<file_name> (Clotho audio archive unpacked)",
                   paper_tasks={"caption": "caption_clotho"})


# ----------------------------------------------------------------------------- ESC-50
def _fold_filter(split: str | None) -> int | None:
    if split is None or split in ("all", "test", "eval"):
        return None
    s = str(split).lower().replace("fold", "").strip("_- ")
    if not s.isdigit():
        raise ValueError(f"split for a fold-based set must be a fold number ('1' or 'fold1'), not {split!r}")
    return int(s)


def load_esc50(data_dir: str | Path, split: str | None = None, missing: str = "skip") -> Benchmark:
    """ESC-50. Layout (the GitHub repository): ``meta/esc50.csv`` with columns
    ``filename,fold,target,category,esc10,src_file,take`` and ``audio/{filename}``.
    ``split``: a fold ("1".."5" / "fold1"); None = all 2,000 clips (zero-shot evaluation)."""
    root = Path(data_dir)
    csv_path = _need(root / "meta" / "esc50.csv", "ESC-50 metadata")
    rows, selected = _fold_rows(csv_path, ("filename", "fold", "category"), split)
    items, miss = [], []
    for r in selected:
        f = _find_audio([root / "audio"], [r["filename"]])
        if f is None:
            miss.append(r["filename"])
            continue
        items.append(EvalItem(file=f, labels=[r["category"]], id=r["filename"],
                              meta={"fold": int(r["fold"]), "esc10": r.get("esc10") == "True"}))
    return _finish("esc50", root, split, ("classify",), items, miss, missing, f"{root / 'audio'}/<filename>",
                   labels=[r["category"] for r in rows], paper_tasks={"classify": "single"})


# ----------------------------------------------------------------------------- UrbanSound8K
def load_urbansound8k(data_dir: str | Path, split: str | None = None, missing: str = "skip") -> Benchmark:
    """UrbanSound8K. Layout: ``metadata/UrbanSound8K.csv`` with columns
    ``slice_file_name,fsID,start,end,salience,fold,classID,class`` and ``audio/fold{N}/{slice_file_name}``.
    ``split``: a fold ("1".."10"); None = all folds."""
    root = Path(data_dir)
    csv_path = _need(root / "metadata" / "UrbanSound8K.csv", "UrbanSound8K metadata")
    rows, selected = _fold_rows(csv_path, ("slice_file_name", "fold", "class"), split)
    items, miss = [], []
    for r in selected:
        f = _find_audio([root / "audio" / f"fold{r['fold']}"], [r["slice_file_name"]])
        if f is None:
            miss.append(f"fold{r['fold']}/{r['slice_file_name']}")
            continue
        items.append(EvalItem(file=f, labels=[r["class"]], id=r["slice_file_name"],
                              meta={"fold": int(r["fold"]), "salience": r.get("salience")}))
    return _finish("urbansound8k", root, split, ("classify",), items, miss, missing,
                   f"{root / 'audio'}/fold<N>/<slice_file_name>", labels=[r["class"] for r in rows],
                   paper_tasks={"classify": "single"})


# ----------------------------------------------------------------------------- VGGSound
def load_vggsound(data_dir: str | Path, split: str | None = None, missing: str = "skip") -> Benchmark:
    """VGGSound. Layout: ``vggsound.csv`` without header, rows ``ytid,start_seconds,label,split``
    (split = train / test); clips in ``video/``, ``audio/``, ``clips/``, ``{split}/`` or the folder
    itself, named ``{ytid}_{start:06d}`` (the official download naming), ``{ytid}_{start}``,
    ``{ytid}_{start}_{start+10}`` or ``{ytid}``. Rows of one clip are merged (labels unioned).
    Default split: test."""
    root = Path(data_dir)
    csv_path = _need(root / "vggsound.csv", "VGGSound metadata")
    rows = _read_csv(csv_path, header=False)
    split = split or "test"
    groups: "OrderedDict[tuple[str, int], list[str]]" = OrderedDict()
    all_labels = []
    for r in rows:
        if len(r) < 4:
            raise BenchmarkLayoutError(f"{csv_path}: expected rows ytid,start,label,split; got {r}")
        yt, start, label, sp = r[0].strip(), int(float(r[1])), r[2].strip(), r[3].strip()
        if yt == "# YouTube ID":  # a header, should a copy have one
            continue
        all_labels.append(label)
        if split != "all" and sp != split:
            continue
        labs = groups.setdefault((yt, start), [])
        if label not in labs:
            labs.append(label)
    dirs = [root / "video", root / "audio", root / "clips", root / split, root]
    items, miss = [], []
    for (yt, start), labs in groups.items():
        f = _find_audio(dirs, [f"{yt}_{start:06d}", f"{yt}_{start}", f"{yt}_{start}_{start + 10}", yt])
        if f is None:
            miss.append(f"{yt}_{start:06d}")
            continue
        items.append(EvalItem(file=f, labels=labs, id=f"{yt}_{start:06d}", meta={"youtube_id": yt, "start": start}))
    return _finish("vggsound", root, split, ("classify",), items, miss, missing,
                   f"clips such as {root / 'video'}/<ytid>_<start:06d>.mp4", labels=all_labels,
                   paper_tasks={"classify": "single"})


# ----------------------------------------------------------------------------- FSD50K
def load_fsd50k(data_dir: str | Path, split: str | None = None, missing: str = "skip") -> Benchmark:
    """FSD50K (Zenodo release). Layout: ``FSD50K.ground_truth/{dev,eval}.csv`` with columns
    ``fname,labels,mids[,split]`` (labels comma-separated, e.g. ``Bark,Dog,Animal``; dev rows have
    split train / val), ``FSD50K.ground_truth/vocabulary.csv`` (index,label,mid; optional) and
    audio in ``FSD50K.dev_audio/{fname}.wav`` / ``FSD50K.eval_audio/{fname}.wav``.
    ``split``: eval (default; "test" too), dev, train or val."""
    root = Path(data_dir)
    split = {"test": "eval", "valid": "val", "validation": "val"}.get(split or "eval", split or "eval")
    if split not in ("eval", "dev", "train", "val"):
        raise ValueError(f"FSD50K split must be eval, dev, train or val, not {split!r}")
    gt = root / "FSD50K.ground_truth"
    which = "eval" if split == "eval" else "dev"
    csv_path = _need(gt / f"{which}.csv", f"FSD50K {which} ground truth")
    rows = _read_csv(csv_path)
    _need_columns(rows, ("fname", "labels"), csv_path)
    vocab: list[str] = []
    if (gt / "vocabulary.csv").is_file():
        vocab = [r[1] for r in _read_csv(gt / "vocabulary.csv", header=False) if len(r) >= 2]
    audio_dir = root / f"FSD50K.{which}_audio"
    items, miss = [], []
    for r in rows:
        if split in ("train", "val") and r.get("split") != split:
            continue
        f = _find_audio([audio_dir], [str(r["fname"])])
        if f is None:
            miss.append(str(r["fname"]))
            continue
        labs = [x for x in r["labels"].split(",") if x]
        items.append(EvalItem(file=f, labels=labs, id=str(r["fname"]),
                              meta={"mids": [m for m in r.get("mids", "").split(",") if m]}))
    if not vocab:
        vocab = [lab for r in rows for lab in r["labels"].split(",") if lab]
    return _finish("fsd50k", root, split, ("tag",), items, miss, missing, f"{audio_dir}/<fname>.wav", labels=vocab)


# ----------------------------------------------------------------------------- MusicCaps
def load_musiccaps(data_dir: str | Path, split: str | None = None, missing: str = "skip") -> Benchmark:
    """MusicCaps. Layout: ``musiccaps-public.csv`` with columns ``ytid,start_s,end_s,
    audioset_positive_labels,aspect_list,caption,author_id,is_balanced_subset,is_audioset_eval``;
    clips in ``audio/``, ``music_data/``, ``wav/``, ``clips/`` or the folder itself, named
    ``{ytid}``, ``[{ytid}]-[{start_s}-{end_s}]``, ``{ytid}_{start_s}_{end_s}`` or ``{ytid}_{start_s}``.
    ``split``: eval / test (is_audioset_eval True, 2,858 clips), train (False), all (default)."""
    root = Path(data_dir)
    csv_path = _need(root / "musiccaps-public.csv", "MusicCaps metadata")
    rows = _read_csv(csv_path)
    _need_columns(rows, ("ytid", "start_s", "end_s", "caption"), csv_path)
    sp = {"test": "eval"}.get(split or "all", split or "all")
    dirs = [root / "audio", root / "music_data", root / "wav", root / "clips", root]
    items, miss = [], []
    for r in rows:
        is_eval = str(r.get("is_audioset_eval", "")).strip().lower() == "true"
        if (sp == "eval" and not is_eval) or (sp == "train" and is_eval):
            continue
        yt, s, e = r["ytid"], _float_str(r["start_s"]), _float_str(r["end_s"])
        f = _find_audio(dirs, [yt, f"[{yt}]-[{s}-{e}]", f"{yt}_{s}_{e}", f"{yt}_{s}"])
        if f is None:
            miss.append(yt)
            continue
        try:
            aspects = list(ast.literal_eval(r.get("aspect_list") or "[]"))
        except (ValueError, SyntaxError):
            aspects = []
        items.append(EvalItem(file=f, captions=[r["caption"]], id=yt,
                              meta={"aspects": aspects, "start_s": float(s), "end_s": float(e),
                                    "is_audioset_eval": is_eval}))
    return _finish("musiccaps", root, sp, ("caption",), items, miss, missing, f"{root / 'audio'}/<ytid>.wav")


# ----------------------------------------------------------------------------- ClothoAQA
def load_clothoaqa(data_dir: str | Path, split: str | None = None, missing: str = "skip") -> Benchmark:
    """Clotho-AQA. Layout: ``clotho_aqa_{train,val,test}.csv`` with columns
    ``file_name,QuestionText,answer,confidence`` (each question answered by 3 annotators: 3 rows) and
    audio in ``audio_files/``, ``audio/`` or the folder itself. Rows of one (file, question) are merged;
    ``answer`` is the majority answer (ties: first given), all answers are in ``meta["answers"]``.
    Default split: test."""
    root = Path(data_dir)
    sp = {"valid": "val", "validation": "val", "eval": "test"}.get(split or "test", split or "test")
    csv_path = _need(root / f"clotho_aqa_{sp}.csv", f"Clotho-AQA {sp} questions")
    rows = _read_csv(csv_path)
    _need_columns(rows, ("file_name", "QuestionText", "answer"), csv_path)
    groups: "OrderedDict[tuple[str, str], list[dict[str, str]]]" = OrderedDict()
    for r in rows:
        groups.setdefault((r["file_name"], r["QuestionText"].strip()), []).append(r)
    dirs = [root / "audio_files", root / "audio", root / sp, root]
    items, miss = [], []
    for k, ((fn, q), rs) in enumerate(groups.items()):
        f = _find_audio(dirs, [fn])
        if f is None:
            miss.append(fn)
            continue
        answers = [r["answer"].strip() for r in rs]
        counts = Counter(a.lower() for a in answers)
        best = max(counts.values())
        majority = next(a for a in answers if counts[a.lower()] == best)
        items.append(EvalItem(file=f, question=q, answer=majority, id=f"{fn}#{k}",
                              meta={"answers": answers, "confidence": [r.get("confidence") for r in rs]}))
    return _finish("clothoaqa", root, sp, ("qa",), items, miss, missing, f"{root / 'audio_files'}/<file_name>")


# ----------------------------------------------------------------------------- MMAU
def load_mmau(data_dir: str | Path, split: str | None = None, missing: str = "skip") -> Benchmark:
    """MMAU. Layout: ``mmau-test-mini.json`` (1,000 items, with answers) or ``mmau-test.json``
    (answers withheld), a JSON list of ``{id, audio_id, question, choices, answer, dataset, task,
    split, category, sub-category, difficulty}``; ``audio_id`` is a path relative to the json's
    folder (``./test-mini-audios/<id>.wav``). ``split``: test-mini (default) or test."""
    root = Path(data_dir)
    sp = split or "test-mini"
    js = _need(root / f"mmau-{sp}.json", f"MMAU {sp} questions")
    data = json.loads(js.read_text(encoding="utf-8"))
    if not isinstance(data, list):
        raise BenchmarkLayoutError(f"{js}: expected a JSON list of questions")
    items, miss = [], []
    for d in data:
        rel = str(d.get("audio_id") or d.get("audio_path") or "")
        f = (root / rel).resolve() if rel else None
        if f is None or not f.is_file():
            alt = _find_audio([root / f"{sp}-audios", root / "audios", root], [Path(rel).name, str(d.get("id", ""))])
            if alt is None:
                miss.append(rel or str(d.get("id")))
                continue
            f = alt
        meta = {k: v for k, v in d.items() if k not in ("id", "audio_id", "question", "choices", "answer")}
        items.append(EvalItem(file=Path(f), question=d.get("question"), answer=d.get("answer"),
                              choices=list(d.get("choices") or []), id=str(d.get("id", "")), meta=meta))
    return _finish("mmau", root, sp, ("qa",), items, miss, missing, f"audio files named by audio_id under {root}",
                   paper_tasks={"qa": "open"})


# ----------------------------------------------------------------------------- generic folder
def _synonyms(value, labels: list[str], each_label: bool = False) -> dict[str, list[str]]:
    """``{label: [...]}`` as given, or a plain list attached to the first label (``each_label``: to
    every label of the row)."""
    if not value:
        return {}
    if isinstance(value, dict):
        return {k: list(v) for k, v in value.items()}
    if isinstance(value, list) and (labels or each_label):
        return {lab: [str(v) for v in value] for lab in (labels if each_label else labels[:1])}
    raise BenchmarkLayoutError(f"'synonyms' must be an object {{label: [...]}} or a list, got {value!r}")


def _present(f: Path) -> bool:
    """Whether a listed file is there in some form. Only a path with nothing behind it is missing;
    anything else that is there (a folder, a link loop, a file that cannot be read, a name too long
    to open) becomes an item, so the loader names what is wrong with it under ``failed``."""
    try:
        os.lstat(f)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return True


def load_folder(data_dir: str | Path, split: str | None = None, missing: str = "skip", *,
                synonyms_for_each_label: bool = False) -> Benchmark:
    """Generic folder: audio files and ``metadata.jsonl`` (or ``metadata_{split}.jsonl``), one JSON
    object a line: ``{"file": "x.wav", "captions": [...]}`` and/or ``"labels": [...]`` (optionally
    ``"synonyms": {label: [...]}``, or a plain list: the first label's, or with
    ``synonyms_for_each_label`` every label's) and/or ``"question": ..., "answer": ..., "choices": [...]``;
    ``"id"`` optional, other keys go to ``meta``. ``file`` is relative to the folder. Tasks supported
    are those every row has data for (caption, classify/tag, qa)."""
    root = Path(data_dir)
    jl = root / (f"metadata_{split}.jsonl" if split else "metadata.jsonl")
    _need(jl, "generic benchmark metadata (one JSON object per line)")
    items, miss = [], []
    n_single = n_multi = n_cap = n_qa = 0
    for where, d in iter_jsonl(jl, BenchmarkLayoutError):
        if not isinstance(d, dict) or "file" not in d:
            raise BenchmarkLayoutError(f"{where}: row has no 'file' key")
        f = root / d["file"]
        if not _present(f):
            miss.append(str(d["file"]))
            continue
        caps = d.get("captions") or ([d["caption"]] if d.get("caption") else [])
        labels = d.get("labels") or ([d["label"]] if d.get("label") else [])
        if isinstance(caps, str):
            caps = [caps]
        if isinstance(labels, str):
            labels = [labels]
        n_cap += bool(caps)
        n_qa += d.get("question") is not None and d.get("answer") is not None
        n_single += len(labels) == 1
        n_multi += len(labels) >= 1
        known = {"file", "captions", "caption", "labels", "label", "synonyms", "question", "answer", "choices", "id"}
        items.append(EvalItem(file=f, captions=list(caps), labels=list(labels),
                              synonyms=_synonyms(d.get("synonyms"), labels, synonyms_for_each_label),
                              question=d.get("question"), answer=d.get("answer"),
                              choices=list(d.get("choices") or []), id=str(d.get("id") or d["file"]),
                              meta={k: v for k, v in d.items() if k not in known}))
    n = len(items)
    tasks: list[str] = []
    if n and n_cap == n:
        tasks.append("caption")
    if n and n_multi == n:
        tasks.extend(["classify", "tag"] if n_single == n else ["tag"])
    if n and n_qa == n:
        tasks.append("qa")
    return _finish("folder", root, split, tuple(tasks), items, miss, missing, f"files listed in {jl}",
                   labels=[lab for it in items for lab in it.labels])


# ----------------------------------------------------------------------------- registry
def _has_audiocaps(root: Path) -> bool:
    for base in (root, root / "dataset"):
        for s in ("test", "val", "train"):
            p = base / f"{s}.csv"
            if p.is_file():
                with open(p, encoding="utf-8-sig") as f:
                    head = f.readline()
                if "audiocap_id" in head:
                    return True
    return False


ADAPTERS: dict[str, tuple[Callable[..., Benchmark], Callable[[Path], bool]]] = {
    "mmau": (load_mmau, lambda r: (r / "mmau-test-mini.json").is_file() or (r / "mmau-test.json").is_file()),
    "clothoaqa": (load_clothoaqa, lambda r: any(r.glob("clotho_aqa_*.csv"))),
    "clotho": (load_clotho, lambda r: any(r.glob("clotho_captions_*.csv"))),
    "esc50": (load_esc50, lambda r: (r / "meta" / "esc50.csv").is_file()),
    "urbansound8k": (load_urbansound8k, lambda r: (r / "metadata" / "UrbanSound8K.csv").is_file()),
    "fsd50k": (load_fsd50k, lambda r: (r / "FSD50K.ground_truth").is_dir()),
    "vggsound": (load_vggsound, lambda r: (r / "vggsound.csv").is_file()),
    "musiccaps": (load_musiccaps, lambda r: (r / "musiccaps-public.csv").is_file()),
    "audiocaps": (load_audiocaps, _has_audiocaps),
    "folder": (load_folder, lambda r: (r / "metadata.jsonl").is_file() or any(r.glob("metadata_*.jsonl"))),
}
NAME_ALIASES = {"esc-50": "esc50", "esc_50": "esc50", "us8k": "urbansound8k", "urbansound": "urbansound8k",
                "clotho_v2": "clotho", "clothov2": "clotho", "clotho-aqa": "clothoaqa", "clotho_aqa": "clothoaqa",
                "fsd-50k": "fsd50k", "generic": "folder", "jsonl": "folder", "vgg-sound": "vggsound",
                "music_caps": "musiccaps", "audio_caps": "audiocaps"}


def detect_benchmark(data_dir: str | Path) -> str:
    """Name of the layout found in ``data_dir`` (first match in :data:`ADAPTERS` order)."""
    root = Path(data_dir)
    if not root.is_dir():
        raise BenchmarkLayoutError(f"benchmark folder not found: {root}")
    for name, (_, probe) in ADAPTERS.items():
        if probe(root):
            return name
    raise BenchmarkLayoutError(
        f"no known benchmark layout in {root}: expected one of mmau-test-mini.json, clotho_aqa_<split>.csv, "
        "clotho_captions_<split>.csv, meta/esc50.csv, metadata/UrbanSound8K.csv, FSD50K.ground_truth/, "
        "vggsound.csv, musiccaps-public.csv, AudioCaps <split>.csv (audiocap_id,...), or metadata.jsonl")


def load_benchmark(data_dir: str | Path, name: str | None = None, split: str | None = None,
                   missing: str = "skip") -> Benchmark:
    """Load a local benchmark copy. ``name``: one of :data:`ADAPTERS` (aliases accepted) or None to
    detect from the files. ``missing``: "skip" rows whose audio is absent (listed in
    ``Benchmark.missing``) or "error"."""
    root = Path(data_dir)
    if name is None:
        name = detect_benchmark(root)
    key = NAME_ALIASES.get(name.lower(), name.lower())
    if key not in ADAPTERS:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(ADAPTERS)}")
    if not root.is_dir():
        raise BenchmarkLayoutError(f"benchmark folder not found: {root}")
    return ADAPTERS[key][0](root, split=split, missing=missing)


def load_eval_benchmark(data_dir: str | Path, name: str | None = None, split: str | None = None) -> Benchmark:
    """:func:`load_benchmark` as the evaluation runner reads it: in a generic folder a plain list of
    ``synonyms`` belongs to every label of its row (the format :func:`mats.data.sounds.fetch_real_sounds`
    writes), not to the first one only."""
    root = Path(data_dir)
    key = name.lower() if name else (detect_benchmark(root) if root.is_dir() else "")
    if root.is_dir() and NAME_ALIASES.get(key, key) == "folder":
        return load_folder(root, split, synonyms_for_each_label=True)
    return load_benchmark(root, name, split)


__all__ = ["EvalItem", "Benchmark", "BenchmarkLayoutError", "load_benchmark", "load_eval_benchmark",
           "detect_benchmark", "ADAPTERS",
           "load_audiocaps", "load_clotho", "load_esc50", "load_urbansound8k", "load_vggsound", "load_fsd50k",
           "load_musiccaps", "load_clothoaqa", "load_mmau", "load_folder"]
