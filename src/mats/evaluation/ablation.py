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

from ..bridge.bridges import BRIDGES, DEFAULT_TAU, BridgeConfig, noise_bridge_variance

__all__ = ["SWEEP_PARAMS", "PARAM_ALIASES", "DEFAULT_GRID", "QUICK_GRID", "RunSpec", "parse_sweep",
           "merge_grids", "resolve_bridge", "bridge_key", "plan_ablation"]

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


def resolve_bridge(config: BridgeConfig, santa=None) -> dict[str, Any]:
    """The parameters a bridge configuration actually runs with (``None`` -> the defaults it falls
    back to), for reports and for de-duplicating identical runs."""
    name = config.name
    out: dict[str, Any] = {"name": name}
    if name == "noise":
        out["noise_variance"] = noise_bridge_variance(config, santa)
        out["noise_kind"] = config.noise_kind
    elif name == "santa":
        cfg = santa.config if santa is not None else None
        pick = lambda v, attr, default: v if v is not None else (getattr(cfg, attr) if cfg else default)  # noqa: E731
        out.update({"lam": float(pick(config.lam, "lam", 0.3)), "tau": float(pick(config.tau, "tau", 10.0)),
                    "top_l": int(pick(config.top_l, "top_l", 32)),
                    "noise_variance": float(pick(config.noise_variance, "noise_variance", 0.015)),
                    "search": pick(config.search, "search", "cluster")})
        if cfg is not None:
            out["noise_kind"] = cfg.noise_kind
    elif name == "nearest":
        out["search"] = config.search or "exact"
    elif name == "projection":
        out["tau"] = DEFAULT_TAU["projection"] if config.tau is None else float(config.tau)
        out["projection_top_l"] = config.projection_top_l
        if config.projection_top_l is not None:
            out["search"] = config.search or "exact"
    return out


def bridge_key(config: BridgeConfig, santa=None) -> str:
    r = resolve_bridge(config, santa)
    return ";".join(f"{k}={r[k]}" for k in sorted(r))


def _fmt(v: float) -> str:
    return f"{v:g}"


def plan_ablation(santa=None, shift_available: bool = False, shift_reason: str | None = None,
                  grid: Mapping[str, Sequence[float]] | None = None,
                  bridges: Sequence[str] = BRIDGES) -> list[RunSpec]:
    """Every bridge (skipped ones carry the reason), then each parameter of ``grid`` swept alone."""
    specs: list[RunSpec] = []
    for b in bridges:
        cfg = BridgeConfig(name=b)
        reason = None
        if cfg.needs_memory and santa is None:
            reason = "the model folder has no Santa memory (santa/santa.json)"
        elif cfg.needs_shift and not shift_available:
            reason = shift_reason or ("no shift vector: the model folder has no shift.safetensors and no "
                                      "--shift FILE was given (`mats gap --out DIR` writes DIR/shift.safetensors)")
        specs.append(RunSpec(b, cfg, kind="bridge", skipped=reason))
    grid = DEFAULT_GRID if grid is None else grid
    for param in SWEEP_PARAMS:
        for v in grid.get(param, ()):
            cfg = BridgeConfig(name="santa", **{param: v})
            specs.append(RunSpec(f"santa {param}={_fmt(v)}", cfg, kind="sweep", param=param, value=float(v),
                                 skipped=None if santa is not None else
                                 "the model folder has no Santa memory (santa/santa.json)"))
    return specs
