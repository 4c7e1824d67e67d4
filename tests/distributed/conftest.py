import pytest
from _dist_launch import launch_registered


@pytest.fixture(scope="session")
def gloo():
    """Every registered worker of this folder, run once in one 2-process gloo group."""
    return launch_registered()
