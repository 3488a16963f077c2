"""Kernels: cosine VQ (Triton kernel under the interpreter vs the torch reference vs the naive
full-matrix version), straight-through gradients, measured memory scaling, and the masked
attention entry point (flex vs SDPA vs an independent float64 reference)."""
import contextlib
import importlib
import os


def _import_triton_interpreted() -> str | None:
    """Triton fixes interpreter mode when triton.language is first imported: import it now with
    TRITON_INTERPRET=1 (so the kernel runs on CPU tensors here), then put the environment back,
    so the setting leaks neither into other test modules nor into the processes they start.
    Returns the value the tests of this module run with (the ``interpreter`` fixture)."""
    old = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = old or "1"
    try:
        importlib.import_module("kernels.cosine_vq_triton")
    finally:
        if old is None:
            del os.environ["TRITON_INTERPRET"]
    return old or "1"


_INTERPRET = _import_triton_interpreted()

import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from bench.kernels import peak_host_bytes  # noqa: E402
from kernels import cosine_vq, cosine_vq_torch, masked_attention  # noqa: E402
from kernels.attention import resolve_backend  # noqa: E402
from kernels.cosine_vq import cosine_vq_naive  # noqa: E402
from semcodec.model.masks import AttentionMask, TokenLayout, dense_reference  # noqa: E402
from semcodec.presets import get_preset  # noqa: E402

cvq = importlib.import_module("kernels.cosine_vq")   # the module (``kernels.cosine_vq`` is also the function)
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
TIE_TOL = 1e-5          # cosine scores closer than this count as a tie (fp32 scoring, d <= 128)
HYP = settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module", autouse=True)
def interpreter():
    """TRITON_INTERPRET as the kernels were imported with, for this module's tests only."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRITON_INTERPRET", _INTERPRET)
        yield


@pytest.fixture(scope="module")
def tvq():
    """The Triton launcher, running in Triton's interpreter (skips where that is impossible)."""
    pytest.importorskip("triton")
    mod = importlib.import_module("kernels.cosine_vq_triton")
    if not mod.interpreter_mode():
        pytest.skip("triton was imported before TRITON_INTERPRET=1 was set; run this file on its own")
    return mod.cosine_vq_triton


@contextlib.contextmanager
def chunk_elems(n):
    """Shrink the torch reference's chunk (scores per matmul) so that small tests chunk too."""
    old = cvq._CHUNK_ELEMS
    cvq._CHUNK_ELEMS = n
    try:
        yield
    finally:
        cvq._CHUNK_ELEMS = old


def make_data(N, K, d, dtype, seed, scale=1.0, zero_rows=0):
    g = torch.Generator().manual_seed(seed)
    x = (scale * torch.randn(N, d, generator=g)).to(dtype)
    x[:zero_rows] = 0                                  # zero rows: every score is 0 -> index 0
    cb = torch.randn(K, d, generator=g)
    return x, cb


def assert_valid_choice(x, cb, idx, q, ref_idx):
    """``idx`` / ``q`` against the reference's ``ref_idx``: equal indices except at ties within
    float tolerance, each choice a true maximum within tolerance, ``q`` = the chosen normalised
    codebook rows, bit for bit, in ``x``'s dtype."""
    N = x.shape[0]
    assert idx.dtype == torch.long and idx.shape == (N,)
    assert q.dtype == x.dtype and q.shape == x.shape
    s = F.normalize(x.double(), dim=-1) @ F.normalize(cb.double(), dim=-1).T     # exact scores
    rows = torch.arange(N)
    assert ((idx >= 0) & (idx < cb.shape[0])).all()
    differ = idx != ref_idx
    gap = (s[rows, idx] - s[rows, ref_idx]).abs()
    assert (gap[differ] <= TIE_TOL).all(), f"{int(differ.sum())} index mismatches that are not ties"
    assert (s[rows, idx] >= s.max(dim=1).values - TIE_TOL).all()
    assert torch.equal(q, F.normalize(cb.float(), dim=-1)[idx].to(x.dtype))


# ----------------------------------------------------------------------------- torch reference

class TestTorchReference:
    @HYP
    @given(N=st.integers(1, 300), K=st.integers(1, 700), d=st.integers(1, 128), dtype=st.sampled_from(DTYPES),
           chunk=st.sampled_from([64, 1000, 1 << 22]), seed=st.integers(0, 2 ** 16))
    def test_chunked_equals_naive(self, N, K, d, dtype, chunk, seed):
        """Chunking over N (chunks of any size, N not a multiple) changes nothing."""
        x, cb = make_data(N, K, d, dtype, seed, zero_rows=min(2, N))
        with chunk_elems(chunk):
            idx, q = cosine_vq_torch(x, cb)
        nidx, nq = cosine_vq_naive(x, cb)
        assert_valid_choice(x, cb, idx, q, nidx)
        assert (idx[:min(2, N)] == 0).all()

    def test_chunks_really_split(self):
        """The chunk size is honoured: with 64 scores per chunk and K=16, 4 rows per matmul."""
        x, cb = make_data(10, 16, 4, torch.float32, 0)
        seen = []
        real = torch.Tensor.argmax

        def spy(t, *a, **k):
            seen.append(tuple(t.shape))
            return real(t, *a, **k)
        with chunk_elems(64), pytest.MonkeyPatch.context() as mp:
            mp.setattr(torch.Tensor, "argmax", spy)
            cosine_vq_torch(x, cb)
        assert seen == [(4, 16), (4, 16), (2, 16)]


# ----------------------------------------------------------------------------- Triton kernel

class TestTritonInterpreter:
    @HYP
    @given(N=st.integers(1, 150), K=st.integers(1, 1100), d=st.integers(1, 128), dtype=st.sampled_from(DTYPES),
           blocks=st.sampled_from([(None, None), (16, 16), (32, 64), (64, 256)]),
           scale=st.sampled_from([1e-3, 1.0, 50.0]), seed=st.integers(0, 2 ** 16))
    @example(N=65, K=1000, d=16, dtype=torch.float32, blocks=(None, None), scale=1.0, seed=1)   # paper d, ragged N
    @example(N=1, K=1, d=1, dtype=torch.bfloat16, blocks=(16, 16), scale=1.0, seed=2)
    @example(N=100, K=300, d=128, dtype=torch.float16, blocks=(None, None), scale=50.0, seed=3)  # d = max
    def test_matches_torch(self, tvq, N, K, d, dtype, blocks, scale, seed):
        x, cb = make_data(N, K, d, dtype, seed, scale=scale, zero_rows=N // 7)
        idx, q = tvq(x, cb, block_n=blocks[0], block_k=blocks[1])
        ridx, rq = cosine_vq_torch(x, cb)
        assert_valid_choice(x, cb, idx, q, ridx)
        agree = idx == ridx
        assert torch.equal(q[agree], rq[agree])

    def test_ragged_shapes_are_covered(self, tvq):
        """N not a multiple of the row tile, K not a power of two and not a multiple of the code
        tile, a non-contiguous x: several tiles on both axes, no row or code lost or overrun."""
        x, cb = make_data(2 * 64 + 5, 3 * 128 + 77, 16, torch.float32, 11)
        x = torch.cat([x, x], 1)[:, ::2]                      # a strided view (row stride 32)
        assert not x.is_contiguous()
        idx, q = tvq(x, cb)
        assert_valid_choice(x, cb, idx, q, cosine_vq_torch(x, cb)[0])
        assert idx.max() >= 128, "the chosen codes should come from several code tiles"

    def test_large_codebook(self, tvq):
        """K = 65536, the documented maximum."""
        x, cb = make_data(7, 65536, 16, torch.float32, 5)
        idx, q = tvq(x, cb, block_k=4096)
        assert_valid_choice(x, cb, idx, q, cosine_vq_torch(x, cb)[0])

    @pytest.mark.parametrize("impl", ["triton", "torch", "naive"])
    def test_exact_ties_go_to_lowest_index(self, tvq, impl):
        """Codes are unit basis vectors, so scores tie exactly; the first copy of the winning
        axis sits in different code tiles (block_k=16) and more copies follow in later tiles."""
        d, K = 8, 300
        axis = [i % 7 if i < 150 else i % 8 for i in range(K)]   # axis 7 first appears at 151
        cb = torch.zeros(K, d)
        cb[torch.arange(K), torch.tensor(axis)] = torch.tensor([2.0 ** (i % 5 - 2) for i in range(K)])
        g = torch.Generator().manual_seed(0)
        x = torch.stack([torch.randperm(d, generator=g).float() + 1 for _ in range(40)])   # unique max
        x[0] = torch.arange(d).float()                            # max on axis 7
        win = x.argmax(1)
        expected = torch.tensor([axis.index(int(w)) for w in win])
        fn = {"triton": lambda a, b: tvq(a, b, block_n=16, block_k=16),
              "torch": cosine_vq_torch, "naive": cosine_vq_naive}[impl]
        idx, q = fn(x, cb)
        assert idx[0] == 151
        assert torch.equal(idx, expected)
        assert torch.equal(q, F.one_hot(win, d).float())

    def test_float64_in_float64_out(self, tvq):
        x, cb = make_data(40, 90, 12, torch.float64, 6)
        idx, q = tvq(x, cb)
        assert_valid_choice(x, cb, idx, q, cosine_vq_torch(x, cb)[0])

    def test_public_entry_point(self, tvq):
        x, cb = make_data(50, 200, 16, torch.bfloat16, 4)
        idx, q = cosine_vq(x, cb, backend="triton")
        tidx, tq = tvq(x, cb)
        assert torch.equal(idx, tidx) and torch.equal(q, tq)

    def test_bad_arguments(self, tvq):
        with pytest.raises(ValueError, match="d <= 128"):
            tvq(torch.randn(4, 129), torch.randn(8, 129))
        with pytest.raises(ValueError, match="power of two"):
            tvq(torch.randn(4, 8), torch.randn(8, 8), block_k=24)


def test_triton_module_reports_missing_backend():
    """Without the interpreter and without CUDA, the launcher says why instead of crashing in Triton;
    and the module imports even where triton is absent (simulated)."""
    code = textwrap.dedent("""
        import sys, torch
        import kernels.cosine_vq_triton as m
        try:
            m.cosine_vq_triton(torch.randn(3, 4), torch.randn(5, 4))
        except RuntimeError as e:
            print("ERR", e)
        sys.modules["triton"] = None          # now: as if triton were not installed
        for k in [k for k in sys.modules if k.startswith("kernels")]:
            del sys.modules[k]
        import kernels.cosine_vq_triton as m2
        try:
            m2.cosine_vq_triton(torch.randn(3, 4), torch.randn(5, 4))
        except RuntimeError as e:
            print("ERR2", e)
    """)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert r.returncode == 0, r.stderr
    if "ERR " in r.stdout:                     # triton installed: needs CUDA or the interpreter
        assert "needs CUDA tensors" in r.stdout and "TRITON_INTERPRET=1" in r.stdout
    assert "ERR2" in r.stdout and "needs the 'triton' package" in r.stdout


@pytest.mark.slow          # ~10 s: Triton's compiler in a subprocess
def test_gpu_path_compiles():
    """The compiled (non-interpreter) path: Triton's real compiler lowers the kernel to PTX (and a
    cubin where ptxas is bundled) for sm_90 / sm_80, no GPU needed, for each dtype and d = 128."""
    pytest.importorskip("triton")
    code = textwrap.dedent("""
        import torch
        from kernels.cosine_vq_triton import compile_for_target
        for dtype, d, cap in [(torch.float32, 16, 90), (torch.bfloat16, 16, 90), (torch.float16, 128, 80)]:
            k = compile_for_target(dtype, d, capability=cap)
            assert f".target sm_{cap}" in k.asm["ptx"], "wrong target"
            print(dtype, d, cap, sorted(k.asm), len(k.asm.get("cubin", b"")))
    """)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("'ptx'") == 3, r.stdout


# ----------------------------------------------------------------------------- autograd

class TestStraightThrough:
    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("backend", ["torch", "triton"])
    def test_gradient_passes_unchanged(self, backend, dtype, request):
        if backend == "triton":
            request.getfixturevalue("tvq")
        x, cb = make_data(37, 50, 16, dtype, 0)
        x.requires_grad_(True)
        cb.requires_grad_(True)
        idx, q = cosine_vq(x, cb, backend=backend)
        assert not idx.requires_grad and q.requires_grad
        w = torch.randn(q.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
        (q * w).sum().backward()
        assert x.grad.dtype == dtype
        assert torch.equal(x.grad, w)              # d quantized / d x = identity
        assert cb.grad is None                     # the quantizer's losses train the codebook

    def test_auto_is_torch_on_cpu(self):
        x, cb = make_data(20, 30, 8, torch.float32, 0)
        assert all(torch.equal(a, b) for a, b in zip(cosine_vq(x, cb), cosine_vq_torch(x, cb)))
        with pytest.raises(ValueError):
            cosine_vq(x, cb, backend="cuda")
        with pytest.raises(ValueError):
            cosine_vq(x, cb[:, :4])


# ----------------------------------------------------------------------------- memory

def _slope(fn, Ns, K, d, **kw):
    """Peak bytes per extra row between two N (measured: allocator events, see bench.kernels)."""
    peaks = []
    for N in Ns:
        x, cb = make_data(N, K, d, torch.float32, 0)
        out, _, peak = peak_host_bytes(fn, x, cb, **kw)
        del out
        peaks.append(peak)
    return (peaks[1] - peaks[0]) / (Ns[1] - Ns[0]), peaks


def test_peak_measurement_is_exact():
    """The measuring tool itself (``bench.kernels.peak_host_bytes``): live bytes at the peak."""
    def f():
        a = torch.ones(1 << 20, dtype=torch.uint8)          # 1 MiB
        b = torch.ones(3 << 20, dtype=torch.uint8)          # + 3 MiB while a lives: peak 4 MiB
        del a, b
        return torch.ones(1 << 19, dtype=torch.uint8)      # the result, 0.5 MiB, stays alive
    out, _, peak = peak_host_bytes(f)
    assert peak == 4 << 20 and out.numel() == 1 << 19


class TestMemoryScaling:
    def test_torch_reference_grows_with_N_d_not_N_K(self):
        """Default chunk (2**22 scores): from N = 4096 up every chunk is full, so the chunk is a
        constant and the bytes per extra row are those of the N x d (and N) tensors only."""
        d = 16
        naive, _ = _slope(cosine_vq_naive, (2048, 8192), 4096, d)
        assert naive >= 4 * 4096, naive             # the measurement does see an N x K matrix
        per_row = {}
        for K in (1024, 4096):                      # 4x the codes: the same bytes per row
            per_row[K], _ = _slope(cosine_vq_torch, (4096, 16384), K, d)
        for K, b in per_row.items():
            assert b <= 8 + 2 * 4 * d, (K, b)       # int64 index + normalised x and q rows
        assert abs(per_row[4096] - per_row[1024]) <= 8
        wide, _ = _slope(cosine_vq_torch, (4096, 16384), 1024, 4 * d)
        assert wide > 2.5 * per_row[1024]          # ... and grows with d

    def test_fused_kernel_grows_with_N_d_not_N_K(self, tvq):
        """Interpreter run: torch allocations (outputs, normalised codebook) exactly N*(8 + 4d)
        per row; with the interpreter's numpy buffers, far below the 4K bytes of a score row."""
        K, d = 1024, 16
        tvq(*make_data(16, 64, d, torch.float32, 0))         # warm the interpreter's rewrite cache
        torch_only, _ = _slope(tvq, (128, 640), K, d)
        assert torch_only == 8 + 4 * d
        total, peaks = _slope(tvq, (128, 640), K, d, numpy=True)
        assert total < 4 * K / 10, (total, peaks)


# ----------------------------------------------------------------------------- attention

def _layout(name):
    c = get_preset(name)
    return TokenLayout(c.group, c.grid, c.iframe_tokens, c.pframe_tokens), c


def _qkv(layout, cfg, B=2, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    D = cfg.width // cfg.heads
    return [torch.randn(B, cfg.heads, layout.length, D, generator=g).requires_grad_(requires_grad)
            for _ in range(3)]


def _reference_attention(q, k, v, allowed):
    """float64 softmax attention with the mask written from the rule text (``dense_reference``)."""
    s = (q.double() @ k.double().transpose(-1, -2)) / q.shape[-1] ** 0.5
    return torch.softmax(s.masked_fill(~allowed, float("-inf")), -1) @ v.double()


@pytest.mark.parametrize("role", ["encoder", "decoder"])
@pytest.mark.parametrize("name", ["tiny", "s128"])
def test_flex_equals_sdpa(name, role):
    lay, cfg = _layout(name)
    mask = AttentionMask(lay, role)
    q, k, v = _qkv(lay, cfg, B=2 if name == "tiny" else 1)
    with torch.no_grad():
        a = masked_attention(q, k, v, mask, backend="sdpa")
        b = masked_attention(q, k, v, mask, backend="flex", compile_flex=False)
    assert a.shape == b.shape == q.shape
    assert (a - b).abs().max() <= 1e-5
    ref = _reference_attention(q, k, v, dense_reference(lay, role))
    assert (a.double() - ref).abs().max() <= 1e-5
    unmasked = F.scaled_dot_product_attention(q, k, v)
    assert (a - unmasked).abs().max() > 1e-2          # the mask matters (guards the comparison)


@pytest.mark.slow          # ~20 s: torch.compile of flex attention on CPU
def test_compiled_flex_equals_sdpa():
    """Compiled flex on CPU (inference only): the first call compiles, ~10 s."""
    lay, cfg = _layout("tiny")
    mask = AttentionMask(lay, "decoder")
    q, k, v = _qkv(lay, cfg)
    with torch.no_grad():
        a = masked_attention(q, k, v, mask, backend="sdpa")
        b = masked_attention(q, k, v, mask, backend="flex", compile_flex=True)
    assert (a - b).abs().max() <= 1e-5


def test_backends_and_gradients():
    lay, cfg = _layout("tiny")
    mask = AttentionMask(lay, "encoder")
    assert resolve_backend("auto", torch.device("cpu"), needs_grad=False) == "sdpa"
    assert resolve_backend("auto", torch.device("cuda"), needs_grad=True) == "flex"
    with pytest.raises(ValueError):
        resolve_backend("xformers", torch.device("cpu"), needs_grad=False)
    q, k, v = _qkv(lay, cfg, requires_grad=True)
    with pytest.raises(ValueError, match="no backward on CPU"):
        masked_attention(q, k, v, mask, backend="flex")
    out = masked_attention(q, k, v, mask, backend="auto")             # SDPA: trainable on CPU
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    (out * w).sum().backward()
    qd, kd, vd = (t.detach().double().requires_grad_(True) for t in (q, k, v))
    (_reference_attention(qd, kd, vd, dense_reference(lay, "encoder")) * w.double()).sum().backward()
    for t, r in ((q, qd), (k, kd), (v, vd)):
        assert (t.grad.double() - r.grad).abs().max() <= 1e-5
