"""The tiny Hugging Face models the other tests in this folder use build and run."""

import pytest
import torch
from _models import LORA_TARGET, MAKERS, data


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_tiny_model_builds_and_runs(kind):
    torch.manual_seed(0)
    model = MAKERS[kind]().eval()
    x, y = data(kind)
    out = model(x)
    assert out.logits.shape[0] == x.shape[0]
    assert any(n.endswith(LORA_TARGET[kind]) for n, _ in model.named_modules())
