"""Validation curves of several training runs on one plot, against wall-clock minutes or steps.

``python -m bench.curves runs/a runs/b [--label A B] [--x minutes|steps] [--offset 10 0] -o docs/curves.png``

Reads each run's ``log.jsonl`` (``semcodec train``): every ``val_psnr_<clip>`` series, placed at
the wall time of the training row logged at the same step (a resumed run continues its clock
from the rows before the resume). ``--offset`` shifts a run's minutes, e.g. for a run started
from another run's checkpoint. One panel per validation clip.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def read_curves(run: Path) -> dict[str, list[tuple[int, float, float]]]:
    """``{clip: [(step, minutes, psnr), ...]}``."""
    rows = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines() if l.strip()]
    minutes, clock, last = {}, 0.0, 0.0
    for r in rows:
        if "elapsed_s" in r:
            if r["elapsed_s"] < last:          # a resume restarts the process clock
                clock += last
            last = r["elapsed_s"]
            minutes[r["step"]] = (clock + last) / 60
    out: dict[str, list] = {}
    for r in rows:
        for k, v in r.items():
            if k.startswith("val_psnr_"):
                t = minutes.get(r["step"], max((m for s, m in minutes.items() if s <= r["step"]), default=0.0))
                out.setdefault(k[9:], []).append((r["step"], t, v))
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.curves", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+")
    p.add_argument("--label", nargs="+")
    p.add_argument("--offset", nargs="+", type=float, help="minutes added to each run's clock")
    p.add_argument("--x", choices=["minutes", "steps"], default="minutes")
    p.add_argument("--title", default="validation PSNR (first group of each clip)")
    p.add_argument("-o", "--out", required=True)
    a = p.parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    labels = a.label or [Path(r).name for r in a.runs]
    offsets = a.offset or [0.0] * len(a.runs)
    curves = [read_curves(Path(r)) for r in a.runs]
    clips = sorted({c for cv in curves for c in cv})
    fig, axes = plt.subplots(1, len(clips), figsize=(6 * len(clips), 4), squeeze=False)
    for ax, clip in zip(axes[0], clips):
        for cv, label, off in zip(curves, labels, offsets):
            pts = cv.get(clip, [])
            xs = [s if a.x == "steps" else m + off for s, m, _ in pts]
            ax.plot(xs, [v for *_, v in pts], "o-", markersize=3, label=label)
        ax.set_title(clip)
        ax.set_xlabel("wall-clock minutes" if a.x == "minutes" else "step")
        ax.set_ylabel("PSNR (dB)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(a.title)
    fig.tight_layout()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=90)
    print(f"-> {a.out}")


if __name__ == "__main__":
    main()
