"""The loss curve (and validation PSNR) of a training run, as a PNG for the docs.

    python bench/train_curve.py training/demo_real/log.jsonl -o docs/demo_loss.png
    python bench/train_curve.py training/demo_real*/log.jsonl -o docs/demo_loss.png

Reads the JSONL log ``resshift train`` writes (one record per ``log_every`` steps, plus
validation records); several logs are the stages of one model, drawn one after the
other on a common step axis with each stage's start marked. Plots the training L2 loss
(raw and a moving average, log scale) and, on a second axis, the validation PSNR gain
of the EMA weights over bicubic. Needs matplotlib (the ``train`` extra).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def read_log(path: Path) -> tuple[list[dict], list[dict]]:
    """(loss records, validation records) of a log.jsonl."""
    losses, vals = [], []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        (vals if "val" in rec else losses).append(rec)
    return losses, vals


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    if len(values) < window:
        return values
    kernel = np.ones(window) / window
    return np.convolve(values, kernel, mode="valid")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log", type=Path, nargs="+", help="log.jsonl files, in stage order")
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--window", type=int, default=25, help="moving-average window (records)")
    args = ap.parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses, vals, starts, seconds = [], [], [], 0.0
    for path in args.log:
        stage_losses, stage_vals = read_log(path)
        if not stage_losses:
            print(f"{path} holds no loss records", file=sys.stderr)
            return 2
        offset = losses[-1]["step"] if losses else 0
        starts.append((offset, path.parent.name))
        losses += [{**r, "step": r["step"] + offset} for r in stage_losses]
        vals += [{**v, "step": v["step"] + offset} for v in stage_vals]
        seconds += stage_losses[-1].get("elapsed_s", 0)
    steps = np.array([r["step"] for r in losses])
    loss = np.array([r["loss"] for r in losses])
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    ax.plot(steps, loss, color="#9ecae1", lw=0.6, label="L2 loss (per logged step)")
    avg = moving_average(loss, args.window)
    ax.plot(steps[len(steps) - len(avg):], avg, color="#1f77b4", lw=1.8,
            label=f"moving average ({args.window} records)")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("L2 loss")
    if len(starts) > 1:
        for offset, name in starts:
            ax.axvline(offset, color="#bbbbbb", lw=0.8, ls=":")
            ax.text(offset, 1.0, f" {name}", transform=ax.get_xaxis_transform(), fontsize=7,
                    rotation=90, va="top", color="#555555")
    title = args.log[0].parent.name if len(starts) == 1 else f"{len(starts)} stages"
    ax.set_title(f"{title}: {int(steps[-1])} steps, {seconds / 3600:.2f} h of training")
    if vals:
        ax2 = ax.twinx()
        vs = [v["step"] for v in vals]
        gain = [v["val"]["model"]["psnr"] - v["val"]["bicubic"]["psnr"] for v in vals]
        ax2.plot(vs, gain, "o-", color="#d62728", ms=3,
                 label="validation: model - bicubic PSNR (each stage's own degradation mix)")
        ax2.axhline(0.0, color="#7f7f7f", lw=0.8, ls="--")
        ax2.set_ylabel("PSNR gain over bicubic, dB")
        lines = ax.get_legend_handles_labels()
        more = ax2.get_legend_handles_labels()
        ax.legend(lines[0] + more[0], lines[1] + more[1], loc="lower left", fontsize=8)
    else:
        ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"wrote {args.out} ({len(losses)} loss records, {len(vals)} validations)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
