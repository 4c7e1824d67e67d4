"""overparam.factor: not built yet (see the docs page docs/factor.md)."""
