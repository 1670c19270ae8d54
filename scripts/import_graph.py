"""The package's import graph, by concept: which part of the method uses which.

    python scripts/import_graph.py                 # print the layers and check the rules (exit 1 if broken)
    python scripts/import_graph.py --png docs/architecture.png

Every import in src/mats (module level and inside functions, read from the code with ``ast``) is
folded onto its *unit*: a sub-package (``mats.clap``, ``mats.bridge``, ...) or a top-level module.
Rules checked, the same ones tests/test_architecture.py asserts:

- the unit graph has no cycles, and every import runs down the method's order (``PLACES``);
- no library unit imports ``argparse`` (argument parsing lives in ``mats.commands`` only).
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "src" / "mats"

# The method's order, for the picture: each unit sits in the column of its role.
ROLES = {
    "audio": "front end", "clap": "CLAP", "bridge": "gap bridge", "mapper": "mapper", "llm": "LLM",
    "model": "model", "pipeline": "inference", "tasks": "tasks", "prompts": "tasks", "zeroshot": "inference",
    "server": "serving", "commands": "commands", "cli": "commands", "__main__": "commands",
    "train": "training", "evaluation": "evaluation", "data": "data", "store": "support", "config": "support",
    "jsonl": "support", "version": "support", "devices": "support", "model_card": "model", "__init__": "public API",
    "threads": "support",
}
COMMAND_UNITS = {"commands", "cli", "__main__"}


def unit_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "mats":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> tuple[set[str], set[str]]:
    """(mats modules imported, external top-level packages imported) by one file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    inner, outer = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                (inner if a.name.startswith("mats") else outer).add(a.name if a.name.startswith("mats")
                                                                    else a.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
                if node.module:
                    inner.add(mod)
                else:  # from .. import x: x is a module of its own, or a name in the package
                    for a in node.names:
                        sub = ROOT.parent.joinpath(*f"{mod}.{a.name}".split("."))
                        is_module = sub.is_dir() or sub.with_suffix(".py").is_file()
                        inner.add(f"{mod}.{a.name}" if is_module else mod)
            elif node.module and node.module.startswith("mats"):
                inner.add(node.module)
            elif node.module:
                outer.add(node.module.split(".")[0])
    return inner, outer


def unit_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    edges: dict[str, set[str]] = defaultdict(set)
    externals: dict[str, set[str]] = defaultdict(set)
    for path in sorted(ROOT.rglob("*.py")):
        if "resources" in path.parts:
            continue
        src = unit_of(module_name(path))
        inner, outer = imports_of(path)
        edges.setdefault(src, set())
        externals[src] |= outer
        for m in inner:
            dst = unit_of(m)
            if dst and dst != src and ((ROOT / dst).is_dir() or (ROOT / f"{dst}.py").is_file()):
                edges[src].add(dst)
    return dict(edges), dict(externals)


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(u: str) -> list[str] | None:
        state[u] = 1
        stack.append(u)
        for v in sorted(edges.get(u, ())):
            if state.get(v) == 1:
                return stack[stack.index(v):] + [v]
            if v not in state:
                found = visit(v)
                if found:
                    return found
        state[u] = 2
        stack.pop()
        return None

    for u in sorted(edges):
        if u not in state:
            found = visit(u)
            if found:
                return found
    return None


def layers(edges: dict[str, set[str]]) -> dict[str, int]:
    """Longest path down to a unit that imports no other unit: 0 for the foundations."""
    memo: dict[str, int] = {}

    def depth(u: str) -> int:
        if u not in memo:
            memo[u] = 0
            memo[u] = 1 + max((depth(v) for v in edges.get(u, ())), default=-1)
        return memo[u]

    return {u: depth(u) for u in edges}


def check(edges, externals) -> list[str]:
    problems = [f"mats.{u} uses mats.{v}, which stands on its row or above it in the method's order"
                for u, v in upward_arrows(edges)]
    cycle = find_cycle(edges)
    if cycle:
        problems.append("import cycle: " + " -> ".join(cycle))
    for unit, ext in sorted(externals.items()):
        if "argparse" in ext and unit not in COMMAND_UNITS and unit != "__init__":
            problems.append(f"library unit mats.{unit} imports argparse (parsing belongs in mats.commands)")
    return problems


# Where each unit stands in the picture: (row, column). Rows follow the method from the audio up to
# the commands; training and evaluation stand beside inference. A unit may only use units on lower
# rows (checked by upward_arrows).
PLACES = {
    "tasks": (0, 0.08), "prompts": (0.5, 0.2), "config": (0, 0.34), "store": (0, 0.46), "jsonl": (0, 0.58),
    "version": (0, 0.70), "model_card": (0, 0.84), "devices": (0, 0.97), "threads": (0.5, 0.9),
    "audio": (1, 0.5), "clap": (2, 0.5), "data": (2.5, 0.12), "bridge": (3, 0.5),
    "mapper": (4, 0.4), "llm": (4, 0.6), "model": (5, 0.5),
    "pipeline": (6, 0.5), "zeroshot": (6, 0.72),
    "train": (7, 0.12), "evaluation": (7, 0.88),
    "server": (8, 0.3), "__init__": (8, 0.72), "commands": (9, 0.5), "cli": (10, 0.38), "__main__": (10, 0.62),
}


def upward_arrows(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Imports that run against the method's order (a unit using one on its own row or above)."""
    return sorted((u, v) for u, vs in edges.items() for v in vs
                  if u in PLACES and v in PLACES and PLACES[v][0] >= PLACES[u][0])


def draw(edges: dict[str, set[str]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    unplaced = sorted(u for u in edges if u not in PLACES)
    pos = {u: (x, r) for u, (r, x) in PLACES.items() if u in edges}
    for i, u in enumerate(unplaced):  # a new unit not yet given a place: shown on the right
        pos[u] = (1.05, i)
    bad = set(upward_arrows(edges))
    fig, ax = plt.subplots(figsize=(12, 10))
    for u, vs in edges.items():
        for v in vs:
            (x0, y0), (x1, y1) = pos[u], pos[v]
            ax.annotate("", xy=(x1, y1 + 0.22), xytext=(x0, y0 - 0.22),
                        arrowprops=dict(arrowstyle="->", lw=1.2 if (u, v) in bad else 0.6,
                                        color="#c0392b" if (u, v) in bad else "#9a9a9a", alpha=0.8))
    for u, (x, y) in pos.items():
        ax.text(x, y, f"{u}\n{ROLES.get(u, '?')}", ha="center", va="center", fontsize=9,
                bbox=dict(boxstyle="round,pad=0.35", ec="#44546a",
                          fc="#f6eee0" if u in COMMAND_UNITS or u == "server" else
                          "#e9f3e6" if u in ("train", "evaluation", "data") else "#e8eef6"))
    ax.set_xlim(-0.05, 1.12)
    ax.set_ylim(-0.7, 10.7)
    ax.axis("off")
    ax.set_title("mats, unit by unit: audio at the bottom, commands on top; training, data and evaluation "
                 "beside.\nArrows point to what a unit uses (red: against the order; there should be none).",
                 fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--png", type=Path, help="draw the graph to this PNG")
    args = p.parse_args(argv)
    edges, externals = unit_graph()
    for lv, units in sorted(((lv, sorted(u for u, x in layers(edges).items() if x == lv))
                             for lv in set(layers(edges).values())), reverse=True):
        print(f"layer {lv}: " + ", ".join(f"{u} -> {{{', '.join(sorted(edges[u]))}}}" for u in units))
    if args.png:
        draw(edges, args.png)
        print(f"wrote {args.png}")
    problems = check(edges, externals)
    for line in problems:
        print("PROBLEM:", line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
