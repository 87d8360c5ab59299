"""The YAML config parse kept on disk: the same data as PyYAML's, or PyYAML's own parse."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import pytest
import yaml

from controlplane import yaml_cache
from controlplane.cache_dir import CACHE_ENV

TEXTS = [
    "",
    "seed: 42\nname: run\n",
    "cluster:\n  models:\n  - {name: a, replicas: 2, latency: {tp: 2}}\n  - name: b\n",
    "a: 1.5\nb: -0.0\nc: .inf\nd: -.inf\ne: 1e300\nf: 0x1F\ng: 0o17\nh: 123456789012345678901234567890\n",
    "yes_: yes\nno_: no\non_: on\nnull_: ~\nempty:\nstr: '1'\nunicode: \"\\u00e9\\U0001F600\"\n",
    "- 1\n- [2, 3]\n- {x: y}\n",
    "plain string\n",
    "nan: .nan\n",
    "base: &b {x: 1, y: 2}\nother: {<<: *b, x: 3}\n",  # a merge key's entries given again: not a repeated key
]
#: What JSON would not give back exactly: parsed by PyYAML at every run.
NOT_KEPT = [
    "when: 2026-12-04\n",
    "when: 2026-12-04 17:00:00\n",
    "s: !!set {a: null, b: null}\n",
    "1: one\n",
    "~: nothing\n",
    "bin: !!binary aGVsbG8=\n",
    "base: &b {x: 1}\nother: *b\n",
]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    return tmp_path / "configs"


def _files(cache):
    return sorted(cache.glob("yaml-*.json")) if cache.exists() else []


def _same(a, b):
    assert type(a) is type(b)
    if isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b)
    else:
        assert a == b and (not isinstance(a, float) or math.copysign(1, a) == math.copysign(1, b))


@pytest.mark.parametrize("text", TEXTS)
def test_a_kept_parse_is_pyyaml_s(cache, text):
    first = yaml_cache.safe_load(text)
    assert len(_files(cache)) == 1
    again = yaml_cache.safe_load(text)
    _same(first, yaml.safe_load(text))
    _same(again, yaml.safe_load(text))
    assert again is not first or first is None


@pytest.mark.parametrize("text", NOT_KEPT)
def test_what_json_cannot_hold_is_parsed_every_time(cache, text):
    expected = yaml.safe_load(text)
    got = yaml_cache.safe_load(text)
    assert _files(cache) == []
    if text.startswith("base:"):
        assert got["base"] is got["other"]  # the alias: one object, as PyYAML makes it
    else:
        assert repr(got) == repr(expected)


def test_the_file_is_read_only_for_its_text_and_this_pyyaml(cache, monkeypatch):
    text = "seed: 1\n"
    yaml_cache.safe_load(text)
    (entry,) = _files(cache)
    saved = json.loads(entry.read_text())
    entry.write_text(json.dumps({**saved, "data": {"seed": 2}}))
    assert yaml_cache.safe_load(text) == {"seed": 2}  # read from the file (changed here to tell)
    monkeypatch.setattr(yaml_cache, "_pyyaml", lambda: "another PyYAML")
    assert yaml_cache.safe_load(text) == {"seed": 1}  # parsed again, and kept for that PyYAML
    assert json.loads(entry.read_text())["pyyaml"] == "another PyYAML"
    entry.write_text(json.dumps({**json.loads(entry.read_text()), "text": "seed: 3\n", "data": {"seed": 3}}))
    assert yaml_cache.safe_load(text) == {"seed": 1}  # another text under the same name: not taken
    entry.write_text("{not json")
    assert yaml_cache.safe_load(text) == {"seed": 1}


def test_off_keeps_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, "off")
    assert yaml_cache.safe_load("seed: 1\n") == {"seed": 1}
    assert list(tmp_path.iterdir()) == []


def test_errors_are_pyyaml_s(cache):
    with pytest.raises(yaml.YAMLError):
        yaml_cache.safe_load("seed: [1\n")
    assert _files(cache) == []


def test_a_kept_parse_does_not_import_pyyaml(tmp_path):
    code = ("import sys\nfrom controlplane import yaml_cache\n"
            "print(yaml_cache.safe_load('seed: 5\\nsim: {exact: true}\\n'), 'yaml' in sys.modules)\n")
    env = {"PATH": "", CACHE_ENV: str(tmp_path)}
    runs = [subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
            for _ in range(2)]
    assert runs == ["{'seed': 5, 'sim': {'exact': True}} True\n", "{'seed': 5, 'sim': {'exact': True}} False\n"]


@pytest.mark.parametrize(("text", "problem"), [
    ("seed: 1\nseed: 2\n", "the key 'seed' is given twice in one mapping (line 1 and line 2)"),
    ("cluster:\n  models: [{replicas: 3}]\ncluster:\n  max_retries: 0\n",
     "the key 'cluster' is given twice in one mapping (line 1 and line 3)"),
    ("m: [{name: a, name: b}]\n", "the key 'name' is given twice in one mapping (line 1 and line 1)"),
])
def test_a_repeated_key_is_refused_even_when_an_older_cache_kept_its_last_value(cache, text, problem):
    """`cluster:` twice ran with the second section alone (the first's models dropped), silently."""
    from controlplane.config_files import DuplicateKeyError

    entry = yaml_cache._entry(text)
    entry.parent.mkdir(parents=True)
    entry.write_text(json.dumps({"format": 1, "pyyaml": yaml_cache._pyyaml(), "text": text,
                                 "data": yaml.safe_load(text)}))  # what the cache kept before
    for _ in range(2):
        with pytest.raises(DuplicateKeyError, match=re.escape(problem)):
            yaml_cache.safe_load(text)
