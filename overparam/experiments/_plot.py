"""Optional matplotlib import for experiment plots (the ``plot`` extra)."""

from __future__ import annotations


def pyplot():
    """``matplotlib.pyplot`` with the non-interactive Agg backend, or None if not installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt
