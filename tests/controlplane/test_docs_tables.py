"""The reference tables of the docs stay true to the code: every decision action the code records is in
plugins.md's actions table (and no other), the decision types', events' and actions' fields are their
dataclasses', and the signatures quoted for the latency models and the testing helpers are the real ones."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
from pathlib import Path

import pytest

from controlplane import actions, decisions, events, testing

ROOT = Path(__file__).resolve().parents[2]
PLUGINS_DOC = (ROOT / "docs" / "plugins.md").read_text()
LATENCY_DOC = (ROOT / "docs" / "latency-models.md").read_text()

# Calls that record a decision, and the position of their action argument.
_ACTION_ARG = {"_decision": 2, "Decision": 3, "_record": 0}


def _constants(node: ast.expr) -> set[str] | None:
    """The strings an action argument can be (a literal, or a conditional between literals); None if not one."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.IfExp):
        body, orelse = _constants(node.body), _constants(node.orelse)
        return body | orelse if body is not None and orelse is not None else None
    return None


def recorded_actions(root: Path = ROOT) -> tuple[set[str], list[str]]:
    """Every action the code records (``_decision(hook, plugin, ACTION, ...)``, ``Decision(time, hook, plugin,
    ACTION, ...)``, guardian-pool's ``_record(ACTION, ...)``), and where one is not a literal."""
    found: set[str] = set()
    unknown: list[str] = []
    for package in ("controlplane", "plugins", "sim"):
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
                if name not in _ACTION_ARG:
                    continue
                args = list(node.args) + [k.value for k in node.keywords if k.arg == "action"]
                at = _ACTION_ARG[name]
                if len(args) <= at:
                    continue  # (another function of that name: prometheus' _decision(event))
                arg = node.args[at] if at < len(node.args) else args[-1]
                values = _constants(arg)
                if values is not None:
                    found |= values
                elif name != "_record" and not (isinstance(arg, ast.Name) and arg.id == "action"):
                    # (a forwarding wrapper passes its own `action` parameter on: its callers are counted)
                    unknown.append(f"{path.relative_to(root)}:{node.lineno}")
    return found, unknown


def documented_actions(text: str | None = None) -> set[str]:
    """The actions in plugins.md's table of recorded actions (its first column)."""
    text = PLUGINS_DOC if text is None else text
    assert "| action | hook | recorded when |" in text, "docs/plugins.md has no table of recorded actions"
    table = text.split("| action | hook | recorded when |", 1)[1].split("\n\n", 1)[0]
    names: set[str] = set()
    for line in table.splitlines()[2:]:
        names |= set(re.findall(r"`(\w+)`", line.split("|")[1]))
    return names


def test_every_action_the_code_records_is_documented_and_no_other():
    found, unknown = recorded_actions()
    assert not unknown, f"decisions whose action is not a literal (list their actions in this test): {unknown}"
    assert {"route", "batch", "scale", "cancel", "scale_held", "guardian_outcome", "reload"} <= found
    documented = documented_actions()
    assert found - documented == set(), "actions recorded but not in docs/plugins.md's table"
    assert documented - found == set(), "actions in docs/plugins.md's table the code never records"


def test_the_action_scan_sees_a_new_action(tmp_path):
    (tmp_path / "controlplane").mkdir()
    (tmp_path / "plugins").mkdir()
    (tmp_path / "sim").mkdir()
    (tmp_path / "controlplane" / "x.py").write_text(
        "self._decision('cp_scale', p, 'scale_dreamt' if a else 'scale_slept', m, why)\n"
        "emit(Decision(now, 'core', 'core', 'tick_seen', None))\n"
        "self._decision('cp_scale', p, kind, m, why)\n")
    found, unknown = recorded_actions(tmp_path)
    assert found == {"scale_dreamt", "scale_slept", "tick_seen"}
    assert unknown == ["controlplane/x.py:3"]


# --- field lists -------------------------------------------------------------------------------


def _row_cells(text: str, name: str) -> list[str]:
    rows = [line for line in text.splitlines() if line.startswith(f"| `{name}` |")]
    assert len(rows) == 1, f"{name}: {len(rows)} table rows"
    return [c.strip() for c in re.split(r"(?<!\\)\|", rows[0])[1:-1]]


def _split_top(params: str) -> list[str]:
    """``a, b=(1, 2), *c`` -> its parameters (commas inside brackets or quotes kept)."""
    out, depth, quote, cur = [], 0, None, ""
    for ch in params:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
            continue
        cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def _doc_params(params: str) -> list[tuple[str, bool]]:
    """Each parameter's name and whether it has a default, as the doc writes them (``name=default``)."""
    return [(p.split("=", 1)[0].strip(), "=" in p) for p in _split_top(params) if p not in ("*", "...")]


def _fields(cls: type) -> list[tuple[str, bool]]:
    return [(f.name, f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING)
            for f in dataclasses.fields(cls)]


def _dataclasses(module) -> list[type]:
    return [c for c in vars(module).values()
            if isinstance(c, type) and dataclasses.is_dataclass(c) and c.__module__ == module.__name__]


@pytest.mark.parametrize("cls", _dataclasses(decisions), ids=lambda c: c.__name__)
def test_the_decision_types_table_lists_every_field(cls):
    cell = _row_cells(PLUGINS_DOC, cls.__name__)[2]
    documented = [(name, " = " in type_) for name, type_ in re.findall(r"(?:^|; )`(\w+): ([^`]*)`", cell)]
    assert documented == _fields(cls)


@pytest.mark.parametrize("cls", [c for c in _dataclasses(events) if c.__name__ != "VerdictAfterReply"],
                         ids=lambda c: c.__name__)
def test_the_events_tables_list_every_field(cls):
    cell = _row_cells(PLUGINS_DOC, cls.__name__)[1]
    assert _doc_params(cell.strip("`")) == _fields(cls)


def test_the_actions_list_gives_every_action_with_its_fields():
    line = PLUGINS_DOC.split("Actions (`controlplane.actions`, core → driver):", 1)[1].split("Every driver", 1)[0]
    documented = dict(re.findall(r"`(\w+)\(([^`]*)\)`", line))
    classes = {c.__name__: c for c in _dataclasses(actions)}
    assert set(documented) == set(classes)
    for name, params in documented.items():
        assert _doc_params(params) == _fields(classes[name]), name


# --- signatures --------------------------------------------------------------------------------


def _signature_params(func) -> list[tuple[str, bool]]:
    params = [p for p in inspect.signature(func).parameters.values() if p.name != "self"]
    stars = {inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.VAR_KEYWORD: "**"}
    return [(stars.get(p.kind, "") + p.name, p.default is not inspect.Parameter.empty) for p in params]


def test_the_latency_models_table_quotes_their_signatures():
    from sim.latency import LinearLatencyModel, RooflineModel, SplitwiseModel

    for cls in (LinearLatencyModel, SplitwiseModel, RooflineModel):
        params = re.search(rf"`{cls.__name__}\(([^`]*)\)`", LATENCY_DOC).group(1)
        assert _doc_params(params) == _signature_params(cls.__init__), cls.__name__


@pytest.mark.parametrize("name", ["make_config", "make_context", "make_worker", "make_requests", "make_trace",
                                  "make_plugin_set", "replay_with"])
def test_the_testing_table_quotes_the_helpers_signatures(name):
    params = re.search(rf"`{name}\(([^`]*)\)`", _row_cells(PLUGINS_DOC, _row_name(name))[0]).group(1)
    assert _doc_params(params) == _signature_params(getattr(testing, name))


def _row_name(name: str) -> str:
    row = next(line for line in PLUGINS_DOC.splitlines() if line.startswith(f"| `{name}("))
    return row.split("`")[1]
