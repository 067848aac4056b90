"""Fixtures shared by several test modules."""
import os

import pytest
import torch

# tests never touch the internet: a separation that misses its models must not try to download them (tests of the
# download code start their own server on 127.0.0.1 and clear this where they need to)
os.environ.setdefault("DANNA_OFFLINE", "1")


@pytest.fixture(scope="module")
def one_thread():
    """Small tensors: one intra-op thread is faster than two fighting over a shared CPU (restored afterwards).
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
