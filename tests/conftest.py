"""Fixtures shared by many test modules."""
import pytest


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for the module's in-process training and sampling: on the shared
    2-core box two threads contend and run ~10x slower. Modules opt in with
    `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
