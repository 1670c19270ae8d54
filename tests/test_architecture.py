"""The layout rules of docs/architecture.md, checked on the code: no import cycles between the
package's units, and argument parsing only in mats.commands (scripts/import_graph.py reads the
imports with ast; nothing is imported or run)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _graph_module():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_units_form_layers_without_cycles_and_parse_no_arguments():
    g = _graph_module()
    edges, externals = g.unit_graph()
    assert g.check(edges, externals) == []
    level = g.layers(edges)
    # the method's order: front end and CLAP below the model, the model below inference, the
    # commands on top; training and evaluation use inference, never the other way round
    assert level["audio"] < level["clap"] < level["pipeline"]
    assert level["mapper"] < level["model"] < level["pipeline"] < level["commands"]
    assert level["bridge"] < level["pipeline"]
    for unit in ("train", "evaluation", "server"):
        assert unit not in edges["pipeline"] and unit not in edges["model"]


def test_the_checker_sees_a_cycle_and_argparse():
    g = _graph_module()
    assert g.find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert g.check({"clap": set()}, {"clap": {"argparse"}}) != []
    assert g.check({"commands": set()}, {"commands": {"argparse"}}) == []
