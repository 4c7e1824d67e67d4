"""overparam.scaling: not built yet (see the docs page docs/scaling.md)."""
