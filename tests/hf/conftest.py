"""Tests on tiny Hugging Face models; skipped where ``transformers`` is not installed.

The models are built from their config classes with random weights (nothing is downloaded);
see ``_models.py``.
"""

import pytest

pytest.importorskip("transformers")
