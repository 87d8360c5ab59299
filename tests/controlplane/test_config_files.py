"""A config file's parse errors never show the passwords of its URLs."""

from __future__ import annotations

import pytest

from controlplane.config import load_config
from controlplane.errors import ConfigError

BROKEN = [
    # PyYAML quotes the line at the fault, the URL cut before its '@' in one of its two snippets
    'storage: {url: "postgresql://u:pgsecretpw@h/db" x: 1}\n',
    'plugins:\n  settings:\n    exact-cache: {redis_url: "redis://:pgsecretpw@127.0.0.1:6379/6"\n  enabled: [x\n',
    'storage:\n  url: postgresql://u:pgsecretpw@h/db?password=pgsecretpw&sslmode=require: x\n',
]


@pytest.mark.parametrize("text", BROKEN)
def test_a_yaml_syntax_error_shows_the_line_with_its_passwords_starred(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="not valid yaml") as err:
        load_config(path)
    message = str(err.value)
    assert "pgsecretpw" not in message and "pgsecr" not in message
    assert "**********" in message and "line " in message  # the same place, starred one for one


def test_an_error_without_passwords_is_the_parsers_own(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text('plugins: {settings: {exact-cache: {redis_url: "redis://127.0.0.1:6379/6"} x: 1}\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "redis://127.0.0.1:6379/6" in str(err.value)
