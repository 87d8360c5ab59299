"""``plugins`` and ``sim`` are top-level packages of controlplane's distribution: a user's ``plugins/`` folder or
``sim.py`` in a script's folder is imported in their place, and a built-in plugin failed to load with a bare
"No module named 'plugins.admission'". The load error names the file that hid the package and what to do."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import types

from controlplane.shadowed_packages import PACKAGES_ROOT, shadowed_by, shadowing_note

#: The CLI as a wheel install runs it from a folder with a ``plugins/`` package of the user's: the working folder
#: first on sys.path (as a script's own folder is), controlplane's packages after it (site-packages), and no
#: editable install's finder (which finds ``plugins.admission`` by name whatever ``plugins`` is).
AS_INSTALLED = textwrap.dedent(f"""
    import sys
    sys.meta_path[:] = [f for f in sys.meta_path if "EditableFinder" not in repr(f)]
    sys.path[:] = ["", {str(PACKAGES_ROOT)!r}, *sys.path[1:]]
    sys.argv = ["controlplane", *sys.argv[1:]]
    from controlplane.cli import main
    main()
""")


def test_a_plugin_load_error_names_the_users_package_that_hides_controlplanes(tmp_path):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "__init__.py").write_text("")
    proc = subprocess.run([sys.executable, "-c", AS_INSTALLED, "plugins", "show", "queue-limit"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        "error: plugin entry point 'queue-limit' (plugins.admission:QueueLimit) failed to load: No module named "
        f"'plugins.admission'; the package 'plugins' imported is {tmp_path.resolve() / 'plugins' / '__init__.py'}, "
        f"not controlplane's ({PACKAGES_ROOT / 'plugins'}): a module or folder named 'plugins' in the working folder "
        "(or on PYTHONPATH) hides it; rename it, or run from another folder"]


def test_a_users_sim_py_is_named_when_a_module_of_sim_is_missing(tmp_path, monkeypatch):
    users = types.ModuleType("sim")
    users.__file__ = str(tmp_path / "sim.py")
    monkeypatch.setitem(sys.modules, "sim", users)
    exc = ModuleNotFoundError("No module named 'sim.replay'; 'sim' is not a package", name="sim.replay")
    assert shadowing_note(exc, "plugins.cache_hit_model").startswith(
        f"; the package 'sim' imported is {tmp_path.resolve() / 'sim.py'}, not controlplane's")


def test_controlplanes_own_packages_and_other_names_are_not_shadowed():
    import plugins
    import sim

    assert shadowed_by("plugins") is None and shadowed_by("sim") is None and plugins and sim
    assert shadowing_note(ModuleNotFoundError("x", name="mycorp.x"), "mycorp.x") == ""
