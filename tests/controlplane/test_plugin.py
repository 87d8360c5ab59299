"""The `Plugin` base class."""

from __future__ import annotations

from controlplane import Plugin


def test_a_plugin_without_a_name_still_has_a_repr():
    class Unnamed(Plugin):
        pass

    class Named(Plugin):
        name = "named"

    assert repr(Unnamed()) == "<plugin Unnamed>"
    assert repr(Named()) == "<plugin named>"
