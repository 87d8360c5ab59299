"""Built-in policies. Each is a plugin registered through the `controlplane` entry points,
exactly like a third-party plugin; a run's config selects them by name."""
