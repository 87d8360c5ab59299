import ast
from pathlib import Path

import pytest

from controlplane.errors import did_you_mean

ROOT = Path(__file__).resolve().parents[2]


def test_a_close_name_is_suggested_in_the_one_wording():
    assert did_you_mean("max_token", ["max_tokens", "temperature"]) == " (did you mean 'max_tokens'?)"


def test_up_to_three_close_names_closest_first():
    hint = did_you_mean("least-load", ["least-loaded", "least-loads", "least-loader", "least-lo", "round-robin"])
    assert hint.startswith(" (did you mean 'least-loads' or ") and hint.count(" or ") == 2
    assert "round-robin" not in hint


def test_nothing_close_gives_an_empty_hint():
    assert did_you_mean("my_package.routers:MyRouter", ["least-loaded", "queue-limit"]) == ""
    assert did_you_mean("x", []) == ""


def test_a_higher_cutoff_leaves_out_loose_matches():
    assert did_you_mean("store", ["stop"]) == " (did you mean 'stop'?)"
    assert did_you_mean("store", ["stop"], cutoff=0.8) == ""


def test_choices_given_twice_are_named_once():
    assert did_you_mean("polcy", ["policy", "policy"]) == " (did you mean 'policy'?)"


@pytest.mark.parametrize("package", ["controlplane", "sim", "plugins", "benchmarks"])
def test_every_close_match_hint_goes_through_did_you_mean(package):
    """One wording: no module but controlplane/errors.py finds close matches itself."""
    users = []
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n.split(".")[0] == "difflib" for n in names):
                users.append(str(path.relative_to(ROOT)))
    assert set(users) <= {"controlplane/errors.py"}
