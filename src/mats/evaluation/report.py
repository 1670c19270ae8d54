"""``report.md`` and the ablation plots from a results dict (see :mod:`mats.evaluation.runner`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from .ablation import PARAM_LABELS, SWEEP_PARAMS

__all__ = ["render_report", "make_plots", "markdown_table", "fmt", "ablation_table"]

BRIDGES_PNG = "bridges.png"
SWEEPS_PNG = "sweeps.png"

# columns shown in tables, in this order, when present
_PREFERRED = ("keyword_accuracy", "accuracy", "accuracy_string", "accuracy_embedding", "map", "f1_string",
              "cider_d", "spider", "spice", "meteor", "rouge_l", "bleu_1", "bleu_4", "sbert_sim",
              "exact_match", "embedding_match")


def fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        if isinstance(v, float) and not math.isfinite(v):
            return "–"
        return f"{v:.{digits}f}" if isinstance(v, float) else str(v)
    return str(v).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _metric_columns(rows: Sequence[dict], limit: int = 8) -> list[str]:
    seen: list[str] = []
    for r in rows:
        for k, v in (r.get("metrics") or {}).items():
            if k not in seen and v is not None:
                seen.append(k)
    ordered = [m for m in _PREFERRED if m in seen] + [m for m in seen if m not in _PREFERRED]
    return ordered[:limit]


def ablation_table(results: dict) -> tuple[list[str], list[list[Any]]]:
    """Header + rows: the zero-shot ceiling first, then every bridge (skipped ones with the reason)."""
    runs = (results.get("ablation") or {}).get("runs") or []
    bridges = [r for r in runs if r["kind"] == "bridge"]
    cols = _metric_columns(bridges)
    header = ["run", "status", *cols]
    rows: list[list[Any]] = []
    zs = results.get("zero_shot") or {}
    if zs.get("available"):
        ceiling = ["CLAP zero-shot (ceiling)", "ok"] + [zs["accuracy"] if c in ("keyword_accuracy", "accuracy")
                                                        else None for c in cols]
        rows.append(ceiling)
    for r in bridges:
        status = "ok" if r["status"] == "ok" else f"skipped: {r.get('reason')}"
        rows.append([r["name"], status, *[r["metrics"].get(c) for c in cols]])
    return header, rows


def _sweep_rows(results: dict, param: str) -> list[dict]:
    runs = (results.get("ablation") or {}).get("runs") or []
    return sorted((r for r in runs if r["kind"] == "sweep" and r["param"] == param),
                  key=lambda r: r["value"])


def make_plots(results: dict, out: str | Path) -> list[str]:
    """``bridges.png`` (primary metric per bridge, zero-shot ceiling as a line) and ``sweeps.png``
    (one panel per swept parameter: metric vs value). Returns the file names written."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out = Path(out)
    metric = results.get("primary_metric")
    runs = (results.get("ablation") or {}).get("runs") or []
    zs = results.get("zero_shot") or {}
    ceiling = zs.get("accuracy") if zs.get("available") and metric in ("keyword_accuracy", "accuracy") else None
    written: list[str] = []
    if metric is None or not runs:
        return written

    bridges = [r for r in runs if r["kind"] == "bridge"]
    if bridges:
        fig, ax = plt.subplots(figsize=(1.2 * len(bridges) + 2.5, 3.6))
        names = [r["name"] for r in bridges]
        vals = [(r["metrics"].get(metric) if r["status"] == "ok" else None) for r in bridges]
        xs = range(len(names))
        ax.bar(xs, [v if v is not None else 0.0 for v in vals], color="#4C72B0")
        for x, v, r in zip(xs, vals, bridges, strict=True):
            label = "skipped" if r["status"] != "ok" else ("n/a" if v is None else f"{v:.3f}")
            ax.text(x, (v or 0.0), label, ha="center", va="bottom", fontsize=8)
        if ceiling is not None:
            ax.axhline(ceiling, color="#C44E52", ls="--", lw=1.2, label=f"CLAP zero-shot {ceiling:.3f}")
            ax.legend(fontsize=8, loc="upper right")
        ax.set_xticks(list(xs))
        ax.set_xticklabels(names)
        ax.set_ylabel(metric)
        ax.set_title(f"{results.get('task')}: {metric} by bridge")
        fig.tight_layout()
        fig.savefig(out / BRIDGES_PNG, dpi=110)
        plt.close(fig)
        written.append(BRIDGES_PNG)

    params = [p for p in SWEEP_PARAMS if _sweep_rows(results, p)]
    if params:
        fig, axes = plt.subplots(1, len(params), figsize=(3.4 * len(params), 3.2), squeeze=False)
        default = (results.get("config") or {}).get("model", {}).get("santa") or {}
        santa_run = next((r for r in runs if r["kind"] == "bridge" and r["name"] == "santa" and r["status"] == "ok"),
                         None)
        santa_default = santa_run["metrics"].get(metric) if santa_run else None
        for ax, p in zip(axes[0], params, strict=True):
            rows = [r for r in _sweep_rows(results, p) if r["status"] == "ok"]
            xs = [r["value"] for r in rows]
            ys = [r["metrics"].get(metric) for r in rows]
            pts = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None]
            if pts:
                ax.plot([x for x, _ in pts], [y for _, y in pts], "o-", color="#4C72B0")
            if p in ("tau", "top_l") and xs and min(xs) > 0:
                from matplotlib.ticker import NullFormatter, ScalarFormatter
                ax.set_xscale("log")
                ax.set_xticks(sorted(set(xs)))
                ax.xaxis.set_major_formatter(ScalarFormatter())
                ax.xaxis.set_minor_formatter(NullFormatter())
            if p in default:
                ax.axvline(default[p], color="grey", ls=":", lw=1, label="default")
                if santa_default is not None:
                    ax.plot([default[p]], [santa_default], "*", color="#55A868", ms=10, label="santa (defaults)")
            if ceiling is not None:
                ax.axhline(ceiling, color="#C44E52", ls="--", lw=1, label="zero-shot")
            ax.set_xlabel(PARAM_LABELS.get(p, p))
            ax.set_ylabel(metric)
            ax.legend(fontsize=7)
        fig.suptitle(f"Santa sweeps ({results.get('task')}, one parameter at a time)")
        fig.tight_layout()
        fig.savefig(out / SWEEPS_PNG, dpi=110)
        plt.close(fig)
        written.append(SWEEPS_PNG)
    return written


def render_report(results: dict, max_examples: int = 10) -> str:
    cfg = results.get("config") or {}
    model = cfg.get("model") or {}
    bench = results.get("benchmark") or {}
    L: list[str] = []
    L.append(f"# MATS evaluation: {bench.get('name')} ({results.get('task')})\n")
    br = cfg.get("bridge") or {}
    br_txt = br.get("name", "") + (" (" + ", ".join(f"{k}={v}" for k, v in br.items() if k != "name") + ")"
                                   if len(br) > 1 else "")
    clap = model.get("clap") or {}
    L.append(markdown_table(["setting", "value"], [
        ["data", f"{bench.get('data')} (split {bench.get('split')})"],
        ["model folder", model.get("folder")],
        ["LLM", model.get("llm")],
        ["CLAP", clap.get("name")],
        ["bridge", br_txt],
        ["prompt", f"[{cfg['prompt_tag']}] (task {cfg.get('prompt_task')}): {cfg.get('prompt_reason')}"
         if cfg.get("prompt_tag") else cfg.get("prompt_task")],
        ["decoding", ", ".join(f"{k}={v}" for k, v in (cfg.get("decoding") or {}).items())],
        ["seed / batch size", f"{cfg.get('seed')} / {cfg.get('batch_size')}"],
        ["clips evaluated", results.get("n_evaluated")],
        ["clips failed (excluded)", results.get("n_failed")],
        ["rows without audio (skipped)", bench.get("n_missing_audio")],
        ["mats version", cfg.get("mats_version")],
    ]))
    L.append(f"\n## Metrics ({br.get('name')})\n")
    rows = [[k, v] for k, v in (results.get("metrics") or {}).items()]
    L.append(markdown_table(["metric", "value"], rows))
    zs = results.get("zero_shot") or {}
    if zs.get("available"):
        L.append(f"\nCLAP zero-shot ceiling ({zs.get('clap')}, prompt “{zs.get('prompt')}”, "
                 f"{len(zs.get('labels') or [])} labels): top-1 accuracy **{fmt(zs.get('accuracy'))}** "
                 f"on the same {zs.get('n')} clips; keyword accuracy of the decoder: "
                 f"**{fmt((results.get('metrics') or {}).get('keyword_accuracy'))}**.\n")
    elif zs.get("reason"):
        L.append(f"\nCLAP zero-shot: not computed ({zs['reason']}).\n")
    unavailable = results.get("unavailable") or {}
    if unavailable:
        L.append("\nNot computed:\n")
        L += [f"- `{k}`: {v}" for k, v in unavailable.items()]
        L.append("")

    ab = results.get("ablation")
    if ab:
        L.append("\n## Ablation: bridges\n")
        L.append("The zero-shot row is the CLAP's own top-1 accuracy over the label set (the ceiling for "
                 "label-based metrics); each bridge decodes the same audio embeddings.\n")
        header, rows = ablation_table(results)
        L.append(markdown_table(header, rows))
        plots = results.get("plots") or []
        if BRIDGES_PNG in plots:
            L.append(f"\n![{results.get('primary_metric')} by bridge]({BRIDGES_PNG})\n")
        has_sweeps = any(_sweep_rows(results, p) for p in SWEEP_PARAMS)
        if has_sweeps:
            L.append("\n## Ablation: Santa parameters (one at a time, others at the defaults)\n")
        santa = model.get("santa") or {}
        if santa and has_sweeps:
            L.append("Defaults: " + ", ".join(f"{p}={santa.get(p)}" for p in SWEEP_PARAMS) + ".\n")
        for p in SWEEP_PARAMS:
            srows = _sweep_rows(results, p)
            if not srows:
                continue
            cols = _metric_columns(srows, limit=6)
            L.append(f"\n### {PARAM_LABELS.get(p, p)}\n")
            pad = [None] * (len(cols) - 1)
            L.append(markdown_table([p, *cols], [[f"{r['value']:g}", *([r["metrics"].get(c) for c in cols]
                                                                       if r["status"] == "ok" else
                                                                       [f"skipped: {r.get('reason')}", *pad])]
                                                 for r in srows]))
        if SWEEPS_PNG in plots:
            L.append(f"\n![Santa sweeps]({SWEEPS_PNG})\n")

    failed = results.get("failed") or []
    if failed:
        L.append(f"\n## Clips excluded ({len(failed)}: audio could not be read)\n")
        L += [f"- `{f['id']}`: {f['error']}" for f in failed[:50]]
        if len(failed) > 50:
            L.append(f"- … {len(failed) - 50} more in results.json")
        L.append("")

    preds = results.get("predictions") or []
    if preds:
        L.append(f"\n## Examples (first {min(max_examples, len(preds))} of {len(preds)})\n")
        rows = []
        for p in preds[:max_examples]:
            gold = ", ".join(p.get("labels") or []) or (p.get("references") or [p.get("answer") or ""])[0]
            rows.append([p["id"], gold, p["prediction"], p.get("keyword_hit"), p.get("zero_shot_label")])
        L.append(markdown_table(["clip", "reference", "prediction", "keyword hit", "zero-shot"], rows))

    t = results.get("timings") or {}
    if t:
        L.append("\n## Timings (seconds)\n")
        L.append(markdown_table(list(t), [list(t.values())]))
    return "\n".join(L).rstrip() + "\n"
