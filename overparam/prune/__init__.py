"""overparam.prune: not built yet (see the docs page docs/prune.md)."""
