"""Start-up cost of the command line: wall time and peak memory (RSS) of ``semcodec --help``,
``semcodec info tokens.bin``, ``import semcodec`` and loading the shipped model, each in a fresh
interpreter.

    python -m bench.startup                      # this checkout
    python -m bench.startup --tree /work/main    # another checkout (e.g. before a change), same interpreter

Each command runs ``--repeats`` times (after one warm-up run, so the file cache is warm); the
median wall time and the largest peak RSS (``ru_maxrss`` of the child) are printed, and whether the
command imported torch. The token stream for ``info`` is written once by the checkout under test.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# each probe: a script run by `python -c`; it reports whether torch got imported
PROBES = {
    "semcodec --help": "from semcodec.cli import main\nmain(['--help'])",
    "semcodec info tokens.bin": "from semcodec.cli import main\nmain(['info', {stream!r}])",
    "import semcodec": "import semcodec",
    # the model as `semcodec encode` loads it: torch, then s128 (built on the meta device here)
    "load s128 (Codec.load)": ("import torch\ntorch.set_num_threads(1)\nfrom semcodec.codec import Codec\n"
                               "Codec.load('s128', 'cpu')"),
}
TAIL = "\nimport sys\nsys.stderr.write('TORCH=%d\\n' % ('torch' in sys.modules))"


def _run(code: str, tree: Path) -> tuple[float, int, bool]:
    """(wall seconds, peak RSS in MB, torch imported) of one fresh interpreter running ``code``."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code + TAIL], env=env, cwd=tree, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(f"{code!r} failed: {r.stderr[-500:]}")
    # the largest child so far: a probe process runs one command only (measure() starts one per command)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, peak // 1024, "TORCH=1" in r.stderr


def measure(tree: Path, repeats: int, stream: str) -> dict:
    out = {}
    for name, code in PROBES.items():
        code = code.format(stream=stream)
        # a separate measuring process per probe: RUSAGE_CHILDREN's peak only grows
        r = subprocess.run([sys.executable, "-m", "bench.startup", "--probe", code, "--tree", str(tree),
                            "--repeats", str(repeats)], cwd=ROOT, capture_output=True, text=True,
                           env=dict(os.environ, PYTHONPATH=str(ROOT)))
        if r.returncode != 0:
            raise RuntimeError(r.stderr[-1000:])
        out[name] = json.loads(r.stdout)
    return out


def probe(code: str, tree: Path, repeats: int) -> dict:
    _run(code, tree)                                          # warm the file cache
    runs = [_run(code, tree) for _ in range(repeats)]
    return {"seconds": statistics.median(r[0] for r in runs), "rss_mb": max(r[1] for r in runs),
            "imports_torch": any(r[2] for r in runs)}


def make_stream(tree: Path, path: Path) -> None:
    code = ("import numpy as np, torch\nimport semcodec\nfrom semcodec.codec import Codec\n"
            "from semcodec.checkpoint import Checkpoint\n"
            "cfg = semcodec.get_preset('tiny')\ntorch.manual_seed(0)\n"
            f"m = semcodec.VideoTokenizer(cfg)\nsemcodec.save_checkpoint(m, cfg, {str(path) + '.model'!r})\n"
            f"codec = Codec.load({str(path) + '.model'!r}, 'cpu')\n"
            "from semcodec.video import VideoWriter\n"
            f"w = VideoWriter({str(path) + '.mp4'!r}, 10, (32, 48))\n"
            "[w.write(np.full((32, 48, 3), 10 * i, np.uint8)) for i in range(20)]\nw.close()\n"
            f"codec.encode_file({str(path) + '.mp4'!r}, {str(path)!r})")
    subprocess.run([sys.executable, "-c", code], cwd=tree, env=dict(os.environ, PYTHONPATH=str(tree)), check=True,
                   capture_output=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__.split("\n\n")[0])
    p.add_argument("--tree", type=Path, default=ROOT, help="checkout to measure [default: this one]")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--probe", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.probe:
        print(json.dumps(probe(a.probe, a.tree.resolve(), a.repeats)))
        return
    with tempfile.TemporaryDirectory() as d:
        stream = Path(d) / "tokens.bin"
        make_stream(a.tree.resolve(), stream)
        res = measure(a.tree.resolve(), a.repeats, str(stream))
    if a.json:
        print(json.dumps(res, indent=2))
        return
    print(f"start-up of {a.tree.resolve()} ({a.repeats} runs, median wall time, peak RSS):")
    for name, r in res.items():
        print(f"  {name:26s} {r['seconds']:6.3f} s  {r['rss_mb']:5d} MB  "
              f"torch imported: {'yes' if r['imports_torch'] else 'no'}")


if __name__ == "__main__":
    main()
