"""The plugin-author and configuration docs stay true: every hook, every config key, runnable snippets."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from controlplane import hookspecs
from controlplane.config import RunConfig

ROOT = Path(__file__).resolve().parents[2]
PLUGINS_DOC = ROOT / "docs" / "plugins.md"
CONFIG_DOC = ROOT / "docs" / "configuration.md"
EXAMPLE_MODULE = ROOT / "examples" / "cp-plugin-shortest-prompt" / "cp_shortest_prompt.py"

SPEC_MARKER = f"{hookspecs.PROJECT_NAME}_spec"


# --- hookspecs ---------------------------------------------------------------------------------


def _spec_functions() -> dict[str, ast.FunctionDef]:
    tree = ast.parse(Path(hookspecs.__file__).read_text())
    return {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("cp_")}


def _expected_signature(node: ast.FunctionDef) -> str:
    return f"def {node.name}({ast.unparse(node.args)}) -> {ast.unparse(node.returns)}"


def _expected_kind(name: str) -> str:
    fn = getattr(hookspecs, name)
    if getattr(fn, SPEC_MARKER).get("firstresult"):
        return "policy"
    if "register" in inspect.signature(fn).parameters:
        return "registration"
    return "observer"


def _documented_hooks(text: str) -> dict[str, dict[str, str]]:
    """`### `cp_x`` sections of the hook reference: their signature line and their kind."""
    start = text.index("\n## Hook reference")
    end = text.index("\n## ", start + 1)
    section = text[start:end]
    found: dict[str, dict[str, str]] = {}
    for m in re.finditer(r"^### `(cp_\w+)`\n(.*?)(?=^### |\Z)", section, re.S | re.M):
        name, body = m.group(1), m.group(2)
        assert name not in found, f"{name} is documented twice"
        sigs = re.findall(r"^```python\n(def cp_\w+\(.*\) -> .*)\n```$", body, re.M)
        kind = re.search(r"^Kind: \*\*(\w+)\*\*", body, re.M)
        found[name] = {"signature": sigs[0] if len(sigs) == 1 else "", "kind": kind.group(1) if kind else ""}
    return found


def test_every_hookspec_is_a_spec_with_a_docstring():
    specs = _spec_functions()
    assert len(specs) >= 12
    for name in specs:
        fn = getattr(hookspecs, name)
        assert getattr(fn, SPEC_MARKER, None) is not None, f"{name} is not decorated with @hookspec"
        assert (inspect.getdoc(fn) or "").strip(), f"{name} has no docstring"
    # Nothing defined elsewhere (e.g. by assignment) escapes the check.
    runtime = {n for n in dir(hookspecs) if n.startswith("cp_")}
    assert runtime == set(specs)


def test_every_hook_is_documented_with_its_exact_signature_and_kind():
    documented = _documented_hooks(PLUGINS_DOC.read_text())
    problems = []
    for name, node in _spec_functions().items():
        want = _expected_signature(node)
        doc = documented.get(name)
        if doc is None:
            problems.append(f"{name}: not documented; add\n### `{name}`\n\n```python\n{want}\n```")
            continue
        if doc["signature"] != want:
            problems.append(f"{name}: documented as\n  {doc['signature']!r}\nbut the spec is\n  {want!r}")
        if doc["kind"] != _expected_kind(name):
            problems.append(f"{name}: documented as a {doc['kind']!r} hook, the spec makes it {_expected_kind(name)!r}")
    stale = sorted(set(documented) - set(_spec_functions()))
    problems += [f"{name}: documented but no such hook" for name in stale]
    assert not problems, "\n".join(problems)


def test_the_doc_parser_catches_a_changed_signature():
    text = PLUGINS_DOC.read_text().replace(
        "def cp_form_batch(ctx: PolicyContext, worker: Worker) -> BatchPlan | None",
        "def cp_form_batch(ctx: PolicyContext) -> BatchPlan | None",
    )
    assert _documented_hooks(text)["cp_form_batch"]["signature"] != _expected_signature(
        _spec_functions()["cp_form_batch"]
    )


# --- runnable snippets -------------------------------------------------------------------------


def _tested_blocks(text: str) -> list[tuple[int, str]]:
    """```python blocks preceded by a `<!-- test -->` line, with their line numbers."""
    return [
        (text[: m.start()].count("\n") + 2, m.group(1))
        for m in re.finditer(r"^<!-- test -->\n```python\n(.*?)^```$", text, re.S | re.M)
    ]


def test_plugins_doc_snippets_run():
    text = PLUGINS_DOC.read_text()
    blocks = _tested_blocks(text)
    assert len(blocks) >= 8
    namespace: dict = {"__name__": "docs_plugins"}
    for line, code in blocks:
        try:
            exec(compile(code, f"{PLUGINS_DOC}:{line}", "exec"), namespace)
        except Exception as exc:  # pragma: no cover - the message says which block
            pytest.fail(f"docs/plugins.md block at line {line} failed: {type(exc).__name__}: {exc}")


def test_the_example_module_in_the_doc_is_the_real_file():
    blocks = [code for _, code in _tested_blocks(PLUGINS_DOC.read_text()) if "class ShortestPromptFirst" in code]
    assert blocks == [EXAMPLE_MODULE.read_text()]


# --- configuration reference -------------------------------------------------------------------


def _config_sections() -> dict[str, type[BaseModel]]:
    """Heading path -> model: the top level, each section, and the per-model deployment."""
    from controlplane.config import ModelDeployment

    sections: dict[str, type[BaseModel]] = {"top level": RunConfig}
    for name, field in RunConfig.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            sections[name] = field.annotation
    sections["cluster.models[]"] = ModelDeployment
    return sections


def _doc_default(value) -> str:
    import json

    if isinstance(value, BaseModel) or (isinstance(value, list) and any(isinstance(v, BaseModel) for v in value)):
        return ""  # a nested section: its own keys are checked in its own table
    return json.dumps(value)


def _section_rows(text: str, heading: str) -> dict[str, list[str]]:
    m = re.search(rf"^### `{re.escape(heading)}`.*?\n(.*?)(?=^##|\Z)", text, re.S | re.M)
    assert m, f"docs/configuration.md has no section ### `{heading}`"
    rows = {}
    table = re.search(r"^\| key \|.*?\n((?:\|.*\n?)*)", m.group(1), re.M)  # the first table: the keys
    assert table, f"section {heading} has no key table"
    for line in table.group(1).splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        if cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells
    return rows


def test_configuration_doc_lists_every_key_with_its_default():
    text = CONFIG_DOC.read_text()
    problems = []
    for heading, model in _config_sections().items():
        rows = _section_rows(text, heading)
        for name, field in model.model_fields.items():
            row = rows.get(name)
            if row is None:
                problems.append(f"{heading}: key {name!r} is not documented")
                continue
            default = field.default_factory() if field.default_factory is not None else field.default
            want = _doc_default(default)
            if want and row[2].strip("`") != want:
                problems.append(f"{heading}.{name}: documented default {row[2]} but the model says {want}")
        problems += [f"{heading}: {name!r} is documented but not a key" for name in set(rows) - set(model.model_fields)]
    assert not problems, "\n".join(problems)


def test_configuration_doc_example_is_the_real_file():
    text = CONFIG_DOC.read_text()
    shown = re.search(r"^```yaml\n(# A run config.*?)^```$", text, re.S | re.M)
    assert shown and shown.group(1) == (ROOT / "examples" / "cluster.yaml").read_text()


def test_configuration_doc_snippets_run(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("CONTROLPLANE_SEED", raising=False)
    text = CONFIG_DOC.read_text()
    blocks = _tested_blocks(text)
    assert blocks
    namespace: dict = {"__name__": "docs_configuration"}
    for line, code in blocks:
        exec(compile(code, f"{CONFIG_DOC}:{line}", "exec"), namespace)


def test_configuration_doc_lists_every_builtin_plugin_setting():
    from controlplane.plugin import Plugin
    from controlplane.plugin_manager import discover_plugins

    text = CONFIG_DOC.read_text()
    section = text[text.index("The built-in plugins' settings:"):text.index("### `cluster`")]
    rows = {line.split("|")[1].strip().strip("`"): line for line in section.splitlines() if line.startswith("| `")}
    builtins = {n: p for n, p in discover_plugins().items() if p.dist == "controlplane"}
    assert set(rows) == set(builtins)
    for name, info in builtins.items():
        settings = info.target.Settings.model_fields if issubclass(info.target, Plugin) else {}
        for key in settings:
            assert f"`{key}`" in rows[name], f"{name}: setting {key} is not documented"


def test_max_batch_tokens_doc_says_what_a_longer_prompt_gets_by_default():
    """It said such a prompt "is rejected", but continuous-batching prefills it alone unless long_prompts: reject."""
    from plugins.batching import ContinuousBatching

    row = _section_rows(CONFIG_DOC.read_text(), "cluster.models[]")["max_batch_tokens"][3]
    default = ContinuousBatching.Settings.model_fields["long_prompts"].default
    assert default == "alone"
    assert "prefilled alone by default" in row and 'long_prompts: "reject"' in row, row


def test_configuration_doc_lists_every_builtin_plugin_s_hooks():
    """The plugin table's hook lists missed exact-cache's cp_run_started / cp_run_finished, queue-limit's
    cp_on_event, scheduled-replicas' cp_run_started (`controlplane plugins list` has them)."""
    from controlplane.plugin_manager import discover_plugins

    text = CONFIG_DOC.read_text()
    section = text[text.index("The built-in plugins' settings:"):text.index("### `cluster`")]
    rows = {line.split("|")[1].strip().strip("`"): line.split("|")[2] for line in section.splitlines()
            if line.startswith("| `")}
    wrong = {name: (sorted(set(re.findall(r"cp_\w+", rows[name]))), sorted(info.hooks))
             for name, info in discover_plugins().items() if info.dist == "controlplane"
             and set(re.findall(r"cp_\w+", rows[name])) != set(info.hooks)}
    assert not wrong, "documented hooks, installed hooks:\n" + "\n".join(f"{k}: {v}" for k, v in wrong.items())


def test_the_guardian_store_settings_and_the_seed_s_range_are_documented():
    from plugins.cache_backends import StoreSettings

    text = (ROOT / "docs" / "guardians.md").read_text()
    for key, field in StoreSettings.model_fields.items():  # a row of the store table: key, default, meaning
        assert f"| `{key}` | `{_doc_default(field.default)}` |" in text, f"guardians.md: store key {key}"
    assert "socket timeout is 50 ms" not in (ROOT / "docs" / "caching.md").read_text()
    assert "`plugins.cache_backends`" not in CONFIG_DOC.read_text()  # (a module, not a key)
    assert _section_rows(CONFIG_DOC.read_text(), "top level")["seed"][1] == "`int 0..2^63-1`"


def test_the_docs_give_the_control_settings_their_current_names():
    """README's environment example was `CONTROLPLANE_SIM__TICK_S=0.5`, docs/plugins.md's `make_config(sim={"tick_s":
    0.5})`: names from before `tick_s` and `metrics_interval_s` moved to `control` (configuration.md's note on the
    old names is the one place they belong)."""
    from controlplane.config_errors import MOVED_TO_CONTROL

    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    old = "|".join(MOVED_TO_CONTROL)
    pattern = re.compile(rf"sim\.({old})|CONTROLPLANE_SIM__({old.upper()})|sim=\{{[^}}]*[\"']({old})[\"']")
    found = [(p.name, m.group(0)) for p in docs for m in pattern.finditer(p.read_text())]
    note = CONFIG_DOC.read_text().split("### `control`", 1)[1].split("|", 1)[0]  # (the note above its table)
    assert found and all(name == CONFIG_DOC.name and text in note for name, text in found), found
