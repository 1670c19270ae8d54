"""What a bridge is and which values it runs with: one place, no torch (the CLI's parser reads it).

A :class:`BridgeConfig` names a bridge and may leave any parameter at ``None``. :meth:`BridgeConfig.resolve`
fills every ``None`` from the model's Santa memory (whose config records the noise the model was trained
with and the Santa settings it was built with), and from the paper's values where the model has no
memory. Every caller — pipeline, CLI, server, evaluation, ablation — asks this class, so a default is
decided here and nowhere else. :func:`available_bridges` says which bridges a model can run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["BRIDGES", "DEFAULT_BRIDGE", "SEARCH_MODES", "NOISE_KINDS", "PAPER_NOISE_VARIANCE", "PAPER_SANTA",
           "DEFAULT_TAU", "BridgeConfig", "BridgeError", "available_bridges"]

BRIDGES = ("none", "noise", "santa", "nearest", "projection", "shift")
# The bridge every entry point uses unless told otherwise: MATS's own (the paper's inference).
DEFAULT_BRIDGE = "santa"
SEARCH_MODES = ("cluster", "exact", "ivf", "auto")  # see mats.bridge.santa
NOISE_KINDS = ("gaussian", "uniform")

# The paper's training noise (variance 0.015, std ~0.122) and Santa settings (lam 0.3, tau 10, L 32,
# cluster search). Models record their own values; these apply only where a model has none.
PAPER_NOISE_VARIANCE = 0.015
PAPER_SANTA = {"lam": 0.3, "tau": 10.0, "top_l": 32, "search": "cluster"}

# tau used when BridgeConfig.tau is None: Santa's 10 (paper) and DeCap's 1 / 0.01 for projection
DEFAULT_TAU = {"santa": PAPER_SANTA["tau"], "projection": 100.0}


class BridgeError(ValueError):
    """A bridge was misconfigured or lacks what it needs (memory bank, shift vector)."""


@dataclass(frozen=True)
class BridgeConfig:
    name: str = DEFAULT_BRIDGE
    lam: float | None = None  # santa: None -> the memory's config (paper: 0.3)
    tau: float | None = None  # santa: None -> memory's config (10); projection: None -> 100
    top_l: int | None = None  # santa: None -> memory's config (32)
    noise_variance: float | None = None  # noise/santa: None -> the model's training noise (memory), else 0.015
    noise_kind: str | None = None  # None -> the memory's (the model's training noise kind), else gaussian
    search: str | None = None  # santa: None -> memory's config; nearest / projection top-L: "exact"
    projection_top_l: int | None = None  # projection over the top-L exact neighbours (None: whole bank)

    def __post_init__(self) -> None:
        if self.name not in BRIDGES:
            raise BridgeError(f"unknown bridge {self.name!r}; choose one of {BRIDGES}")
        if self.search is not None and self.search not in SEARCH_MODES:
            raise BridgeError(f"unknown search mode {self.search!r}; choose one of {SEARCH_MODES}")
        if self.noise_kind is not None and self.noise_kind not in NOISE_KINDS:
            raise BridgeError(f"unknown noise kind {self.noise_kind!r}; choose one of {NOISE_KINDS}")
        if self.lam is not None and not (0.0 <= self.lam <= 1.0):
            raise BridgeError(f"lam must lie in [0, 1], got {self.lam}")
        if self.noise_variance is not None and not (self.noise_variance >= 0.0):
            raise BridgeError(f"noise_variance must be >= 0, got {self.noise_variance}")
        for f in ("top_l", "projection_top_l"):
            v = getattr(self, f)
            if v is not None and int(v) < 1:
                raise BridgeError(f"{f} must be >= 1 or None, got {v}")

    @property
    def needs_memory(self) -> bool:
        return self.name in ("santa", "nearest", "projection")

    @property
    def needs_shift(self) -> bool:
        return self.name == "shift"

    def resolve(self, memory=None) -> "BridgeConfig":
        """A copy with every parameter this bridge uses filled in (the ones it ignores stay None).

        ``memory``: the model's :class:`~mats.bridge.santa.SantaMemory` (or anything with a
        ``.config`` holding lam / tau / top_l / noise_variance / noise_kind / search)."""
        mc = getattr(memory, "config", None)

        def pick(value, attr: str, paper):
            if value is not None:
                return value
            return getattr(mc, attr) if mc is not None else paper

        name = self.name
        if name == "noise":
            return BridgeConfig(name, noise_variance=float(pick(self.noise_variance, "noise_variance",
                                                                PAPER_NOISE_VARIANCE)),
                                noise_kind=pick(self.noise_kind, "noise_kind", "gaussian"))
        if name == "santa":
            return BridgeConfig(name, lam=float(pick(self.lam, "lam", PAPER_SANTA["lam"])),
                                tau=float(pick(self.tau, "tau", PAPER_SANTA["tau"])),
                                top_l=int(pick(self.top_l, "top_l", PAPER_SANTA["top_l"])),
                                noise_variance=float(pick(self.noise_variance, "noise_variance",
                                                          PAPER_NOISE_VARIANCE)),
                                noise_kind=pick(self.noise_kind, "noise_kind", "gaussian"),
                                search=pick(self.search, "search", PAPER_SANTA["search"]))
        if name == "nearest":
            return BridgeConfig(name, search=self.search or "exact")
        if name == "projection":
            tau = DEFAULT_TAU["projection"] if self.tau is None else float(self.tau)
            if self.projection_top_l is None:
                return BridgeConfig(name, tau=tau)
            return BridgeConfig(name, tau=tau, projection_top_l=int(self.projection_top_l),
                                search=self.search or "exact")
        return BridgeConfig(name)

    def describe(self, memory=None) -> dict[str, Any]:
        """The resolved parameters as a dict (``name`` first), for reports and de-duplication."""
        r = self.resolve(memory)
        out: dict[str, Any] = {"name": r.name}
        for f in dataclasses.fields(r):
            v = getattr(r, f.name)
            if f.name != "name" and v is not None:
                out[f.name] = v
        if r.name == "projection":  # None here means "the whole bank", worth showing
            out["projection_top_l"] = r.projection_top_l
        return out

    def key(self, memory=None) -> str:
        """Equal for two configs that run identically on this model."""
        d = self.describe(memory)
        return ";".join(f"{k}={d[k]}" for k in sorted(d))


def available_bridges(memory=None, shift=None) -> dict[str, str | None]:
    """Each bridge -> ``None`` if this model can run it, else the reason it cannot."""
    out: dict[str, str | None] = {}
    for name in BRIDGES:
        cfg = BridgeConfig(name)
        if cfg.needs_memory and memory is None:
            out[name] = "the model folder has no Santa memory (santa/santa.json)"
        elif cfg.needs_shift and shift is None:
            out[name] = ("no shift vector: the model folder has no shift.safetensors "
                         "(`mats gap --out DIR` writes DIR/shift.safetensors)")
        else:
            out[name] = None
    return out
