"""Kernel benchmarks: cosine VQ (torch chunked / naive full matrix / Triton) and masked attention.

    python -m bench.kernels                      # full CPU run (~5 min on one core), JSON + table
    python -m bench.kernels --quick              # smaller sizes, no torch.compile, no landiff length
    python -m bench.kernels --out results/kernels.json --threads 1

CPU figures, always:
- cosine VQ at N=262144, K=2048, d=16 (fp32): the chunked torch reference vs the naive version
  that builds the whole N x K score matrix: time and peak memory;
- memory scaling: peak bytes at two N, per row, for chunked torch, naive and the fused Triton
  kernel (run by Triton's interpreter on the CPU, so its time means nothing but its memory does:
  torch allocations plus the interpreter's numpy buffers);
- masked attention, forward, flex (eager, and compiled where it works) vs SDPA with the dense
  mask, at the ``s128`` encoder length and at the ``landiff`` encoder length
  13*1350 + 1218 = 18768 (batch 1, 12 heads, head dim 64), or the largest frame count that fits.
On a CUDA machine also: Triton vs torch cosine VQ with achieved GB/s and TFLOP/s against the
card's peak, and flex vs SDPA attention with ``torch.cuda.max_memory_allocated``.

Peak memory on CPU is measured, not estimated: :func:`peak_host_bytes` replays the CPU
allocator's events recorded by ``torch.profiler`` (``profile_memory=True``) and takes the highest
running total of live bytes allocated during the call; numpy buffers (the Triton interpreter's)
are added from ``tracemalloc``. The tests (``tests/test_kernels.py``) use the same function.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import torch

from kernels.attention import masked_attention
from kernels.cosine_vq import cosine_vq_naive, cosine_vq_torch

# Peak figures of some cards: (HBM bytes/s, fp32 FLOP/s without tensor cores). The Triton kernel
# scores in fp32 ("ieee" dot), so fp32 CUDA-core FLOP/s is the matching compute roof.
GPU_PEAKS = {
    "H200": (4.8e12, 67e12),
    "H100 NVL": (3.9e12, 60e12),
    "H100 PCIe": (2.0e12, 51e12),
    "H100": (3.35e12, 67e12),          # SXM (reports as "H100 80GB HBM3")
    "A100-SXM4-80GB": (2.039e12, 19.5e12),
    "A100": (1.555e12, 19.5e12),
    "L40S": (0.864e12, 91.6e12),
    "L4": (0.3e12, 30.3e12),
    "A10": (0.6e12, 31.2e12),
    "RTX 4090": (1.008e12, 82.6e12),
}


def gpu_peak(name: str) -> tuple[float, float] | None:
    for key, val in GPU_PEAKS.items():      # ordered: specific names first
        if key in name:
            return val
    return None


# ----------------------------------------------------------------------------- measurement

def _cpu_alloc_peak(prof) -> int:
    """Highest running total of CPU allocator bytes over the profiled region (0 = start)."""
    evs = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
           and e.device_type() == torch.autograd.DeviceType.CPU]
    evs.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for e in evs:
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def peak_host_bytes(fn, *args, numpy: bool = False, **kwargs):
    """Run ``fn`` once; return ``(result, seconds, peak_bytes)``.

    ``peak_bytes`` = peak live bytes the torch CPU allocator handed out during the call, measured
    from the profiler's allocation / free events; with ``numpy=True`` plus tracemalloc's peak (numpy
    buffers, e.g. the Triton interpreter's). The result stays alive, so it is counted.
    """
    from torch.profiler import ProfilerActivity, profile
    gc.collect()
    np_peak = 0
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        if numpy:
            tracemalloc.start()
        try:
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            dt = time.perf_counter() - t0
            if numpy:
                np_peak = tracemalloc.get_traced_memory()[1]
        finally:
            if numpy:
                tracemalloc.stop()
    return out, dt, _cpu_alloc_peak(prof) + np_peak


def peak_cuda_bytes(fn, *args, **kwargs):
    torch.cuda.synchronize()
    gc.collect()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return out, dt, torch.cuda.max_memory_allocated() - base


def timeit(fn, *args, repeat: int = 3, warmup: int = 1, cuda: bool = False, **kwargs) -> float:
    """Median wall seconds of ``repeat`` calls after ``warmup``."""
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(warmup):
        fn(*args, **kwargs)
    sync()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(*args, **kwargs)
        sync()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
        return True
    except Exception:
        return False


def _mib(b):
    return None if b is None else b / 2 ** 20


# ----------------------------------------------------------------------------- cosine VQ

def vq_data(N, K, d, dtype=torch.float32, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, d, generator=g).to(device=device, dtype=dtype)
    c = torch.randn(K, d, generator=g).to(device)
    return x, c


def bench_vq_cpu(N, K, d, repeat):
    x, c = vq_data(N, K, d)
    rows = []
    ref = None
    for name, fn in (("torch (chunked)", cosine_vq_torch), ("naive (N x K matrix)", cosine_vq_naive)):
        out, _, peak = peak_host_bytes(fn, x, c)
        del out
        t = timeit(fn, x, c, repeat=repeat, warmup=0)
        idx = fn(x, c)[0]
        same = None if ref is None else bool(torch.equal(idx, ref))
        ref = idx if ref is None else ref
        rows.append(dict(section="cosine_vq", device="cpu", backend=name, N=N, K=K, d=d, dtype="float32",
                         seconds=t, peak_mib=_mib(peak), scores_mib=N * K * 4 / 2 ** 20,
                         note=None if same is None else f"indices equal to chunked: {same}"))
    return rows


def bench_vq_scaling(K, d, Ns_torch, Ns_fused):
    """Peak bytes at two N for each path; the slope per row says what memory grows with."""
    out = []
    paths = [("torch (chunked)", cosine_vq_torch, Ns_torch, False), ("naive (N x K matrix)", cosine_vq_naive, Ns_torch, False)]
    if triton_available():
        from kernels.cosine_vq_triton import cosine_vq_triton, interpreter_mode
        if interpreter_mode():
            paths.append(("triton fused (interpreter)", cosine_vq_triton, Ns_fused, True))
    for name, fn, Ns, interp in paths:
        peaks, secs = [], []
        if interp:                      # first call: the interpreter rewrites the kernel (one-off allocations)
            fn(*vq_data(64, K, d))
        for N in Ns:
            x, c = vq_data(N, K, d)
            res, dt, peak = peak_host_bytes(fn, x, c, numpy=interp)
            del res
            peaks.append(peak)
            secs.append(dt)
        slope = (peaks[1] - peaks[0]) / (Ns[1] - Ns[0])
        out.append(dict(section="vq_memory_scaling", device="cpu", backend=name, K=K, d=d, N=list(Ns),
                        peak_mib=[_mib(p) for p in peaks], seconds=secs, bytes_per_row=slope,
                        bytes_per_row_if_Nd=4 * d, bytes_per_row_if_NK=4 * K))
    return out


def bench_vq_cuda(N, K, d, repeat):
    from kernels.cosine_vq_triton import cosine_vq_triton
    name = torch.cuda.get_device_name()
    peak = gpu_peak(name)
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        x, c = vq_data(N, K, d, dtype=dtype, device="cuda")
        ref = cosine_vq_torch(x, c)[0]
        for backend, fn in (("triton fused", cosine_vq_triton), ("torch (chunked)", cosine_vq_torch),
                            ("naive (N x K matrix)", cosine_vq_naive)):
            try:
                _, _, mem = peak_cuda_bytes(fn, x, c)
                t = timeit(fn, x, c, repeat=max(repeat, 10), warmup=2, cuda=True)
            except torch.OutOfMemoryError:
                rows.append(dict(section="cosine_vq", device=name, backend=backend, N=N, K=K, d=d,
                                 dtype=str(dtype).split(".")[-1], note="out of memory"))
                continue
            idx = fn(x, c)[0]
            moved = 2 * N * d * x.element_size() + 8 * N + 4 * K * d
            flops = 2 * N * K * d
            row = dict(section="cosine_vq", device=name, backend=backend, N=N, K=K, d=d,
                       dtype=str(dtype).split(".")[-1], seconds=t, peak_mib=_mib(mem),
                       GBps=moved / t / 1e9, TFLOPs=flops / t / 1e12,
                       index_mismatch=int((idx != ref).sum()))
            if peak:
                row["pct_peak_bw"] = 100 * moved / t / peak[0]
                row["pct_peak_fp32"] = 100 * flops / t / peak[1]
            rows.append(row)
    return rows


# ----------------------------------------------------------------------------- attention

def _mask_bytes(mask, device):
    dense = mask.dense(device)
    bm = mask.block_mask(device)
    bb = sum(v.numel() * v.element_size() for v in vars(bm).values() if isinstance(v, torch.Tensor))
    return dense.numel() * dense.element_size(), bb


def bench_attention_case(label, layout, role, B, H, D, device, dtype, backends, repeat):
    from semcodec.model.masks import AttentionMask
    L = layout.length
    mask = AttentionMask(layout, role)
    t0 = time.perf_counter()
    dense_b, block_b = _mask_bytes(mask, device)
    t_masks = time.perf_counter() - t0
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, L, D, generator=g).to(device=device, dtype=dtype) for _ in range(3))
    cuda = device == "cuda"
    rows, ref = [], None
    for backend, compiled in backends:
        name = {("sdpa", False): "sdpa + dense mask", ("flex", False): "flex (eager)",
                ("flex", True): "flex (compiled)"}[(backend, compiled)]
        row = dict(section="attention", device=torch.cuda.get_device_name() if cuda else "cpu", case=label,
                   role=role, backend=name, L=L, B=B, H=H, D=D, dtype=str(dtype).split(".")[-1],
                   dense_mask_mib=_mib(dense_b), block_mask_mib=_mib(block_b), mask_build_s=t_masks,
                   sparsity_pct=float(mask.block_mask(device).sparsity()))
        fn = lambda: masked_attention(q, k, v, mask, backend, compile_flex=compiled)   # noqa: E731
        try:
            with torch.no_grad():
                if compiled:                       # first call compiles: timed on its own
                    t0 = time.perf_counter()
                    fn()
                    if cuda:
                        torch.cuda.synchronize()
                    row["compile_s"] = time.perf_counter() - t0
                out, dt, mem = (peak_cuda_bytes if cuda else peak_host_bytes)(fn)
                row["peak_mib"] = _mib(mem)
                if repeat > 0:                     # median of ``repeat`` more calls
                    row["seconds"] = timeit(fn, repeat=repeat, warmup=0, cuda=cuda)
                    row["timing"] = f"median of {repeat}"
                else:                              # big cases: best of the profiled call and one more
                    row["seconds"] = min(dt, timeit(fn, repeat=1, warmup=0, cuda=cuda))
                    row["timing"] = "best of 2"
        except (RuntimeError, MemoryError) as e:   # incl. torch.OutOfMemoryError
            row["note"] = f"failed: {type(e).__name__}: {str(e)[:120]}"
            rows.append(row)
            continue
        if ref is None:
            ref = out
        else:
            row["max_abs_diff_vs_first"] = float((out.float() - ref.float()).abs().max())
        del out
        rows.append(row)
    return rows


def landiff_layout(frames: int):
    from semcodec.model.masks import TokenLayout
    from semcodec.presets import get_preset
    c = get_preset("landiff")
    return TokenLayout(frames, c.grid, c.iframe_tokens, c.pframe_tokens), c


def bench_attention(device, quick, repeat):
    from semcodec.model.masks import TokenLayout
    from semcodec.presets import get_preset
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    can_compile = device == "cuda" or not quick
    rows = []
    s = get_preset("s128")
    lay = TokenLayout(s.group, s.grid, s.iframe_tokens, s.pframe_tokens)
    backends = [("sdpa", False), ("flex", False)] + ([("flex", True)] if can_compile else [])
    rows += bench_attention_case("s128 encoder", lay, "encoder", 1, s.heads, s.width // s.heads, device, dtype,
                                 backends, repeat)
    if quick:
        return rows
    c = get_preset("landiff")
    # eager flex materialises B*H*L*L fp32 scores (16.9 GB at L=18768): not run at this length
    backends = [("sdpa", False), ("flex", True)]
    for frames in (c.group, 10, 7, 4, 2):
        lay, _ = landiff_layout(frames)
        r = bench_attention_case(f"landiff encoder, {frames} frames", lay, "encoder", 1, c.heads,
                                 c.width // c.heads, device, dtype, backends, repeat=0)
        rows += r
        if all("note" not in x for x in r):
            if frames != c.group:
                for x in r:
                    x["note"] = (f"largest that fits: {frames} of {c.group} frames "
                                 f"(full length {landiff_layout(c.group)[0].length})")
            break
        gc.collect()
    return rows


# ----------------------------------------------------------------------------- report

def _fmt(v, nd=3):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def table(rows) -> str:
    lines = ["| section | device | case | backend | time (s) | peak (MiB) | notes |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        sec = r["section"]
        if sec == "cosine_vq":
            case = f"N={r['N']} K={r['K']} d={r['d']} {r['dtype']}"
            notes = []
            if "GBps" in r:
                notes.append(f"{_fmt(r['GBps'])} GB/s, {_fmt(r['TFLOPs'])} TFLOP/s")
                if "pct_peak_bw" in r:
                    notes.append(f"{_fmt(r['pct_peak_bw'], 2)}% of peak BW, {_fmt(r['pct_peak_fp32'], 2)}% of fp32 peak")
                notes.append(f"{r['index_mismatch']} index mismatches vs torch")
            if r.get("note"):
                notes.append(r["note"])
            if r["backend"].startswith("naive") and "scores_mib" in r:
                notes.append(f"score matrix alone {r['scores_mib']:.0f} MiB")
            lines.append(f"| cosine VQ | {r['device']} | {case} | {r['backend']} | {_fmt(r.get('seconds'))} | "
                         f"{_fmt(r.get('peak_mib'))} | {'; '.join(notes)} |")
        elif sec == "vq_memory_scaling":
            case = f"K={r['K']} d={r['d']}, N={r['N'][0]} -> {r['N'][1]}"
            peaks = " -> ".join(_fmt(p) for p in r["peak_mib"])
            notes = (f"{r['bytes_per_row']:.0f} B/row (4*d = {r['bytes_per_row_if_Nd']}, 4*K = {r['bytes_per_row_if_NK']})")
            t = " / ".join(_fmt(s) for s in r["seconds"])
            lines.append(f"| VQ memory vs N | {r['device']} | {case} | {r['backend']} | {t} | {peaks} | {notes} |")
        elif sec == "attention":
            case = f"{r['case']} L={r['L']} B={r['B']} H={r['H']} D={r['D']} {r['dtype']}"
            notes = [f"mask: dense {r['dense_mask_mib']:.0f} MiB / block {r['block_mask_mib'] * 1024:.0f} KiB, "
                     f"{r['sparsity_pct']:.0f}% blocks skipped"]
            if r.get("timing"):
                notes.append(r["timing"])
            if "compile_s" in r:
                notes.append(f"compile {r['compile_s']:.0f} s")
            if "max_abs_diff_vs_first" in r:
                notes.append(f"max |diff| vs sdpa {r['max_abs_diff_vs_first']:.1e}")
            if r.get("note"):
                notes.append(r["note"])
            lines.append(f"| attention fwd | {r['device']} | {case} | {r['backend']} | {_fmt(r.get('seconds'))} | "
                         f"{_fmt(r.get('peak_mib'))} | {'; '.join(notes)} |")
        elif sec == "not_measured":
            lines.append(f"| {r['what']} | - | - | - | - | - | not measured yet: {r['why']} |")
    return "\n".join(lines)


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return dict(cpu=cpu, cores=os.cpu_count(), threads=torch.get_num_threads(), torch=torch.__version__,
                python=platform.python_version(), cuda=torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                triton=_triton_version())


def _triton_version():
    try:
        import triton
        return triton.__version__
    except Exception:
        return None


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench.kernels", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="results/kernels.json")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--quick", action="store_true", help="small sizes, no compile, no landiff length")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        # CPU only: run the Triton kernel in its interpreter (for its memory figure). Triton reads
        # this when it is first imported, so it is set before anything (torch.compile too) imports it.
        os.environ.setdefault("TRITON_INTERPRET", "1")
    torch.set_num_threads(a.threads)
    t_start = time.perf_counter()
    N, K, d = (16384, 2048, 16) if a.quick else (262144, 2048, 16)
    rows = []
    rows += bench_vq_cpu(N, K, d, repeat=a.repeat)
    rows += bench_vq_scaling(K, d, Ns_torch=(N // 4, N), Ns_fused=(256, 1024) if a.quick else (2048, 8192))
    rows += bench_attention("cpu", a.quick, repeat=a.repeat)
    if torch.cuda.is_available() and triton_available():
        rows += bench_vq_cuda(N, K, d, repeat=a.repeat)
        rows += bench_attention("cuda", a.quick, repeat=a.repeat)
    else:
        why = "no CUDA device on this machine" if not torch.cuda.is_available() else "triton not installed"
        rows.append(dict(section="not_measured", what="cosine VQ, Triton vs torch on GPU", why=why))
        rows.append(dict(section="not_measured", what="attention on GPU", why=why))
    result = dict(date=datetime.datetime.now().isoformat(timespec="seconds"), machine=machine(),
                  command="python -m bench.kernels " + " ".join(argv if argv is not None else sys.argv[1:]),
                  total_seconds=time.perf_counter() - t_start, rows=rows)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(result, indent=1))
    m = result["machine"]
    print(f"# kernels bench, {result['date']}, {m['cpu']} ({m['cores']} cores, {m['threads']} torch threads), "
          f"torch {m['torch']}, triton {m['triton']}, GPU: {m['cuda'] or 'none'}")
    print(table(rows))
    print(f"\n{result['total_seconds']:.0f} s" + (f"; JSON: {a.out}" if a.out else ""))
    return result


if __name__ == "__main__":
    main()
