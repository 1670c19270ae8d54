"""The ablation plan: every bridge, then Santa's parameters swept one at a time around the defaults.

A *run* is one bridge configuration decoded over all evaluated clips. The plan is built once per
invocation; the runner embeds the audio once and decodes every run from the same embeddings.

Sweep grids are ``{param: [values]}`` with ``param`` one of :data:`SWEEP_PARAMS` (Santa's ``lam``,
``tau``, ``top_l`` -- the paper's L -- and ``noise_variance``, the noise put on the retrieved
entries). Every other parameter stays at the model's Santa configuration (``santa/santa.json``;
the paper's λ 0.3, τ 10, L 32, variance 0.015). Values on the command line: ``--sweep lam=0,0.3,1``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from ..bridge.config import BRIDGES, BridgeConfig, available_bridges

__all__ = ["SWEEP_PARAMS", "PARAM_ALIASES", "DEFAULT_GRID", "QUICK_GRID", "RunSpec", "parse_sweep",
           "merge_grids", "plan_ablation"]

SWEEP_PARAMS = ("lam", "tau", "top_l", "noise_variance")
PARAM_ALIASES = {"lambda": "lam", "λ": "lam", "l": "top_l", "top-l": "top_l", "topl": "top_l",
                 "τ": "tau", "noise": "noise_variance", "variance": "noise_variance", "var": "noise_variance",
                 "noise-variance": "noise_variance", "sigma2": "noise_variance"}
PARAM_LABELS = {"lam": "λ (mixing weight)", "tau": "τ (softmax scale)", "top_l": "L (retrieved entries)",
                "noise_variance": "noise variance (on retrieved entries)"}

DEFAULT_GRID: dict[str, list[float]] = {
    "lam": [0.0, 0.1, 0.3, 0.5, 0.7, 1.0],
    "tau": [1.0, 10.0, 30.0, 100.0],
    "top_l": [1, 8, 32, 128],
    "noise_variance": [0.0, 0.002, 0.006, 0.015],
}
# small grid for tests and smoke runs: two points per parameter
QUICK_GRID: dict[str, list[float]] = {
    "lam": [0.0, 1.0],
    "tau": [1.0, 100.0],
    "top_l": [1, 8],
    "noise_variance": [0.0, 0.015],
}


@dataclass
class RunSpec:
    """One decoding pass: a bridge configuration, and where it sits in the ablation."""

    name: str                       # e.g. "santa", "santa lam=0.1"
    bridge: BridgeConfig
    kind: str = "bridge"            # "bridge" | "sweep" | "primary"
    param: str | None = None        # swept parameter (kind == "sweep")
    value: float | None = None      # its value
    skipped: str | None = None      # reason, when the run cannot be made
    extra: dict[str, Any] = field(default_factory=dict)


def canonical_param(name: str) -> str:
    key = name.strip().lower()
    key = PARAM_ALIASES.get(key, key)
    if key not in SWEEP_PARAMS:
        raise ValueError(f"unknown sweep parameter {name!r}; choose one of {', '.join(SWEEP_PARAMS)} "
                         f"(aliases: {', '.join(sorted(PARAM_ALIASES))})")
    return key


def _value(param: str, text: str) -> float | int:
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"sweep {param}: {text!r} is not a number") from None
    if param == "top_l":
        if v < 1 or not float(v).is_integer():
            raise ValueError(f"sweep top_l: values must be whole numbers >= 1, got {text!r}")
        return int(v)
    if param == "lam" and not 0.0 <= v <= 1.0:
        raise ValueError(f"sweep lam: values must lie in [0, 1], got {text!r}")
    if param == "noise_variance" and v < 0:
        raise ValueError(f"sweep noise_variance: values must be >= 0, got {text!r}")
    return v


def parse_sweep(specs: Iterable[str] | None) -> dict[str, list[float]]:
    """``["lam=0,0.3,1", "tau=10,100"]`` -> ``{"lam": [0, 0.3, 1], "tau": [10, 100]}`` (values kept in
    the given order, duplicates dropped). A parameter given twice: the later one wins."""
    grid: dict[str, list[float]] = {}
    for spec in specs or ():
        if "=" not in spec:
            raise ValueError(f"--sweep expects PARAM=V1,V2,... (e.g. lam=0,0.3,1), got {spec!r}")
        name, _, values = spec.partition("=")
        param = canonical_param(name)
        vals: list[float] = []
        for v in values.split(","):
            if v.strip():
                x = _value(param, v.strip())
                if x not in vals:
                    vals.append(x)
        if not vals:
            raise ValueError(f"--sweep {name}: no values")
        grid[param] = vals
    return grid


def merge_grids(base: Mapping[str, Sequence[float]], override: Mapping[str, Sequence[float]],
                only_override: bool = False) -> dict[str, list[float]]:
    """``override`` replaces ``base`` parameter by parameter (or alone, with ``only_override``)."""
    out = {} if only_override else {k: list(v) for k, v in base.items()}
    out.update({k: list(v) for k, v in override.items()})
    return {k: out[k] for k in SWEEP_PARAMS if k in out}


def _fmt(v: float) -> str:
    return f"{v:g}"


def plan_ablation(santa=None, shift_available: bool = False, shift_reason: str | None = None,
                  grid: Mapping[str, Sequence[float]] | None = None,
                  bridges: Sequence[str] = BRIDGES) -> list[RunSpec]:
    """Every bridge (skipped ones carry the reason), then each parameter of ``grid`` swept alone."""
    specs: list[RunSpec] = []
    why_not = available_bridges(santa, shift=True if shift_available else None)
    if why_not["shift"] is not None:
        why_not["shift"] = shift_reason or (why_not["shift"] + " and no --shift FILE was given")
    for b in bridges:
        specs.append(RunSpec(b, BridgeConfig(name=b), kind="bridge", skipped=why_not[b]))
    grid = DEFAULT_GRID if grid is None else grid
    for param in SWEEP_PARAMS:
        for v in grid.get(param, ()):
            cfg = BridgeConfig(name="santa", **{param: v})
            specs.append(RunSpec(f"santa {param}={_fmt(v)}", cfg, kind="sweep", param=param, value=float(v),
                                 skipped=why_not["santa"]))
    return specs
