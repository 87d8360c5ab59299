"""A guardian planner declares whether it may plan sync answer checks (``sync_answer_checks``), and the
rule that holds replies (controlplane.guardian_checks.holds_answers) reads it before its settings: the
docs' guard-only planner, which plans no check itself, held every reply (TTFT = E2E, no TPOT) because a
planner whose settings name neither mode nor stages counted as one that may check answers synchronously."""

from __future__ import annotations

from controlplane import Plugin, PluginSettings, hookimpl
from controlplane.decisions import GuardianPlan
from controlplane.testing import make_trace, replay_with

JUDGE = {"name": "judge"}


class GuardOnly(Plugin):
    """The docs' guard-only planner (docs/guardians.md, Limits)."""

    name = "guard-only"
    sync_answer_checks = False  # it plans no check itself: "no check", or None for the next planner

    class Settings(PluginSettings):
        models: tuple[str, ...] = ()

    @hookimpl
    def cp_guardian_plan(self, ctx, request, stage):
        if request.model in self.settings.models:
            return None
        return GuardianPlan(False, reason=f"{request.model}: not guarded")


class GuardOnlyUndeclared(GuardOnly):
    sync_answer_checks = None  # says nothing: its settings decide, and they name no mode


class SyncDespiteSettings(Plugin):
    """Its settings say async, its plans sync: it declares so, and the replies are held."""

    name = "sync-despite-settings"
    sync_answer_checks = True

    class Settings(PluginSettings):
        mode: str = "async"

    @hookimpl
    def cp_guardian_plan(self, ctx, request, stage):
        return GuardianPlan(True, "judge", "sync", "always") if stage == "output" else None


def _held(*plugins, **settings):
    res = replay_with(*plugins, trace=make_trace(10, qps=2), guardians={"models": [JUDGE]}, plugins={"settings": {
        "sampled-guardian": {"rate": 1.0, "guardian": "judge", **settings}}})
    return res, {r.reply_held for r in res.requests}


def test_a_planner_that_declares_no_sync_answer_checks_holds_no_reply():
    res, held = _held(GuardOnly(GuardOnly.Settings(models=("other",))), mode="async")
    assert held == {False} and res.summary["tpot_p99_s"] is not None
    _, held = _held(GuardOnlyUndeclared(GuardOnly.Settings(models=("other",))), mode="async")
    assert held == {True}  # no declaration, no mode in its settings: taken to check answers synchronously
    _, held = _held(GuardOnly(GuardOnly.Settings(models=("other",))), mode="sync")
    assert held == {True}  # the next planner (sampled-guardian, sync) still holds them


def test_a_planner_that_declares_sync_answer_checks_holds_replies_whatever_its_settings_say():
    res, held = _held(SyncDespiteSettings(), mode="async")
    assert held == {True} and res.summary["tpot_p99_s"] is None
    assert not [d for d in res.decisions if d.action == "guardian_check" and d.payload.get("asked_mode")]
