"""Captioning metrics of the audio-captioning field, computed with the reference code where it runs.

Implementations (all offline):

* Tokenisation: the COCO-caption PTB tokenizer (Stanford CoreNLP 3.4.1 jar shipped inside
  ``pycocoevalcap``, needs ``java``), punctuation removed as coco-caption does. Without Java a
  Python approximation (:func:`simple_tokenize`) is used and the result says so in
  ``CaptionScores.tokenizer``.
* BLEU-1..4, ROUGE-L, CIDEr-D: ``pycocoevalcap``'s own Python scorers (``Bleu``, ``Rouge``,
  ``Cider`` -- coco-caption's ``Cider`` *is* CIDEr-D: Gaussian length penalty sigma 6, clipped
  counts, x10), on the tokens above. Nothing is re-implemented here.
* METEOR: ``pycocoevalcap``'s METEOR 1.5 jar (paraphrase table shipped), needs ``java``.
* SPICE: ``pycocoevalcap``'s SPICE 1.0 jar; it also needs Stanford CoreNLP 3.6.0
  (``stanford-corenlp-3.6.0.jar`` and ``stanford-corenlp-3.6.0-models.jar``), which pycocoevalcap
  downloads from the Stanford site on first use. No PyPI or Debian package ships those jars, so
  SPICE (and SPIDEr) are reported unavailable unless the two jars are put in a folder named by
  ``corenlp_dir=`` / ``$MATS_CORENLP_DIR`` or in pycocoevalcap's ``spice/lib``.
* SPIDEr = (CIDEr-D + SPICE) / 2.
* ``sbert_sim``: mean cosine between the prediction and each reference (the FENSE / aac-metrics
  definition) with the offline all-MiniLM-L6-v2 encoder. FENSE itself uses
  paraphrase-TinyBERT-L6-v2, so numbers are *not* comparable with published FENSE SBERT-sim.
* FENSE: unavailable -- its fluency-error detector (``echecker_clotho_audiocaps_*.ckpt``) and its
  SBERT model are downloads from GitHub releases / the model hub.

Corpus-level values are what the papers report: BLEU is corpus BLEU (coco-caption), CIDEr-D uses
document frequencies over the evaluated corpus (so it is 0 for a single clip), the others are
means over clips. Per-clip scores are kept in ``CaptionScores.per_item``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..clap.base import l2_normalize

ALL_METRICS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider_d",
               "spice", "spider", "sbert_sim", "fense")
DEFAULT_METRICS = ALL_METRICS
ALIASES = {
    "bleu": ("bleu_1", "bleu_2", "bleu_3", "bleu_4"),
    "cider": ("cider_d",), "ciderd": ("cider_d",), "cider-d": ("cider_d",),
    "rouge": ("rouge_l",), "rougel": ("rouge_l",), "rouge-l": ("rouge_l",),
    "sbert": ("sbert_sim",), "spider_d": ("spider",),
}
for _i in range(1, 5):
    ALIASES[f"bleu{_i}"] = (f"bleu_{_i}",)
    ALIASES[f"bleu-{_i}"] = (f"bleu_{_i}",)

CORENLP_SPICE_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")
FENSE_UNAVAILABLE = ("FENSE needs its fluency-error detector (echecker_clotho_audiocaps_base/tiny.ckpt, "
                     "a GitHub-release download) and the paraphrase-TinyBERT-L6-v2 SBERT from the model "
                     "hub; neither ships in a PyPI/Debian package, so it cannot run offline. "
                     "Use 'sbert_sim' (all-MiniLM-L6-v2) for the similarity half.")

# coco-caption removes these PTB tokens after tokenisation
PTB_PUNCTUATIONS = frozenset(["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-",
                              ".", "?", "!", ",", ":", "-", "--", "...", ";"])


class CaptionScores(dict):
    """``dict[str, float | None]`` of corpus scores, plus what produced them.

    Attributes: ``unavailable`` (metric -> reason, its value in the dict is None), ``per_item``
    (metric -> list of per-clip scores), ``implementations`` (metric -> which code computed it),
    ``tokenizer`` ("ptb" or "simple").
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.unavailable: dict[str, str] = {}
        self.per_item: dict[str, list[float]] = {}
        self.implementations: dict[str, str] = {}
        self.tokenizer: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"metrics": dict(self), "unavailable": dict(self.unavailable),
                "implementations": dict(self.implementations), "tokenizer": self.tokenizer}


# ----------------------------------------------------------------------------- helpers
def expand_metric_names(metrics: Iterable[str] | None) -> list[str]:
    if metrics is None:
        return list(DEFAULT_METRICS)
    if isinstance(metrics, str):
        metrics = [metrics]
    out: list[str] = []
    for m in metrics:
        key = m.strip().lower()
        names = ALIASES.get(key, (key,))
        for n in names:
            if n not in ALL_METRICS:
                raise ValueError(f"unknown caption metric {m!r}; known: {', '.join(ALL_METRICS)} "
                                 f"(aliases: {', '.join(sorted(ALIASES))})")
            if n not in out:
                out.append(n)
    return out


def java_executable(java: str | None = None) -> str | None:
    """The java binary to use: argument, ``$MATS_JAVA``, ``$JAVA_HOME/bin/java``, then PATH."""
    for cand in (java, os.environ.get("MATS_JAVA"),
                 os.path.join(os.environ["JAVA_HOME"], "bin", "java") if os.environ.get("JAVA_HOME") else None):
        if cand and (os.path.isfile(cand) or shutil.which(cand)):
            return shutil.which(cand) or cand
    return shutil.which("java")


def pycocoevalcap_dir() -> Path | None:
    try:
        import pycocoevalcap  # noqa: F401  (namespace package: no __file__)
    except ImportError:
        return None
    return Path(list(pycocoevalcap.__path__)[0])


_NO_COCO = "pycocoevalcap is not installed (pip install 'mats[eval]' or pip install 'pycocoevalcap>=1.2,<2')"


def _clean(text: str) -> str:
    # one caption per line for the PTB tokenizer; '|||' is METEOR's field separator
    return " ".join(str(text).replace("|||", " ").split())


# ----------------------------------------------------------------------------- tokenisation
_CONTRACTIONS = re.compile(r"(?i)(n't|'s|'re|'ve|'ll|'d|'m)\b")
_PUNCT_SPLIT = re.compile(r"""([,!?;:"()\[\]{}]|--)""")
# PTB escapes brackets; coco-caption lower-cases before its punctuation filter, so "-lrb-" etc. stay
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}


def simple_tokenize(text: str) -> str:
    """Python approximation of coco-caption's PTB tokenisation + punctuation removal.

    Lower-cases, splits English clitics ("n't", "'s", ...) and punctuation off words, drops the
    punctuation tokens coco-caption drops. Keeps hyphenated words and decimals whole, as PTB does.
    """
    s = _clean(text).lower()
    s = s.replace("“", '"').replace("”", '"').replace("’", "'").replace("‘", "'")
    s = _CONTRACTIONS.sub(r" \1", s)
    # periods: split off unless inside a number or an abbreviation-like token (e.g. "3.5")
    s = re.sub(r"(?<!\d)\.|\.(?!\d)", " . ", s)
    s = _PUNCT_SPLIT.sub(r" \1 ", s)
    s = re.sub(r"(^|\s)'(?!(s|re|ve|ll|d|m)\b)", r"\1' ", s)   # opening quote
    s = re.sub(r"(?<=\w)'(\s|$)", r" '\1", s)                   # closing quote
    toks = [_BRACKETS.get(t, t) for t in s.split() if t not in PTB_PUNCTUATIONS and t != '"']
    return " ".join(toks)


def ptb_tokenize(texts: Sequence[str], java: str | None = None) -> list[str]:
    """coco-caption's tokenisation: Stanford PTBTokenizer (CoreNLP 3.4.1 jar from pycocoevalcap),
    ``-preserveLines -lowerCase``, then the coco-caption punctuation tokens removed.

    Same command as ``pycocoevalcap.tokenizer.PTBTokenizer`` but the temporary file goes to the
    system temp dir (site-packages may be read-only) and empty lines are kept aligned.
    """
    texts = [_clean(t) for t in texts]
    if not texts:
        return []
    java = java_executable(java)
    root = pycocoevalcap_dir()
    if java is None or root is None:
        raise RuntimeError("PTB tokenizer needs java and pycocoevalcap")
    jar = root / "tokenizer" / "stanford-corenlp-3.4.1.jar"
    # empty captions would disappear from the tokenizer's output: keep a placeholder line
    placeholder = "xxemptyxx"
    lines = [t if t else placeholder for t in texts]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        f.write("\n".join(lines))
        tmp = f.name
    try:
        proc = subprocess.run([java, "-Dfile.encoding=UTF-8", "-cp", str(jar),
                               "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines",
                               "-lowerCase", "-encoding", "utf-8", tmp],
                              capture_output=True, check=False)
    finally:
        os.unlink(tmp)
    if proc.returncode != 0:
        raise RuntimeError(f"PTBTokenizer failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-500:]}")
    out_lines = proc.stdout.decode("utf-8", errors="replace").split("\n")
    if len(out_lines) < len(lines):
        raise RuntimeError(f"PTBTokenizer returned {len(out_lines)} lines for {len(lines)} captions")
    result = []
    for src, line in zip(texts, out_lines, strict=True):
        if not src:
            result.append("")
            continue
        result.append(" ".join(w for w in line.rstrip().split(" ") if w and w not in PTB_PUNCTUATIONS))
    return result


def tokenize(texts: Sequence[str], tokenizer: str = "auto", java: str | None = None) -> tuple[list[str], str]:
    """Tokenise with ``"ptb"`` (Java), ``"simple"`` (Python) or ``"auto"`` (PTB when Java and
    pycocoevalcap are there). Returns the tokenised captions and the tokenizer used."""
    if tokenizer not in ("auto", "ptb", "simple"):
        raise ValueError(f"tokenizer must be auto, ptb or simple, not {tokenizer!r}")
    if tokenizer == "auto":
        tokenizer = "ptb" if (java_executable(java) and pycocoevalcap_dir()) else "simple"
    if tokenizer == "ptb":
        return ptb_tokenize(texts, java), "ptb"
    return [simple_tokenize(t) for t in texts], "simple"


# ----------------------------------------------------------------------------- METEOR
_METEOR_LOCK = threading.Lock()
_METEOR: dict[str, Any] = {}


def meteor_scorer(java: str | None = None):
    """A kept ``pycocoevalcap.meteor.Meteor`` (its JVM start-up loads the paraphrase table, 5-10 s).

    pycocoevalcap runs plain ``java`` from PATH; another java is honoured by putting its folder
    first on PATH for the start of the process."""
    java_bin = java_executable(java)
    if java_bin is None:
        raise RuntimeError("METEOR needs java")
    with _METEOR_LOCK:
        inst = _METEOR.get(java_bin)
        if inst is None or inst.meteor_p.poll() is not None:
            from pycocoevalcap.meteor.meteor import Meteor
            old = os.environ.get("PATH", "")
            os.environ["PATH"] = os.path.dirname(java_bin) + os.pathsep + old
            try:
                inst = Meteor()
            finally:
                os.environ["PATH"] = old
            _METEOR[java_bin] = inst
        return inst


def close_java_processes() -> None:
    """Stop the kept METEOR process(es)."""
    with _METEOR_LOCK:
        for inst in _METEOR.values():
            with inst.lock:
                if inst.meteor_p.poll() is None:
                    inst.meteor_p.stdin.close()
                    inst.meteor_p.kill()
                    inst.meteor_p.wait()
        _METEOR.clear()


# ----------------------------------------------------------------------------- SPICE
def corenlp_jar_dir(corenlp_dir: str | Path | None = None) -> Path | None:
    """Folder holding the two CoreNLP 3.6.0 jars SPICE needs, if any."""
    cands = [corenlp_dir, os.environ.get("MATS_CORENLP_DIR")]
    root = pycocoevalcap_dir()
    if root is not None:
        cands.append(root / "spice" / "lib")
    for c in cands:
        if c and all((Path(c) / j).is_file() for j in CORENLP_SPICE_JARS):
            return Path(c)
    return None


def spice_status(java: str | None = None, corenlp_dir: str | Path | None = None) -> tuple[bool, str]:
    """(available, reason-if-not) for SPICE."""
    if pycocoevalcap_dir() is None:
        return False, _NO_COCO
    if java_executable(java) is None:
        return False, "SPICE needs java (not found on PATH / $JAVA_HOME / $MATS_JAVA)"
    if corenlp_jar_dir(corenlp_dir) is None:
        return False, ("SPICE needs Stanford CoreNLP 3.6.0 (" + " + ".join(CORENLP_SPICE_JARS) +
                       "), which pycocoevalcap downloads from nlp.stanford.edu on first use; no PyPI or "
                       "Debian package ships them and this machine has no other network. Put the two "
                       "jars in a folder and pass corenlp_dir= or set $MATS_CORENLP_DIR")
    return True, ""


def spice_scores(predictions: Sequence[str], references: Sequence[Sequence[str]], java: str | None = None,
                 corenlp_dir: str | Path | None = None) -> tuple[float, list[float]]:
    """SPICE 1.0 (pycocoevalcap's jar) on raw captions (SPICE tokenises itself)."""
    ok, why = spice_status(java, corenlp_dir)
    if not ok:
        raise RuntimeError(why)
    root = pycocoevalcap_dir()
    assert root is not None
    java_bin = java_executable(java)
    jars = root / "spice" / "lib"
    cp = os.pathsep.join([str(root / "spice" / "spice-1.0.jar"), str(jars / "*"),
                          str(corenlp_jar_dir(corenlp_dir) / "*")])
    data = [{"image_id": i, "test": _clean(p), "refs": [_clean(r) for r in rs]}
            for i, (p, rs) in enumerate(zip(predictions, references, strict=True))]
    with tempfile.TemporaryDirectory() as td:
        inp, out = Path(td) / "in.json", Path(td) / "out.json"
        inp.write_text(json.dumps(data))
        proc = subprocess.run([java_bin, "-Xmx8G", "-cp", cp, "edu.anu.spice.SpiceScorer", str(inp),
                               "-out", str(out), "-subset", "-silent"], capture_output=True)
        if proc.returncode != 0:
            raise RuntimeError(f"SPICE failed: {proc.stderr.decode(errors='replace')[-800:]}")
        results = json.loads(out.read_text())
    by_id = {r["image_id"]: r["scores"]["All"]["f"] for r in results}
    per = [float(by_id[i]) if by_id.get(i) is not None else float("nan") for i in range(len(data))]
    return float(np.nanmean(per)) if per else float("nan"), per


# ----------------------------------------------------------------------------- SBERT similarity
_ENCODER = None


def default_text_encoder():
    """The offline all-MiniLM-L6-v2 encoder (loaded once, kept)."""
    global _ENCODER
    if _ENCODER is None:
        from ..clap.minilm import MiniLMTextEncoder
        _ENCODER = MiniLMTextEncoder()
    return _ENCODER


def sbert_similarity(predictions: Sequence[str], references: Sequence[Sequence[str]],
                     encoder=None) -> tuple[float, list[float]]:
    """Mean over references of cos(pred, ref) per clip (FENSE's SBERT-sim definition)."""
    enc = encoder if encoder is not None else default_text_encoder()
    preds = [str(p).strip() for p in predictions]
    keep = [i for i, p in enumerate(preds) if p]          # an empty prediction scores 0
    flat = [str(r) for rs in references for r in rs]
    emb = np.asarray(enc.encode([preds[i] for i in keep] + flat), dtype=np.float64)
    emb = l2_normalize(emb)
    pe = dict(zip(keep, emb[:len(keep)], strict=True))
    re_ = emb[len(keep):]
    per, k = [], 0
    for i, rs in enumerate(references):
        per.append(float((re_[k:k + len(rs)] @ pe[i]).mean()) if i in pe else 0.0)
        k += len(rs)
    return float(np.mean(per)) if per else float("nan"), per


# ----------------------------------------------------------------------------- main entry
def check_caption_inputs(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    if isinstance(predictions, str):
        raise TypeError("predictions must be a list of strings, not a string")
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference lists")
    for i, rs in enumerate(references):
        if isinstance(rs, str):
            raise TypeError(f"references[{i}] must be a list of strings (one clip's captions), not a string")
        if len(rs) == 0:
            raise ValueError(f"references[{i}] is empty: every clip needs at least one reference caption")


def caption_metrics(predictions: Sequence[str], references: Sequence[Sequence[str]],
                    metrics: Iterable[str] | None = None, *, tokenizer: str = "auto",
                    java: str | None = None, corenlp_dir: str | Path | None = None,
                    encoder=None) -> CaptionScores:
    """Corpus caption metrics; a metric that cannot run is ``None`` with its reason in ``.unavailable``.

    ``metrics``: names from :data:`ALL_METRICS` or aliases ("bleu", "cider", "rouge"); default all.
    ``tokenizer``: "auto" | "ptb" | "simple" (see :func:`tokenize`).
    ``encoder``: object with ``encode(list[str]) -> (n, d) array`` for ``sbert_sim`` (default MiniLM).
    Deterministic: same inputs give the same numbers.
    """
    check_caption_inputs(predictions, references)
    names = expand_metric_names(metrics)
    res = CaptionScores()
    n = len(predictions)
    if n == 0:
        for m in names:
            res[m] = None
            res.unavailable[m] = "no predictions"
        return res

    coco = pycocoevalcap_dir()
    java_bin = java_executable(java)
    need_tokens = any(m in names for m in ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider_d",
                                           "spider", "meteor"))
    if need_tokens:
        flat_refs = [r for rs in references for r in rs]
        toks, res.tokenizer = tokenize(list(predictions) + flat_refs, tokenizer, java)
        tok_pred = toks[:n]
        tok_refs, k = [], n
        for rs in references:
            tok_refs.append(toks[k:k + len(rs)])
            k += len(rs)
        gts = {i: tok_refs[i] for i in range(n)}
        hyp = {i: [tok_pred[i]] for i in range(n)}

    def unavailable(m: str, why: str) -> None:
        res[m] = None
        res.unavailable[m] = why

    bleu_names = [m for m in names if m.startswith("bleu_")]
    if bleu_names:
        if coco is None:
            for m in bleu_names:
                unavailable(m, _NO_COCO)
        else:
            from pycocoevalcap.bleu.bleu import Bleu
            total, per = Bleu(4).compute_score(gts, hyp, verbose=0)
            for m in bleu_names:
                j = int(m[-1]) - 1
                res[m] = float(total[j])
                res.per_item[m] = [float(x) for x in per[j]]
                res.implementations[m] = f"pycocoevalcap Bleu(4) corpus BLEU, {res.tokenizer} tokens"

    if "meteor" in names:
        if coco is None:
            unavailable("meteor", _NO_COCO)
        elif java_bin is None:
            unavailable("meteor", "METEOR 1.5 is a Java program: java not found (PATH, $JAVA_HOME, $MATS_JAVA)")
        else:
            total, per = meteor_scorer(java_bin).compute_score(gts, hyp)
            res["meteor"] = float(total)
            res.per_item["meteor"] = [float(x) for x in per]
            res.implementations["meteor"] = "pycocoevalcap meteor-1.5.jar (-l en -norm)"

    if "rouge_l" in names:
        if coco is None:
            unavailable("rouge_l", _NO_COCO)
        else:
            from pycocoevalcap.rouge.rouge import Rouge
            total, per = Rouge().compute_score(gts, hyp)
            res["rouge_l"] = float(total)
            res.per_item["rouge_l"] = [float(x) for x in per]
            res.implementations["rouge_l"] = "pycocoevalcap Rouge (ROUGE-L, beta 1.2)"

    cider_per = None
    if "cider_d" in names or "spider" in names:
        if coco is None:
            for m in ("cider_d", "spider"):
                if m in names:
                    unavailable(m, _NO_COCO)
        else:
            from pycocoevalcap.cider.cider import Cider
            total, per = Cider().compute_score(gts, hyp)
            cider_per = [float(x) for x in per]
            if "cider_d" in names:
                res["cider_d"] = float(total)
                res.per_item["cider_d"] = cider_per
                res.implementations["cider_d"] = "pycocoevalcap Cider (CIDEr-D, sigma 6, corpus idf)"

    spice_per = None
    if "spice" in names or "spider" in names:
        ok, why = spice_status(java, corenlp_dir)
        if ok:
            total, spice_per = spice_scores(predictions, references, java, corenlp_dir)
            if "spice" in names:
                res["spice"] = total
                res.per_item["spice"] = spice_per
                res.implementations["spice"] = "pycocoevalcap spice-1.0.jar + CoreNLP 3.6.0"
        else:
            if "spice" in names:
                unavailable("spice", why)
            if "spider" in names and "spider" not in res.unavailable:
                unavailable("spider", "SPIDEr = (CIDEr-D + SPICE) / 2 and SPICE is unavailable: " + why)

    if "spider" in names and "spider" not in res.unavailable:
        if cider_per is not None and spice_per is not None:
            per = [(c + s) / 2 for c, s in zip(cider_per, spice_per, strict=True)]
            res["spider"] = float(np.nanmean(per))
            res.per_item["spider"] = per
            res.implementations["spider"] = "(CIDEr-D + SPICE) / 2"

    if "sbert_sim" in names:
        try:
            total, per = sbert_similarity(predictions, references, encoder)
        except Exception as e:  # the encoder's weights may be missing on a user's machine
            unavailable("sbert_sim", f"text encoder could not run: {type(e).__name__}: {e}")
        else:
            res["sbert_sim"] = total
            res.per_item["sbert_sim"] = per
            res.implementations["sbert_sim"] = (getattr(encoder, "name", None) or type(encoder).__name__
                                                if encoder is not None else "all-MiniLM-L6-v2 (mats.clap.minilm)")

    if "fense" in names:
        unavailable("fense", FENSE_UNAVAILABLE)

    # keep the requested order
    ordered = CaptionScores({m: res.get(m) for m in names})
    ordered.unavailable, ordered.per_item = res.unavailable, res.per_item
    ordered.implementations, ordered.tokenizer = res.implementations, res.tokenizer
    return ordered


def per_item_rows(scores: CaptionScores, n: int) -> list[dict[str, float]]:
    """Per-clip scores as ``n`` dicts (metric -> value), for a runner's per-item report."""
    return [{m: v[i] for m, v in scores.per_item.items()} for i in range(n)]


__all__ = ["ALL_METRICS", "CaptionScores", "caption_metrics", "expand_metric_names", "simple_tokenize",
           "ptb_tokenize", "tokenize", "spice_status", "sbert_similarity", "java_executable",
           "close_java_processes", "per_item_rows", "default_text_encoder", "meteor_scorer"]
