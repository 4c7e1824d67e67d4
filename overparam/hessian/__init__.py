"""overparam.hessian: not built yet (see the docs page docs/hessian.md)."""
