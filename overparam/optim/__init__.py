"""overparam.optim: not built yet (see the docs page docs/optim.md)."""
