"""Scoring free-text answers: labels (single / multi), question answering, captions.

One entry point per task for a runner: :func:`score_task` ``(task, items, predictions) -> dict``
with ``"metrics"`` (corpus numbers), ``"per_item"`` (one dict per item) and ``"unavailable"``.

Label matching
  * by string: a label (or one of its synonyms) is "mentioned" when all its words occur as a
    contiguous phrase, on word boundaries, case-insensitive, each word allowed in singular or
    simple plural form ("dog" ~ "dogs", "siren" ~ "sirens", "footsteps" ~ "footstep",
    "baby cry" ~ "babies cry"). Underscores in dataset labels ("crackling_fire") count as spaces.
  * by embedding: cosine between the answer (and its comma/semicolon-separated parts) and each
    label text (and synonyms), with the offline all-MiniLM-L6-v2 encoder (any object with
    ``encode(list[str]) -> (n, d)`` can be passed as ``encoder``).

Single-label accuracy is reported three ways: ``accuracy_string`` (exactly one label -- or the
first-mentioned one -- found in the text, else wrong), ``accuracy_embedding`` (nearest label),
and ``accuracy`` (string match when there is one, else nearest label). Multi-label: ``map``
(mean over classes of average precision, classes with >= 1 positive; item-by-class scores =
cosine similarity + 1 if the label is mentioned), ``map_embedding`` (cosine only), and
``f1_string`` / ``precision_string`` / ``recall_string`` (micro, mentioned labels as predictions).

QA: ``exact_match`` after SQuAD-style normalisation (lower case, punctuation and articles
removed, whitespace collapsed); ``accuracy`` (multiple choice: the chosen option -- by letter
"(B)", by the option's text in the answer, else nearest option by embedding -- equals the answer;
yes/no questions: the first yes/no word of the prediction; otherwise exact match or the gold
answer appearing as whole words in the prediction); ``embedding_match`` (open: cosine >=
``threshold``, default 0.8; multiple choice: nearest option by embedding equals the answer).
"""

from __future__ import annotations

import re
import string
from functools import lru_cache
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..clap.base import l2_normalize
from ..tasks import EVAL_TASKS, get_eval_task
from .metrics import caption_metrics, check_caption_inputs, default_text_encoder

TASKS = tuple(EVAL_TASKS)


def canonical_task(task: str) -> str:
    """The scorer for an evaluation task name or alias (``"single_event"`` -> ``"classify"``)."""
    return get_eval_task(task).scoring


# ----------------------------------------------------------------------------- text normalisation
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT_TABLE = str.maketrans({c: " " for c in string.punctuation})


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, punctuation -> space, articles removed, spaces collapsed."""
    s = str(text).lower().translate(_PUNCT_TABLE)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def label_text(label: str) -> str:
    """Human text of a dataset label: ``"crackling_fire"`` -> ``"crackling fire"``."""
    return " ".join(str(label).replace("_", " ").split())


def _singular(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and re.search(r"(ss|x|z|ch|sh)es$", word):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _word_pattern(word: str) -> str:
    w = _singular(word)
    if w.endswith("y") and len(w) > 2 and w[-2] not in "aeiou":
        return re.escape(w[:-1]) + r"(?:y|ies)"
    if re.search(r"(s|x|z|ch|sh)$", w):
        return re.escape(w) + r"(?:es)?"
    return re.escape(w) + r"(?:s|es)?"


@lru_cache(maxsize=4096)
def _phrase_regex(phrase: str) -> re.Pattern[str] | None:
    words = re.findall(r"[a-z0-9]+(?:'[a-z]+)?", label_text(phrase).lower())
    if not words:
        return None
    body = r"[\s\-_/]+".join(_word_pattern(w) for w in words)
    return re.compile(r"(?<![a-z0-9])" + body + r"(?![a-z0-9])")


def mention_position(text: str, phrase: str) -> int | None:
    """Character offset of the first mention of ``phrase`` in ``text`` (plural-tolerant), or None."""
    rx = _phrase_regex(phrase)
    if rx is None:
        return None
    m = rx.search(str(text).lower())
    return m.start() if m else None


def mentioned_labels(text: str, labels: Sequence[str],
                     synonyms: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """Labels mentioned in ``text`` (by the label or a synonym), ordered by first mention.

    A mention that is part of a longer mentioned label is not counted ("car" is not mentioned in
    "car horn" when "car horn" is a label too)."""
    synonyms = synonyms or {}
    spans: list[tuple[int, int, str]] = []
    low = str(text).lower()
    for lab in labels:
        best = None
        for phrase in [lab, *synonyms.get(lab, ())]:
            rx = _phrase_regex(phrase)
            if rx is None:
                continue
            for m in rx.finditer(low):
                cand = (m.start(), m.end())
                if best is None or cand[0] < best[0] or (cand[0] == best[0] and cand[1] > best[1]):
                    best = cand
                break
        if best is not None:
            spans.append((best[0], best[1], lab))
    kept = [s for s in spans
            if not any(o is not s and o[0] <= s[0] and s[1] <= o[1] and (o[1] - o[0]) > (s[1] - s[0])
                       for o in spans)]
    kept.sort(key=lambda s: (s[0], -(s[1] - s[0])))
    return [s[2] for s in kept]


# ----------------------------------------------------------------------------- embeddings
def _encode(encoder, texts: Sequence[str]) -> np.ndarray:
    texts = [t if str(t).strip() else "nothing" for t in texts]
    emb = np.asarray(encoder.encode(list(texts)), dtype=np.float64)
    return l2_normalize(emb)


def _answer_parts(text: str) -> list[str]:
    parts = [p.strip() for p in re.split(r"[,;\n]|\band\b", str(text)) if p.strip()]
    return [str(text).strip() or "nothing"] + [p for p in parts if p != str(text).strip()]


def label_similarity(predictions: Sequence[str], labels: Sequence[str],
                     synonyms: Mapping[str, Sequence[str]] | None = None, encoder=None,
                     split_parts: bool = True) -> np.ndarray:
    """(n_predictions, n_labels) cosine similarities; a label's score is the max over its texts
    (label + synonyms) and over the answer's parts (whole answer and its comma-separated pieces)."""
    enc = encoder if encoder is not None else default_text_encoder()
    synonyms = synonyms or {}
    lab_texts, lab_owner = [], []
    for j, lab in enumerate(labels):
        for t in [lab, *synonyms.get(lab, ())]:
            lab_texts.append(label_text(t))
            lab_owner.append(j)
    pred_texts, pred_owner = [], []
    for i, p in enumerate(predictions):
        for t in (_answer_parts(p) if split_parts else [str(p)]):
            pred_texts.append(t)
            pred_owner.append(i)
    L = _encode(enc, lab_texts)
    P = _encode(enc, pred_texts)
    sims = P @ L.T
    out = np.full((len(predictions), len(labels)), -np.inf)
    np.maximum.at(out, (np.asarray(pred_owner)[:, None], np.asarray(lab_owner)[None, :]), sims)
    return out


def nearest_label(predictions: Sequence[str], labels: Sequence[str],
                  synonyms: Mapping[str, Sequence[str]] | None = None, encoder=None) -> list[str]:
    sims = label_similarity(predictions, labels, synonyms, encoder)
    return [labels[int(np.argmax(r))] for r in sims]


# ----------------------------------------------------------------------------- ranking metrics
def average_precision(y_true: np.ndarray, scores: np.ndarray) -> float:
    """AP of one class, ties treated as one threshold (as scikit-learn's average_precision_score)."""
    y_true = np.asarray(y_true, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos = int(y_true.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], y_true[order]
    tp = np.cumsum(y)
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # last index of each distinct score
    tp_t, n_t = tp[last], last + 1
    precision, recall = tp_t / n_t, tp_t / n_pos
    prev_recall = np.r_[0.0, recall[:-1]]
    return float(np.sum((recall - prev_recall) * precision))


def mean_average_precision(y_true: np.ndarray, scores: np.ndarray) -> tuple[float, list[float]]:
    """Mean over classes (columns) with at least one positive; also the per-class APs (nan = none)."""
    y_true, scores = np.asarray(y_true), np.asarray(scores)
    aps = [average_precision(y_true[:, j], scores[:, j]) for j in range(y_true.shape[1])]
    valid = [a for a in aps if not np.isnan(a)]
    return (float(np.mean(valid)) if valid else float("nan")), aps


# ----------------------------------------------------------------------------- helpers on items
def _get(item: Any, name: str, default: Any = None) -> Any:
    if isinstance(item, Mapping):
        return item.get(name, default)
    return getattr(item, name, default)


def _item_id(item: Any, i: int) -> str:
    v = _get(item, "id")
    if v:
        return str(v)
    f = _get(item, "file")
    return str(f) if f else str(i)


def _synonyms_of(items: Sequence[Any], vocabulary: Sequence[str]) -> dict[str, list[str]]:
    syn: dict[str, list[str]] = {}
    for it in items:
        for lab, alts in (_get(it, "synonyms") or {}).items():
            cur = syn.setdefault(lab, [])
            for a in alts:
                if a not in cur:
                    cur.append(a)
    return {k: v for k, v in syn.items() if k in set(vocabulary)}


def label_vocabulary(items: Sequence[Any]) -> list[str]:
    """Sorted union of the items' labels."""
    return sorted({lab for it in items for lab in (_get(it, "labels") or [])})


def _vocabulary_and_synonyms(what: str, items: Sequence[Any], predictions: Sequence[str],
                             labels: Sequence[str] | None, synonyms: Mapping[str, Sequence[str]] | None
                             ) -> tuple[list[str], dict[str, list[str]]]:
    """The label list (``labels``, or the union of the items') and every label's synonyms (the items',
    overridden by ``synonyms``), for a label-scored task."""
    _check_len(items, predictions)
    vocab = list(labels) if labels is not None else label_vocabulary(items)
    if not vocab:
        raise ValueError(f"{what} needs labels: items have none and no labels= given")
    syn = dict(_synonyms_of(items, vocab))
    syn.update(synonyms or {})
    return vocab, syn


# ----------------------------------------------------------------------------- tasks
def score_classification(items: Sequence[Any], predictions: Sequence[str], labels: Sequence[str] | None = None,
                         synonyms: Mapping[str, Sequence[str]] | None = None, encoder=None) -> dict:
    """Single-label accuracy from free text. ``labels``: the class list (default: union of items')."""
    vocab, syn = _vocabulary_and_synonyms("classification", items, predictions, labels, synonyms)
    sims = label_similarity(predictions, vocab, syn, encoder)
    per, hits = [], {"accuracy": 0, "accuracy_string": 0, "accuracy_embedding": 0}
    for i, (it, pred) in enumerate(zip(items, predictions, strict=True)):
        gold = set(_get(it, "labels") or [])
        mentioned = mentioned_labels(pred, vocab, syn)
        by_string = mentioned[0] if mentioned else None
        by_emb = vocab[int(np.argmax(sims[i]))]
        chosen = by_string or by_emb
        row = {"id": _item_id(it, i), "prediction": pred, "gold": sorted(gold),
               "label_string": by_string, "label_embedding": by_emb, "label": chosen,
               "correct": chosen in gold, "correct_string": by_string in gold,
               "correct_embedding": by_emb in gold}
        hits["accuracy"] += row["correct"]
        hits["accuracy_string"] += row["correct_string"]
        hits["accuracy_embedding"] += row["correct_embedding"]
        per.append(row)
    n = max(len(per), 1)
    return {"metrics": {k: v / n for k, v in hits.items()}, "per_item": per,
            "labels": vocab, "unavailable": {}}


def score_tagging(items: Sequence[Any], predictions: Sequence[str], labels: Sequence[str] | None = None,
                  synonyms: Mapping[str, Sequence[str]] | None = None, encoder=None) -> dict:
    """Multi-label mAP (ranking labels per item by embedding similarity + mention) and string F1."""
    vocab, syn = _vocabulary_and_synonyms("tagging", items, predictions, labels, synonyms)
    index = {lab: j for j, lab in enumerate(vocab)}
    sims = label_similarity(predictions, vocab, syn, encoder)
    y = np.zeros((len(items), len(vocab)), dtype=bool)
    mention = np.zeros_like(y)
    per = []
    tp = fp = fn = 0
    for i, (it, pred) in enumerate(zip(items, predictions, strict=True)):
        gold = [g for g in (_get(it, "labels") or []) if g in index]
        y[i, [index[g] for g in gold]] = True
        ment = mentioned_labels(pred, vocab, syn)
        mention[i, [index[m] for m in ment]] = True
        g, m = set(gold), set(ment)
        tp += len(g & m)
        fp += len(m - g)
        fn += len(g - m)
        top = [vocab[j] for j in np.argsort(-sims[i], kind="mergesort")[:max(len(gold), 1)]]
        per.append({"id": _item_id(it, i), "prediction": pred, "gold": sorted(g), "mentioned": ment,
                    "top_embedding": top,
                    "precision_string": len(g & m) / len(m) if m else 0.0,
                    "recall_string": len(g & m) / len(g) if g else 0.0})
    combined = sims + mention.astype(np.float64)
    map_all, aps = mean_average_precision(y, combined)
    map_emb, _ = mean_average_precision(y, sims)
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return {"metrics": {"map": map_all, "map_embedding": map_emb, "f1_string": f1,
                        "precision_string": prec, "recall_string": rec},
            "per_item": per, "labels": vocab,
            "per_class_ap": {lab: ap for lab, ap in zip(vocab, aps, strict=True) if not np.isnan(ap)},
            "unavailable": {}}


_LETTER = re.compile(r"^\s*(?:answer\s*(?:is)?\s*:?\s*)?[\(\[]?([A-Ha-h])[\)\]\.:](?:\s|$)")
_YESNO = re.compile(r"\b(yes|no)\b")


def choose_option(prediction: str, choices: Sequence[str]) -> str | None:
    """The option a free-text answer picks, by letter ("(B)", "B.") or by the option's text; None
    when the text names no option or several equally."""
    m = _LETTER.match(prediction)
    if m:
        k = ord(m.group(1).upper()) - ord("A")
        if k < len(choices):
            return choices[k]
    norm_pred = normalize_answer(prediction)
    for c in choices:
        if normalize_answer(c) == norm_pred:
            return c
    found = []
    for c in choices:
        nc = normalize_answer(c)
        if nc and re.search(r"(?<![a-z0-9])" + re.escape(nc) + r"(?![a-z0-9])", norm_pred):
            found.append(c)
    # prefer the longest option among those mentioned, when one contains the others
    if found:
        found.sort(key=lambda c: -len(normalize_answer(c)))
        if all(normalize_answer(f) in normalize_answer(found[0]) for f in found[1:]):
            return found[0]
    return None


def score_qa(items: Sequence[Any], predictions: Sequence[str], encoder=None, threshold: float = 0.8) -> dict:
    """Exact match, lenient accuracy and embedding match for open and multiple-choice QA."""
    _check_len(items, predictions)
    enc = encoder
    per = []
    need_emb: list[tuple[int, list[str]]] = []
    for i, (it, pred) in enumerate(zip(items, predictions, strict=True)):
        ans = _get(it, "answer")
        if ans is None:
            raise ValueError(f"item {_item_id(it, i)} has no answer: cannot score QA")
        choices = list(_get(it, "choices") or [])
        np_, na = normalize_answer(pred), normalize_answer(ans)
        row: dict[str, Any] = {"id": _item_id(it, i), "question": _get(it, "question"), "prediction": pred,
                               "answer": ans, "exact_match": np_ == na}
        if choices:
            chosen = choose_option(pred, choices)
            row["choice_string"] = chosen
            need_emb.append((i, choices))
        elif na in ("yes", "no"):
            m = _YESNO.search(np_)
            row["correct"] = bool(m and m.group(1) == na)
            need_emb.append((i, [str(ans)]))
        else:
            row["correct"] = np_ == na or bool(na and re.search(
                r"(?<![a-z0-9])" + re.escape(na) + r"(?![a-z0-9])", np_))
            need_emb.append((i, [str(ans)]))
        per.append(row)
    # embeddings, one batch
    if need_emb:
        enc = enc if enc is not None else default_text_encoder()
        texts = [str(predictions[i]) for i, _ in need_emb] + [c for _, cs in need_emb for c in cs]
        E = _encode(enc, texts)
        P, C = E[:len(need_emb)], E[len(need_emb):]
        k = 0
        for r, (i, cs) in enumerate(need_emb):
            sims = C[k:k + len(cs)] @ P[r]
            k += len(cs)
            row = per[i]
            choices = list(_get(items[i], "choices") or [])
            if choices:
                nearest = cs[int(np.argmax(sims))]
                row["choice_embedding"] = nearest
                chosen = row["choice_string"] or nearest
                row["choice"] = chosen
                gold = normalize_answer(row["answer"])
                row["correct"] = normalize_answer(chosen) == gold
                row["embedding_match"] = normalize_answer(nearest) == gold
            else:
                row["similarity"] = float(sims[0])
                row["embedding_match"] = bool(sims[0] >= threshold)
    n = max(len(per), 1)
    metrics = {"exact_match": sum(r["exact_match"] for r in per) / n,
               "accuracy": sum(r["correct"] for r in per) / n,
               "embedding_match": sum(r["embedding_match"] for r in per) / n}
    return {"metrics": metrics, "per_item": per, "unavailable": {}, "threshold": threshold}


def score_captions(items: Sequence[Any], predictions: Sequence[str], metrics: Iterable[str] | None = None,
                   encoder=None, **kwargs: Any) -> dict:
    _check_len(items, predictions)
    refs = [list(_get(it, "captions") or []) for it in items]
    check_caption_inputs(predictions, refs)
    sc = caption_metrics(predictions, refs, metrics, encoder=encoder, **kwargs)
    per = []
    for i, (it, pred) in enumerate(zip(items, predictions, strict=True)):
        row = {"id": _item_id(it, i), "prediction": pred, "references": refs[i]}
        row.update({m: v[i] for m, v in sc.per_item.items()})
        per.append(row)
    return {"metrics": dict(sc), "per_item": per, "unavailable": dict(sc.unavailable),
            "implementations": dict(sc.implementations), "tokenizer": sc.tokenizer}


def _check_len(items: Sequence[Any], predictions: Sequence[str]) -> None:
    if isinstance(predictions, str):
        raise TypeError("predictions must be a list of strings")
    if len(items) != len(predictions):
        raise ValueError(f"{len(items)} items but {len(predictions)} predictions")


def score_task(task: str, items: Sequence[Any], predictions: Sequence[str], **kwargs: Any) -> dict:
    """Score one task's predictions. ``task``: caption | classify | tag | qa (aliases accepted).

    ``items``: :class:`~mats.evaluation.adapters.EvalItem` (or dicts with the same keys).
    Returns ``{"task", "n", "metrics": {name: value | None}, "per_item": [...], "unavailable": {...}}``
    plus task-specific extras (labels, per-class AP, implementations). Keyword arguments go to the
    task's scorer (``encoder=``, ``labels=``, ``synonyms=``, ``metrics=``, ``threshold=`` ...).
    """
    t = canonical_task(task)
    fn = {"caption": score_captions, "classify": score_classification, "tag": score_tagging,
          "qa": score_qa}[t]
    out = fn(items, predictions, **kwargs)
    return {"task": t, "n": len(items), **out}


__all__ = ["TASKS", "canonical_task", "normalize_answer", "label_text", "mention_position", "mentioned_labels",
           "label_similarity", "nearest_label", "average_precision", "mean_average_precision",
           "choose_option", "score_classification", "score_tagging", "score_qa", "score_captions",
           "score_task", "label_vocabulary"]


# ----------------------------------------------------------------------------- keyword accuracy
def keyword_hits(items: Sequence[Any], predictions: Sequence[str]) -> list[bool]:
    """Per item: does the prediction mention one of the item's labels, by the label itself or one
    of its synonyms (word-boundary, plural-tolerant match of :func:`mentioned_labels`)?"""
    _check_len(items, predictions)
    out = []
    for it, pred in zip(items, predictions, strict=True):
        labels = list(_get(it, "labels") or [])
        out.append(bool(labels) and bool(mentioned_labels(pred, labels, _get(it, "synonyms") or {})))
    return out


def keyword_accuracy(items: Sequence[Any], predictions: Sequence[str]) -> float:
    """Fraction of items whose prediction mentions (a synonym of) one of its labels."""
    hits = keyword_hits(items, predictions)
    return sum(hits) / len(hits) if hits else float("nan")


__all__ += ["keyword_hits", "keyword_accuracy"]
