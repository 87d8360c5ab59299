"""Errors users see: each says what is wrong and where (config key, plugin, file/line)."""


class ControlPlaneError(Exception):
    """Base class of the project's errors."""


class ConfigError(ControlPlaneError, ValueError):
    """Invalid configuration; the message names the key."""


class PluginError(ControlPlaneError):
    """A plugin could not be found, loaded or registered."""


class ReplayInterrupted(KeyboardInterrupt):
    """Ctrl-C during a replay, simulated (`sim.replay.replay`) or live (`controlplane live-replay`).
    The run was closed as ``interrupted`` with the rows written until then; ``run_id`` names it
    (None when it had not started) and ``num_arrived`` counts the requests that had arrived."""

    def __init__(self, run_id: int | None, num_arrived: int) -> None:
        super().__init__(run_id, num_arrived)
        self.run_id = run_id
        self.num_arrived = num_arrived
