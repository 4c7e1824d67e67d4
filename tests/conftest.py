import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """The tests use small tensors: one intra-op thread avoids oversubscription on shared 2-core CI machines."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
