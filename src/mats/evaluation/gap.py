"""Modality-gap diagnostic: how far apart are a CLAP's audio and text embeddings?

MATS trains on CLAP *text* embeddings and infers from CLAP *audio* embeddings. Contrastive models
put the two modalities in separate cones of the sphere, so the decoder sees a distribution at test
time that it never saw in training. Training noise and the Santa memory shrink that discrepancy;
how much noise is right depends on how big the gap is for the CLAP at hand. This module measures it:

- the centroid offset ``mean(text) - mean(audio)`` (its norm, and the vector itself, which the
  "shift" bridge adds to audio embeddings),
- per-dimension spread of both clouds and of the paired differences,
- cosine statistics: paired audio-text (when each audio has its own text), nearest text for each
  audio, mean within-modality cosines, the cosine of the two centroids,
- a suggested Gaussian noise variance for text-only training (derivation below).

**Suggested variance.** Training replaces a unit text embedding ``t`` by ``normalise(t + n)`` with
``n ~ N(0, sigma^2 I_D)``. Then ``<t, t + n> = 1 + <t, n>`` where ``<t, n> ~ N(0, sigma^2)`` is small,
and ``|t + n|^2 = 1 + 2<t, n> + |n|^2`` with ``|n|^2`` concentrated at ``D sigma^2`` (a scaled chi-square
with D degrees of freedom, relative spread ``sqrt(2/D)``). So to first order in 1/D

    E[cos(t, normalise(t + n))] ~= 1 / sqrt(1 + D sigma^2).

Noise makes the text embedding look as far from its clean self as an audio embedding is from its
caption when this equals the observed audio-text cosine ``c``:

    sigma^2 = (1 / c^2 - 1) / D.

With the paper's sigma^2 = 0.015 at D = 1024 (MS-CLAP 2023): 1 + 1024 * 0.015 = 16.36, so
c = 1 / sqrt(16.36) ~= 0.247, which is the order of matched audio-caption cosines in MS-CLAP-like
models; the formula therefore reproduces the paper's setting from a measurable quantity. The same
0.015 at D = 384 would correspond to c ~= 0.385. Without pairs the mean *nearest*-text cosine stands in
for ``c``; it is an upper bound of the paired cosine (the nearest text is at least as close as the right
one), so the unpaired suggestion is a lower bound on the variance.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..clap.base import l2_normalize
from ..jsonl import iter_jsonl

__all__ = [
    "GapReport",
    "measure_gap",
    "suggest_noise_variance",
    "expected_noisy_cosine",
    "plot_gap",
    "save_shift",
    "read_paired_metadata",
    "read_texts",
    "PAPER_NOISE_VARIANCE",
    "PAPER_DIM",
    "PAPER_TARGET_COSINE",
]

PAPER_NOISE_VARIANCE = 0.015
PAPER_DIM = 1024
DEFAULT_TEMPLATE = "the sound of {label}"


# ---------------------------------------------------------------------------------------------
# the variance formula
# ---------------------------------------------------------------------------------------------

def expected_noisy_cosine(variance: float, dim: int) -> float:
    """E[cos(t, normalise(t + n))] for a unit ``t`` and ``n ~ N(0, variance I_dim)`` (first order)."""
    return 1.0 / math.sqrt(1.0 + dim * variance)


def suggest_noise_variance(target_cosine: float, dim: int) -> float:
    """Per-dimension noise variance whose expected clean/noisy cosine equals ``target_cosine``."""
    c = float(target_cosine)
    if not 0.0 < c < 1.0:
        raise ValueError(f"target cosine must be in (0, 1), got {c:.4f}")
    return (1.0 / (c * c) - 1.0) / dim


# cosine that the paper's setting corresponds to (0.015 at D = 1024): ~0.2472
PAPER_TARGET_COSINE = expected_noisy_cosine(PAPER_NOISE_VARIANCE, PAPER_DIM)


# ---------------------------------------------------------------------------------------------
# measurement
# ---------------------------------------------------------------------------------------------

@dataclass
class GapReport:
    n_audio: int
    n_text: int
    dim: int
    paired: bool
    # centroids
    offset_norm: float  # |mean(text) - mean(audio)|
    audio_centroid_norm: float
    text_centroid_norm: float
    centroid_cosine: float
    # spread (mean over dimensions of the per-dimension std)
    audio_std_mean: float
    text_std_mean: float
    paired_diff_std_mean: float | None
    # cosines
    paired_cosine_mean: float | None
    paired_cosine_median: float | None
    paired_cosine_std: float | None
    paired_cosine_after_shift_mean: float | None  # cos(normalise(audio + shift), text)
    paired_top1: float | None  # fraction of audio whose nearest distinct text is its own
    nearest_text_cosine_mean: float
    nearest_text_cosine_after_shift_mean: float
    text_text_cosine_mean: float  # mean over pairs of distinct text rows
    audio_audio_cosine_mean: float
    # noise suggestion
    target_cosine: float
    target_source: str  # "paired" or "nearest"
    suggested_noise_variance: float | None
    suggested_noise_std: float | None
    residual_variance_per_dim: float | None  # mean var(text - audio - shift) per dimension (paired)
    # vectors (not in to_dict)
    shift: np.ndarray = field(repr=False, default=None)
    audio_mean: np.ndarray = field(repr=False, default=None)
    text_mean: np.ndarray = field(repr=False, default=None)
    audio_std: np.ndarray = field(repr=False, default=None)
    text_std: np.ndarray = field(repr=False, default=None)
    diff_std: np.ndarray | None = field(repr=False, default=None)

    VECTORS = ("shift", "audio_mean", "text_mean", "audio_std", "text_std", "diff_std")

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in self.VECTORS}
        d["paper_noise_variance"] = PAPER_NOISE_VARIANCE
        d["paper_variance_at_this_dim_expected_cosine"] = expected_noisy_cosine(PAPER_NOISE_VARIANCE, self.dim)
        return d

    def summary(self) -> str:
        def f(x, p=4):
            return "n/a" if x is None else f"{x:.{p}f}"

        lines = [
            f"modality gap: {self.n_audio} audio x {self.n_text} text embeddings, dim {self.dim}"
            f"{' (paired)' if self.paired else ''}",
            f"  centroid offset |mean(text) - mean(audio)|  {f(self.offset_norm)}",
            f"  centroid norms audio / text                 {f(self.audio_centroid_norm)}"
            f" / {f(self.text_centroid_norm)}",
            f"  centroid cosine                             {f(self.centroid_cosine)}",
            f"  per-dim std audio / text / paired diff      {f(self.audio_std_mean)} / {f(self.text_std_mean)}"
            f" / {f(self.paired_diff_std_mean)}",
        ]
        if self.paired:
            lines += [
                f"  paired audio-text cosine mean/median/std    {f(self.paired_cosine_mean)} / "
                f"{f(self.paired_cosine_median)} / {f(self.paired_cosine_std)}",
                f"  paired cosine after the mean shift          {f(self.paired_cosine_after_shift_mean)}",
                f"  paired top-1 (own text is nearest)          {f(self.paired_top1, 3)}",
            ]
        lines += [
            f"  nearest-text cosine per audio (mean)        {f(self.nearest_text_cosine_mean)}"
            f"  (after shift {f(self.nearest_text_cosine_after_shift_mean)})",
            f"  mean cosine text-text / audio-audio         {f(self.text_text_cosine_mean)}"
            f" / {f(self.audio_audio_cosine_mean)}",
        ]
        if self.suggested_noise_variance is not None:
            lines.append(
                f"  suggested noise variance                    {self.suggested_noise_variance:.5f}"
                f" (std {self.suggested_noise_std:.4f}; matches {self.target_source} cosine "
                f"{self.target_cosine:.4f} via sigma^2 = (1/c^2 - 1)/D)")
        else:
            lines.append(f"  suggested noise variance                    n/a ({self.target_source} cosine "
                         f"{self.target_cosine:.4f} is not in (0, 1))")
        lines.append(f"  paper: variance {PAPER_NOISE_VARIANCE} at D={self.dim} <-> cosine "
                     f"{expected_noisy_cosine(PAPER_NOISE_VARIANCE, self.dim):.4f}")
        return "\n".join(lines)


def _unit(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} embeddings must be 2-D [N, D], got shape {x.shape}")
    if len(x) == 0:
        raise ValueError(f"no {name} embeddings")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} embeddings contain NaN or inf")
    return l2_normalize(x)


def _mean_offdiag_cosine(x: np.ndarray) -> float:
    """Mean cosine over ordered pairs i != j of unit rows, in O(N D): (|sum|^2 - N) / (N (N - 1))."""
    n = len(x)
    if n < 2:
        return float("nan")
    s = x.sum(0)
    return float((s @ s - n) / (n * (n - 1)))


def _nearest(a: np.ndarray, t: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``a``: (max cosine over rows of ``t``, argmax)."""
    best = np.empty(len(a))
    arg = np.empty(len(a), dtype=np.int64)
    for i in range(0, len(a), chunk):
        s = a[i:i + chunk] @ t.T
        arg[i:i + chunk] = s.argmax(1)
        best[i:i + chunk] = s[np.arange(len(s)), arg[i:i + chunk]]
    return best, arg


def measure_gap(audio_emb: np.ndarray, text_emb: np.ndarray, paired: bool = False) -> GapReport:
    """Gap statistics of audio [Na, D] and text [Nt, D] embeddings (rows are L2-normalised here).

    ``paired``: row i of ``text_emb`` describes row i of ``audio_emb`` (Na == Nt; repeat audio rows
    for clips with several captions). Texts may repeat (label templates); within-modality cosines,
    nearest-text search and top-1 use the distinct rows.
    """
    a = _unit(audio_emb, "audio")
    t = _unit(text_emb, "text")
    if a.shape[1] != t.shape[1]:
        raise ValueError(f"audio dim {a.shape[1]} != text dim {t.shape[1]}")
    if paired and len(a) != len(t):
        raise ValueError(f"paired mode needs as many audio as text rows, got {len(a)} and {len(t)}")
    dim = a.shape[1]
    mu_a, mu_t = a.mean(0), t.mean(0)
    shift = mu_t - mu_a
    na_, nt_ = np.linalg.norm(mu_a), np.linalg.norm(mu_t)
    t_u, t_inv = np.unique(t, axis=0, return_inverse=True)
    t_inv = np.asarray(t_inv).reshape(-1)
    a_u = np.unique(a, axis=0)

    shifted = l2_normalize(a + shift)
    near, near_arg = _nearest(a, t_u)
    near_s, _ = _nearest(shifted, t_u)

    pc = pcs = top1 = diff_std = resid = None
    if paired:
        cos = np.einsum("nd,nd->n", a, t)
        pc = cos
        pcs = float(np.einsum("nd,nd->n", shifted, t).mean())
        top1 = float((near_arg == t_inv).mean())
        diff = t - a
        diff_std = diff.std(0)
        resid = float((diff_std ** 2).mean())  # var(diff) already removes the mean, i.e. the shift

    c = float(pc.mean()) if paired else float(near.mean())
    try:
        var = suggest_noise_variance(c, dim)
    except ValueError:
        var = None
    return GapReport(
        n_audio=len(a), n_text=len(t), dim=dim, paired=paired,
        offset_norm=float(np.linalg.norm(shift)),
        audio_centroid_norm=float(na_), text_centroid_norm=float(nt_),
        centroid_cosine=float(mu_a @ mu_t / max(na_ * nt_, 1e-12)),
        audio_std_mean=float(a.std(0).mean()), text_std_mean=float(t.std(0).mean()),
        paired_diff_std_mean=None if diff_std is None else float(diff_std.mean()),
        paired_cosine_mean=None if pc is None else float(pc.mean()),
        paired_cosine_median=None if pc is None else float(np.median(pc)),
        paired_cosine_std=None if pc is None else float(pc.std()),
        paired_cosine_after_shift_mean=pcs,
        paired_top1=top1,
        nearest_text_cosine_mean=float(near.mean()),
        nearest_text_cosine_after_shift_mean=float(near_s.mean()),
        text_text_cosine_mean=_mean_offdiag_cosine(t_u),
        audio_audio_cosine_mean=_mean_offdiag_cosine(a_u),
        target_cosine=c, target_source="paired" if paired else "nearest",
        suggested_noise_variance=var, suggested_noise_std=None if var is None else math.sqrt(var),
        residual_variance_per_dim=resid,
        shift=shift.astype(np.float32), audio_mean=mu_a.astype(np.float32), text_mean=mu_t.astype(np.float32),
        audio_std=a.std(0).astype(np.float32), text_std=t.std(0).astype(np.float32),
        diff_std=None if diff_std is None else diff_std.astype(np.float32),
    )


# ---------------------------------------------------------------------------------------------
# shift vector I/O (the file format lives with the bridge, in mats.bridge.shift)
# ---------------------------------------------------------------------------------------------

def save_shift(report: GapReport, path: str | os.PathLike, clap_fingerprint: str | None = None) -> Path:
    """Write the report's shift vector (plus centroids and spreads) for the 'shift' bridge."""
    from ..bridge.shift import save_shift as _save

    vectors = {k: getattr(report, k) for k in report.VECTORS if getattr(report, k) is not None}
    meta = {"dim": str(report.dim), "paired": str(report.paired), "offset_norm": f"{report.offset_norm:.6f}",
            "suggested_noise_variance": "" if report.suggested_noise_variance is None
            else f"{report.suggested_noise_variance:.6f}"}
    return _save(path, vectors, meta, clap_fingerprint=clap_fingerprint)


# ---------------------------------------------------------------------------------------------
# plot
# ---------------------------------------------------------------------------------------------

def _pca2(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, top-2 principal axes [2, D] and explained variance ratios of the rows of ``x``."""
    mu = x.mean(0)
    xc = x - mu
    if len(x) <= 20000:
        _, s, vt = np.linalg.svd(xc, full_matrices=False)
        var = s ** 2
    else:  # many rows: SVD of the D x D scatter matrix
        _, s, vt = np.linalg.svd(xc.T @ xc)
        var = s
    ratio = var / max(var.sum(), 1e-12)
    axes = vt[:2]
    if len(axes) < 2:
        axes = np.vstack([axes, np.zeros((2 - len(axes), x.shape[1]))])
        ratio = np.concatenate([ratio, np.zeros(2)])
    return mu, axes, ratio[:2]


def plot_gap(audio_emb: np.ndarray, text_emb: np.ndarray, path: str | os.PathLike, paired: bool = False,
             title: str | None = None, max_points: int = 4000, max_lines: int = 300,
             seed: int = 0) -> Path:
    """PCA (on the union of both clouds) of audio and text embeddings to a PNG."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    a = _unit(audio_emb, "audio")
    t = _unit(text_emb, "text")
    if paired and len(a) != len(t):
        raise ValueError("paired plot needs as many audio as text rows")
    mu, axes, ratio = _pca2(np.vstack([a, t]))
    pa, pt = (a - mu) @ axes.T, (t - mu) @ axes.T
    ca, ct = pa.mean(0), pt.mean(0)
    rng = np.random.default_rng(seed)

    def pick(n, k):
        return np.arange(n) if n <= k else np.sort(rng.choice(n, k, replace=False))

    fig, ax = plt.subplots(figsize=(7, 6), dpi=110)
    if paired:
        for i in pick(len(a), max_lines):
            ax.plot([pa[i, 0], pt[i, 0]], [pa[i, 1], pt[i, 1]], color="0.6", lw=0.5, alpha=0.5, zorder=1)
    ia, it = pick(len(a), max_points), pick(len(t), max_points)
    ax.scatter(pa[ia, 0], pa[ia, 1], s=14, c="tab:blue", alpha=0.7, label=f"audio ({len(a)})", zorder=2)
    ax.scatter(pt[it, 0], pt[it, 1], s=14, c="tab:orange", marker="^", alpha=0.7,
               label=f"text ({len(t)})", zorder=2)
    ax.scatter(*ca, s=160, c="navy", marker="X", label="audio centroid", zorder=3)
    ax.scatter(*ct, s=160, c="darkred", marker="X", label="text centroid", zorder=3)
    ax.annotate("", xy=ct, xytext=ca, arrowprops=dict(arrowstyle="->", color="k", lw=1.5), zorder=4)
    gap = float(np.linalg.norm(t.mean(0) - a.mean(0)))
    ax.set_title(title or f"CLAP embeddings, PCA of audio + text (centroid gap {gap:.3f})")
    ax.set_xlabel(f"PC1 ({100 * ratio[0]:.1f} % var)")
    ax.set_ylabel(f"PC2 ({100 * ratio[1]:.1f} % var)")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------

def _row_texts(row: dict, template: str) -> list[str]:
    """Texts of one metadata/corpus row: captions, a caption/text/description, or labels."""
    caps = row.get("captions")
    if isinstance(caps, str):
        caps = [caps]
    if caps:
        return [c.strip() for c in caps if isinstance(c, str) and c.strip()]
    for k in ("caption", "text", "description"):
        v = row.get(k)
        if isinstance(v, str) and v.strip():
            return [v.strip()]
    labels = row.get("labels", row.get("label"))
    if isinstance(labels, str):
        labels = [labels]
    if labels:
        labels = [str(x).strip() for x in labels if str(x).strip()]
        if labels:
            return [template.format(label=", ".join(labels))]
    return []


def read_paired_metadata(metadata: str | os.PathLike, template: str = DEFAULT_TEMPLATE,
                         ) -> list[tuple[Path, list[str]]]:
    """(audio path, texts) per row of a generic-format ``metadata.jsonl`` (or its folder).

    Rows: ``{"file": ..., "captions": [...]}`` or ``{"file": ..., "labels": [...]}`` (labels joined
    with ", " and put into ``template``, e.g. "the sound of {label}"). Paths are relative to the
    metadata file's folder.
    """
    metadata = Path(metadata)
    if metadata.is_dir():
        metadata = metadata / "metadata.jsonl"
    if not metadata.is_file():
        raise FileNotFoundError(f"no metadata file {metadata}")
    out = []
    for where, row in iter_jsonl(metadata):
        f = row.get("file") or row.get("audio") or row.get("path") if isinstance(row, dict) else None
        if not f:
            raise ValueError(f"{where}: row has no 'file'")
        texts = _row_texts(row, template)
        if not texts:
            raise ValueError(f"{where}: row has neither captions nor labels")
        p = Path(f)
        out.append((p if p.is_absolute() else metadata.parent / p, texts))
    if not out:
        raise ValueError(f"{metadata} has no rows")
    return out


def read_texts(items: Sequence[str], template: str = DEFAULT_TEMPLATE) -> list[str]:
    """Each item is a file (``.jsonl``: captions/text/labels per row; otherwise one text per line)
    or a literal text."""
    out: list[str] = []
    for it in items:
        p = Path(it)
        if p.is_file():
            if p.suffix == ".jsonl":
                for line in p.read_text(encoding="utf-8").splitlines():
                    if line.strip():
                        out += _row_texts(json.loads(line), template)
            else:
                out += [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
        elif it.strip():
            out.append(it.strip())
    return out
