"""Evaluation harness: captioning metrics, free-text scoring, benchmark adapters.

* :func:`caption_metrics` -- BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, SPICE, SPIDEr, SBERT-sim, FENSE
  (unavailable ones are ``None`` with a reason in ``.unavailable``).
* :func:`score_task` -- one call per task (caption / classify / tag / qa) for a runner.
* :func:`load_benchmark` -- local copies of AudioCaps, Clotho, ESC-50, UrbanSound8K, VGGSound,
  FSD50K, MusicCaps, Clotho-AQA, MMAU, or a generic folder with ``metadata.jsonl``.
"""

from .adapters import ADAPTERS, Benchmark, BenchmarkLayoutError, EvalItem, detect_benchmark, load_benchmark
from .metrics import ALL_METRICS, CaptionScores, caption_metrics, spice_status
from .scoring import TASKS, canonical_task, mean_average_precision, mentioned_labels, normalize_answer, score_task

__all__ = ["ADAPTERS", "Benchmark", "BenchmarkLayoutError", "EvalItem", "detect_benchmark", "load_benchmark",
           "ALL_METRICS", "CaptionScores", "caption_metrics", "spice_status", "TASKS", "canonical_task",
           "mean_average_precision", "mentioned_labels", "normalize_answer", "score_task"]
