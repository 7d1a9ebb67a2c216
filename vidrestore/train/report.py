"""Figures of a training run (`vidrestore report RUN/train.jsonl`), in the report's style.

    losses.png       every step's loss terms (faint) and their running mean, against step
    validation.png   validation (and generalisation) PSNR, SSIM, identity and LPIPS of the
                     EMA weights against step, with passthrough's level dashed
    val_grid.png     the last validation strip: degraded | restored | clean, per face
    gen_grid.png     the same for the generalisation set, when the run has one
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from ..errors import InputError
from ..report import STYLE, _image_axes, _label, _save


def is_training_log(path: Path) -> bool:
    try:
        with path.open() as f:
            first = json.loads(f.readline() or "{}")
    except (OSError, ValueError):
        return False
    return first.get("kind") == "start" and "train" in first


def _records(path: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable training log ({exc})") from exc


def write_training_report(log_path: str | Path, out_dir: str | Path) -> list[Path]:
    log_path, out = Path(log_path), Path(out_dir)
    records = _records(log_path)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with matplotlib.rc_context(STYLE):
        written.append(_save(plot_losses(records), out / "losses.png"))
        evals = [r for r in records if r.get("kind") in ("val", "gen")]
        if evals:
            written.append(_save(plot_validation(evals), out / "validation.png"))
        for kind in ("val", "gen"):
            strips = sorted((log_path.parent / kind).glob("step_*.png"))
            if strips:
                written.append(_save(strip_grid(strips[-1], kind), out / f"{kind}_grid.png"))
    return written


def _running_mean(values: np.ndarray, window: int) -> np.ndarray:
    ok = ~np.isnan(values)
    filled = np.where(ok, values, 0.0)
    kernel = np.ones(window)
    num = np.convolve(filled, kernel, "same")
    den = np.convolve(ok.astype(float), kernel, "same")
    return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def plot_losses(records: list[dict[str, Any]]) -> Figure:
    steps = [r for r in records if r.get("kind") == "step"]
    terms = [k for k in ("total", "rec", "identity", "lpips", "temporal")
             if any(r.get(k) is not None for r in steps)]
    fig = Figure(figsize=(3.2 * max(1, len(terms)), 2.6), layout="constrained")
    axes = fig.subplots(1, max(1, len(terms)), squeeze=False)[0]
    x = np.array([r["step"] for r in steps])
    for ax, term in zip(axes, terms, strict=False):
        y = np.array([np.nan if r.get(term) is None else r[term] for r in steps], float)
        ok = ~np.isnan(y)
        ax.plot(x[ok], y[ok], color="0.75", linewidth=0.4)
        window = max(1, min(100, len(x) // 20 or 1))
        ax.plot(x, _running_mean(y, window), color="C0", label=f"mean of {window}")
        ax.set_yscale("log")
        _label(ax, f"{term} loss", "step", term)
        ax.legend()
    return fig


def plot_validation(evals: list[dict[str, Any]]) -> Figure:
    metrics = [m for m in ("psnr", "ssim", "identity", "lpips")
               if any(r.get(f"{m}_model") is not None for r in evals)]
    fig = Figure(figsize=(3.0 * len(metrics), 2.6), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=True):
        for kind, colour in (("val", "C0"), ("gen", "C1")):
            rows = [r for r in evals if r["kind"] == kind and r.get(f"{metric}_model") is not None]
            if not rows:
                continue
            x = [r["step"] for r in rows]
            ax.plot(x, [r[f"{metric}_model"] for r in rows], color=colour, marker="o",
                    markersize=3, label=f"{kind}: model")
            ax.axhline(rows[-1][f"{metric}_passthrough"], color=colour, linestyle="--",
                       linewidth=0.8, label=f"{kind}: passthrough")
        _label(ax, metric, "step", metric)
        ax.legend()
    return fig


def strip_grid(path: Path, kind: str) -> Figure:
    import cv2

    image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    rows = max(1, round(image.shape[0] / (image.shape[1] / 3)))
    height = image.shape[0] // rows
    fig = Figure(figsize=(6, 2 * rows), layout="constrained")
    axes = fig.subplots(rows, 3, squeeze=False)
    third = image.shape[1] // 3
    for r in range(rows):
        for c, title in enumerate(("degraded", "restored", "clean")):
            axes[r, c].imshow(image[r * height:(r + 1) * height, c * third:(c + 1) * third])
            _image_axes(axes[r, c], title if r == 0 else "")
    fig.suptitle(f"{'validation' if kind == 'val' else 'generalisation'} faces, "
                 f"{path.stem.replace('_', ' ')}".upper())
    return fig
