"""Fused cosine VQ in Triton: normalise, score, running argmax and gather in one pass.

One program handles a tile of ``BLOCK_N`` rows of ``x``:

1. load the tile (any float dtype), up-cast to fp32 and L2-normalise each row
   (``x / max(||x||, 1e-12)``, the formula of ``F.normalize``);
2. walk the codebook in tiles of ``BLOCK_K`` rows (each tile is loaded on chip, the whole
   codebook stays L2-resident: 2048 x 16 fp32 = 128 KiB), score the tile with one ``tl.dot``
   and fold it into a running (max, argmax) per row: ``tl.argmax`` breaks ties inside a tile
   to the left and the strict ``>`` across tiles keeps the earlier one, so ties go to the
   lowest index, as in ``torch.argmax``;
3. write the indices (int64) and the chosen normalised code rows (in ``x``'s dtype).

The ``N x K`` score matrix never exists: per program only a ``BLOCK_N x BLOCK_K`` tile lives in
registers. Memory traffic is ``N*d`` in + ``N*d`` out + ``N`` indices + the codebook per program
(from L2), so the kernel's footprint grows with ``N*d``, never ``N*K``.

The codebook is normalised once by the launcher (``K x d`` fp32, negligible next to ``x``), so
that the gathered rows are bit-identical to the torch reference's ``F.normalize(codebook)``.

Scores are fp32 dot products with ``input_precision="ieee"`` by default (TF32 would flip
argmaxes between near-equal codes compared with the fp32 reference); ``"tf32x3"`` is a faster,
nearly as exact choice on tensor-core GPUs.

Runs on CUDA tensors, or on CPU tensors under the Triton interpreter (``TRITON_INTERPRET=1``
set before triton is imported; used by the CI tests). Importing this module never fails:
without Triton, or without a usable device, :func:`cosine_vq_triton` raises a ``RuntimeError``
that says why.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

try:                                   # optional dependency: absent on macOS / Windows / minimal installs
    import triton
    import triton.language as tl
    _TRITON_IMPORT_ERROR: Exception | None = None
except Exception as e:                 # ImportError, or a broken install
    triton = tl = None
    _TRITON_IMPORT_ERROR = e

MAX_DIM = 128
_EPS = 1e-12                           # F.normalize's default eps


if triton is not None:
    # Defined only when Triton imports; wrapped as a JIT or interpreted kernel by ``_kernel``.
    def _cosine_vq_kernel(x_ptr, cb_ptr, cq_ptr, idx_ptr, q_ptr,
                          N, K, D,
                          stride_xn, stride_xd, stride_qn, stride_qd,
                          EPS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                          BLOCK_D: tl.constexpr, PRECISION: tl.constexpr):
        # ``cb_ptr``: the normalised codebook, contiguous K x D fp32 (scored); ``cq_ptr``: the same
        # rows already cast to the output dtype (gathered), so rounding matches torch's ``.to()``.
        pid = tl.program_id(0)
        rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
        rows64 = rows.to(tl.int64)                                  # N*d may exceed 2**31
        row_ok = rows < N
        dims = tl.arange(0, BLOCK_D)
        dim_ok = dims < D

        x = tl.load(x_ptr + rows64[:, None] * stride_xn + dims[None, :] * stride_xd,
                    mask=row_ok[:, None] & dim_ok[None, :], other=0.0).to(tl.float32)
        norm = tl.sqrt(tl.sum(x * x, axis=1))
        xn = x / tl.maximum(norm, EPS)[:, None]

        best = tl.full((BLOCK_N,), float("-inf"), tl.float32)
        best_idx = tl.zeros((BLOCK_N,), dtype=tl.int32)
        for k0 in range(0, K, BLOCK_K):
            codes = k0 + tl.arange(0, BLOCK_K)
            code_ok = codes < K
            cb = tl.load(cb_ptr + codes[:, None] * D + dims[None, :],
                         mask=code_ok[:, None] & dim_ok[None, :], other=0.0)
            s = tl.dot(xn, tl.trans(cb), input_precision=PRECISION)     # BLOCK_N x BLOCK_K
            s = tl.where(code_ok[None, :], s, float("-inf"))
            tile_best = tl.max(s, axis=1)
            tile_idx = tl.argmax(s, axis=1, tie_break_left=True).to(tl.int32) + k0
            better = tile_best > best                                   # strict: earlier tile wins ties
            best = tl.where(better, tile_best, best)
            best_idx = tl.where(better, tile_idx, best_idx)

        tl.store(idx_ptr + rows64, best_idx.to(tl.int64), mask=row_ok)
        q = tl.load(cq_ptr + best_idx.to(tl.int64)[:, None] * D + dims[None, :],
                    mask=row_ok[:, None] & dim_ok[None, :], other=0.0)
        tl.store(q_ptr + rows64[:, None] * stride_qn + dims[None, :] * stride_qd,
                 q, mask=row_ok[:, None] & dim_ok[None, :])


_KERNELS: dict[bool, object] = {}


def interpreter_mode() -> bool:
    """Whether Triton runs kernels in its interpreter (``TRITON_INTERPRET=1``).

    Triton fixes this when ``triton.language`` is first imported (its library functions such as
    ``tl.sum`` are built then as compiled or interpreted functions), so the environment variable
    must be set before anything imports triton; this reads the mode Triton actually has.
    """
    if _TRITON_IMPORT_ERROR is not None:
        return False
    from triton.runtime.interpreter import InterpretedFunction
    return isinstance(tl.sum, InterpretedFunction)


def _kernel(interpret: bool):
    # Wrapped on first use, in the mode Triton was imported in (what ``@triton.jit`` does at
    # import time; done lazily so that importing this module never touches Triton's state).
    if interpret not in _KERNELS:
        if interpret:
            from triton.runtime.interpreter import InterpretedFunction
            _KERNELS[interpret] = InterpretedFunction(_cosine_vq_kernel)
        else:
            from triton.runtime.jit import JITFunction
            _KERNELS[interpret] = JITFunction(_cosine_vq_kernel)
    return _KERNELS[interpret]


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def default_blocks(d: int) -> tuple[int, int, int]:
    """``(BLOCK_N, BLOCK_K, BLOCK_D)``: ``BLOCK_D`` >= 16 (``tl.dot``'s minimum), tiles shrink as d grows."""
    block_d = max(16, _next_pow2(d))
    if block_d <= 32:
        return 64, 128, block_d
    if block_d <= 64:
        return 64, 64, block_d
    return 32, 64, block_d


def check_usable(device: torch.device) -> bool:
    """``True`` if the kernel will run in Triton's interpreter, ``False`` if compiled; raises if neither."""
    if _TRITON_IMPORT_ERROR is not None:
        raise RuntimeError("backend='triton' needs the 'triton' package, which failed to import "
                           f"({_TRITON_IMPORT_ERROR!r}); use backend='torch'") from _TRITON_IMPORT_ERROR
    if interpreter_mode():
        return True
    if device.type != "cuda":
        hint = ("TRITON_INTERPRET=1 is set, but triton was imported before it was: set it before "
                "anything imports triton" if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
                else "or set TRITON_INTERPRET=1 before importing triton to run the kernel in Triton's "
                     "interpreter (slow, for tests)")
        raise RuntimeError(f"backend='triton' needs CUDA tensors (got {device.type}); on CPU use "
                           f"backend='torch', {hint}")
    if not torch.cuda.is_available():
        raise RuntimeError("backend='triton': CUDA is not available in this torch build / machine")
    return False


def cosine_vq_triton(x: torch.Tensor, codebook: torch.Tensor, *, block_n: int | None = None,
                     block_k: int | None = None, precision: str = "ieee") -> tuple[torch.Tensor, torch.Tensor]:
    """``(indices N int64, quantized N x d in x.dtype)``; same semantics as ``cosine_vq_torch``.

    No autograd here: :func:`kernels.cosine_vq.cosine_vq` wraps it in the straight-through Function.
    ``block_n`` / ``block_k`` override the tile sizes (powers of two >= 16).
    """
    if x.dim() != 2 or codebook.dim() != 2 or x.shape[1] != codebook.shape[1]:
        raise ValueError(f"expected x N x d and codebook K x d, got {tuple(x.shape)} and {tuple(codebook.shape)}")
    if not (x.is_floating_point() and codebook.is_floating_point()):
        raise TypeError("x and codebook must be floating point")
    if x.device != codebook.device:
        raise ValueError(f"x is on {x.device} but codebook on {codebook.device}")
    N, d = x.shape
    K = codebook.shape[0]
    if not 1 <= d <= MAX_DIM:
        raise ValueError(f"the Triton kernel supports 1 <= d <= {MAX_DIM}, got d={d}")
    if K < 1:
        raise ValueError("empty codebook")
    if K * d >= 2 ** 31:
        raise ValueError("codebook too large for int32 offsets")
    out_dtype = x.dtype
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        x = x.float()                          # e.g. fp8: scored from fp32, returned in its dtype
    interpret = check_usable(x.device)

    bn, bk, bd = default_blocks(d)
    bn, bk = block_n or bn, block_k or bk
    for name, b in (("block_n", bn), ("block_k", bk)):
        if b < 16 or b & (b - 1):
            raise ValueError(f"{name} must be a power of two >= 16, got {b}")

    cn = F.normalize(codebook.detach().float(), dim=-1).contiguous()     # K x d, once
    cq = cn.to(x.dtype)                                                   # the rows to gather
    idx = torch.empty(N, dtype=torch.long, device=x.device)
    q = torch.empty(N, d, dtype=x.dtype, device=x.device)
    if N == 0:
        return idx, q.to(out_dtype)
    grid = (triton.cdiv(N, bn),)
    _kernel(interpret)[grid](
        x, cn, cq, idx, q, N, K, d,
        x.stride(0), x.stride(1), q.stride(0), q.stride(1),
        EPS=_EPS, BLOCK_N=bn, BLOCK_K=bk, BLOCK_D=bd, PRECISION=precision,
    )
    return idx, q.to(out_dtype)


_TL_TYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def compile_for_target(dtype: torch.dtype = torch.float32, d: int = 16, capability: int = 90,
                       block_n: int | None = None, block_k: int | None = None, precision: str = "ieee"):
    """Compile the kernel ahead of time for an NVIDIA target (``capability`` 80 = A100, 90 = H100)
    with Triton's real compiler, no GPU needed; returns the ``CompiledKernel`` (``.asm`` holds
    ``ttir``, ``ttgir``, ``llir``, ``ptx`` and, where ptxas is bundled, ``cubin``). A CI check that the
    GPU path lowers, since CI has no GPU. Needs triton imported without ``TRITON_INTERPRET``.
    """
    if _TRITON_IMPORT_ERROR is not None:
        raise RuntimeError(f"triton failed to import ({_TRITON_IMPORT_ERROR!r})")
    if interpreter_mode():
        raise RuntimeError("triton is in interpreter mode (TRITON_INTERPRET=1): nothing to compile")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    bn, bk, bd = default_blocks(d)
    t = _TL_TYPES[dtype]
    sig = {"x_ptr": f"*{t}", "cb_ptr": "*fp32", "cq_ptr": f"*{t}", "idx_ptr": "*i64", "q_ptr": f"*{t}",
           "N": "i32", "K": "i32", "D": "i32",
           "stride_xn": "i32", "stride_xd": "i32", "stride_qn": "i32", "stride_qd": "i32",
           "EPS": "constexpr", "BLOCK_N": "constexpr", "BLOCK_K": "constexpr", "BLOCK_D": "constexpr",
           "PRECISION": "constexpr"}
    const = {"EPS": _EPS, "BLOCK_N": block_n or bn, "BLOCK_K": block_k or bk, "BLOCK_D": bd, "PRECISION": precision}
    src = ASTSource(_kernel(False), sig, const)
    return triton.compile(src, target=GPUTarget("cuda", capability, 32))
