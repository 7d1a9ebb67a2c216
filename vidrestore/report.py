"""Plots and comparison grids from a run's JSON Lines log (and, optionally, an eval result).

    identity.png   identity cosine of each face track over time, with the encoder's threshold
    quality.png    per track over time: face PSNR and SSIM (output against the upscaled
                   background), face sharpness (output and upscaled), LPIPS when measured
    timings.png    milliseconds per frame of each pipeline stage, and of the face path's parts
    eval.png       per frame from `vidrestore eval --json`: PSNR, SSIM, LPIPS, flicker, with
                   the targets
    grid_NNNNNN.png  one per chosen frame: input, output and reference (when given) side by
                   side, and below them each face, zoomed, from the logged boxes

Figures follow one publication style (`STYLE`): 500 DPI, grid on, bold upper-case titles
and axis labels. Everything is drawn on `matplotlib.figure.Figure` objects with the Agg
canvas, so no global pyplot state is touched and no display is needed.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .errors import InputError
from .io.decode import read_frames
from .io.probe import probe

log = logging.getLogger(__name__)

DPI = 500
STYLE = {
    "savefig.dpi": DPI, "figure.dpi": 100, "font.size": 8, "axes.titlesize": 9,
    "axes.titleweight": "bold", "axes.labelweight": "bold", "axes.labelsize": 8,
    "figure.titleweight": "bold", "figure.titlesize": 10, "axes.grid": True,
    "grid.alpha": 0.35, "grid.linestyle": "-", "grid.linewidth": 0.5, "lines.linewidth": 1.1,
    "legend.fontsize": 7, "legend.frameon": False, "axes.spines.top": False,
    "axes.spines.right": False, "image.interpolation": "nearest",
}
PIPELINE_STAGES = ("decode", "upload", "preprocess", "background", "faces", "download", "encode")
FACE_ZOOM_MARGIN = 1.25  # crop side / the face box's longer side
DEFAULT_GRID_FRAMES = 3


@dataclass
class RunLogData:
    """A log read back: the frame records in order and the summary (None if cut short)."""

    path: Path
    frames: list[dict[str, Any]]
    summary: dict[str, Any] | None


def read_log(path: str | os.PathLike[str]) -> RunLogData:
    path = Path(path)
    frames, summary = [], None
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot read the log ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a vidrestore log (not text; the log is OUT.jsonl, "
                         "written beside each output)") from exc
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(_not_json_lines(path, text, number, exc)) from exc
        if not isinstance(record, dict):
            raise InputError(f"{path}: line {number} is not a JSON object; is this a "
                             "vidrestore log (OUT.jsonl)?")
        if "summary" in record:
            summary = record["summary"]
        elif "frame" in record:
            frames.append(record)
    if not frames:
        raise InputError(f"{path}: no frame records; is this a vidrestore log (OUT.jsonl)?")
    return RunLogData(path, frames, summary)


def _not_json_lines(path: Path, text: str, number: int, exc: json.JSONDecodeError) -> str:
    try:
        json.loads(text)
    except ValueError:
        return f"{path}: line {number} is not JSON ({exc.msg}); is this a vidrestore log?"
    return (f"{path}: is one (pretty-printed) JSON document, not a log of one JSON object a "
            "line; the log is OUT.jsonl (an eval --json file goes to --eval)")


def write_report(log_path: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                 input_path: str | os.PathLike[str] | None = None,
                 output_path: str | os.PathLike[str] | None = None,
                 reference: str | os.PathLike[str] | None = None,
                 eval_path: str | os.PathLike[str] | None = None,
                 grid_frames: Iterable[int] | None = None) -> list[Path]:
    """Write every figure the log (and eval file) allows into `out_dir`; return their paths.

    Input and output default to the paths the log's summary names; grids are skipped, with
    a warning, when those files cannot be found."""
    data = read_log(log_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with matplotlib.rc_context(STYLE):
        for name, draw in (("identity", plot_identity), ("quality", plot_quality),
                           ("timings", plot_timings)):
            figure = draw(data)
            if figure is not None:
                written.append(_save(figure, out / f"{name}.png"))
        if eval_path is not None:
            written.append(_save(plot_eval(_read_eval(eval_path)), out / "eval.png"))
        written += _grids(data, out, input_path, output_path, reference, grid_frames)
    return written


# --- plots over time --------------------------------------------------------------------------


def _times(frames: list[dict[str, Any]]) -> tuple[np.ndarray, str]:
    """The x axis: seconds for a video, the frame index when all times are equal."""
    times = np.array([f.get("time", 0.0) for f in frames], dtype=np.float64)
    if len(frames) > 1 and np.ptp(times) > 0:
        return times, "time (s)"
    return np.array([f["frame"] for f in frames], dtype=np.float64), "frame"


def _track_series(data: RunLogData, value) -> dict[int, tuple[list[float], list[float]]]:
    """track id -> (x, y) of `value(face)` over the frames where it is not None."""
    xs, _ = _times(data.frames)
    series: dict[int, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    for x, record in zip(xs, data.frames, strict=True):
        for face in record.get("faces") or []:
            y = value(face)
            if y is not None and math.isfinite(y):
                series[face["track"]][0].append(float(x))
                series[face["track"]][1].append(float(y))
    return dict(sorted(series.items()))


def plot_identity(data: RunLogData) -> Figure | None:
    series = _track_series(data, lambda f: (f.get("identity") or {}).get("cosine"))
    if not series:
        log.warning("%s: no identity scores in the log; identity.png not drawn", data.path)
        return None
    figure = Figure(figsize=(6.5, 3.2), layout="constrained")
    ax = figure.add_subplot()
    for track, (x, y) in series.items():
        ax.plot(x, y, **_marks(x), label=f"track {track}")
    threshold, encoder = _identity_threshold(data)
    if threshold is not None:
        ax.axhline(threshold, color="0.3", linestyle="--", linewidth=0.9,
                   label=f"threshold {threshold:g}")
    _label(ax, f"identity cosine per track ({encoder})", _times(data.frames)[1], "cosine")
    low = min([min(y) for _, y in series.values()] + ([threshold] if threshold else []))
    ax.set_ylim(low - 0.1 * (1.0 - low) - 0.01, 1.005)
    ax.legend(loc="best", ncols=min(4, len(series) + 1))
    _single_frame_axis(ax, len(data.frames))
    return figure


def _identity_threshold(data: RunLogData) -> tuple[float | None, str]:
    for record in data.frames:
        for face in record.get("faces") or []:
            identity = face.get("identity") or {}
            if identity.get("threshold") is not None:
                return float(identity["threshold"]), str(identity.get("encoder", "identity"))
    return None, "identity"


def plot_quality(data: RunLogData) -> Figure | None:
    panels = (
        ("face psnr (output vs upscaled)", "dB", lambda f: f.get("psnr")),
        ("face ssim (output vs upscaled)", "ssim", lambda f: f.get("ssim")),
        ("face sharpness", "laplacian variance",
         lambda f: (f.get("sharpness") or {}).get("output")),
        ("face lpips (output vs upscaled)", "lpips", lambda f: f.get("lpips")),
    )
    drawn = [(title, unit, _track_series(data, value)) for title, unit, value in panels]
    if not any(series for _, _, series in drawn):
        log.warning("%s: no face figures in the log; quality.png not drawn", data.path)
        return None
    figure = Figure(figsize=(7.5, 5.2), layout="constrained")
    axes = figure.subplots(2, 2, sharex=True)
    x_label = _times(data.frames)[1]
    for n, (ax, (title, unit, series)) in enumerate(zip(axes.flat, drawn, strict=True)):
        for track, (x, y) in series.items():
            ax.plot(x, y, **_marks(x), label=f"track {track}"
                    + (" output" if title == "face sharpness" else ""))
        if title == "face sharpness":
            upscaled = _track_series(data, lambda f: (f.get("sharpness") or {}).get("upscaled"))
            for track, (x, y) in upscaled.items():
                ax.plot(x, y, **_marks(x), linestyle="--", alpha=0.7,
                        label=f"track {track} upscaled")
        if not series:
            _note(ax, _lpips_reason(data) if "lpips" in title else "not measured")
        elif len(series) > 1 or title == "face sharpness":
            ax.legend(loc="best")
        _label(ax, title, x_label if n >= 2 else "", unit)  # shared x: label the lower row
    _single_frame_axis(axes, len(data.frames))
    figure.suptitle("FACE QUALITY PER TRACK")
    return figure


def _lpips_reason(data: RunLogData) -> str:
    for record in data.frames:
        for face in record.get("faces") or []:
            if face.get("lpips_reason"):
                return str(face["lpips_reason"])
    return "not measured"


def plot_timings(data: RunLogData) -> Figure:
    x, x_label = _times(data.frames)
    names = [n for n in PIPELINE_STAGES if any(n in f.get("timings_ms", {}) for f in data.frames)]
    parts = sorted({k for f in data.frames for k in f.get("timings_ms", {})
                    if k.startswith("faces.")})
    rows = 2 if parts else 1
    figure = Figure(figsize=(7.5, 2.8 * rows), layout="constrained")
    axes = np.atleast_1d(figure.subplots(rows, 1, sharex=True))
    for ax, keys, title in ((axes[0], names, "pipeline stages"),
                            *(((axes[1], parts, "face path parts"),) if parts else ())):
        for key in keys:
            y = np.array([f.get("timings_ms", {}).get(key, np.nan) for f in data.frames], float)
            ax.plot(x, y, **_marks(x), label=key)
        ax.set_yscale("log")
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5))
        _label(ax, f"{title}: time per frame", x_label if ax is axes[-1] else "", "ms (log)")
    _single_frame_axis(axes, len(data.frames))
    return figure


def plot_eval(result: dict[str, Any]) -> Figure:
    """Per-frame PSNR, SSIM, LPIPS and flicker of an eval result, with the targets."""
    frames = result["frames"]
    x = np.arange(len(frames))
    figure = Figure(figsize=(7.5, 5.2), layout="constrained")
    axes = figure.subplots(2, 2, sharex=True)
    panels = (("psnr", "psnr against the reference", "dB"),
              ("ssim", "ssim against the reference", "ssim"),
              ("lpips", "lpips against the reference", "lpips"))
    for n, (ax, (key, title, unit)) in enumerate(zip(axes.flat, panels, strict=False)):
        y = np.array([np.nan if f.get(key) is None else f[key] for f in frames], float)
        if np.isfinite(y).any():
            ax.plot(x, y, **_marks(x), label="restored")
            target = result["checks"][key]["target"]
            ax.axhline(float(target.split()[1]), color="0.3", linestyle="--", linewidth=0.9,
                       label=f"target {target}")
            ax.legend(loc="best")
        else:
            _note(ax, result["checks"][key].get("reason") or "not measured")
        _label(ax, title, "frame" if n >= 2 else "", unit)
    ax = axes[1, 1]
    flicker = [f.get("flicker") for f in frames]
    if any(flicker):
        for key, style in (("restored", "-"), ("reference", "--")):
            y = np.array([np.nan if f is None or f[key] is None else f[key] for f in flicker])
            ax.plot(x, y, **_marks(x), linestyle=style, label=key)
        ax.legend(loc="best")
    else:
        _note(ax, "no flicker: still images")
    _label(ax, "flicker (warping error)", "frame", "rms, 8-bit levels")
    _single_frame_axis(axes, len(frames))
    verdict = {True: "pass", False: "fail", None: "nothing measured"}[result.get("pass")]
    figure.suptitle(f"EVALUATION AGAINST THE REFERENCE: {verdict.upper()}")
    return figure


def _read_eval(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        result = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the eval result ({exc})") from exc
    if "frames" not in result or "checks" not in result:
        raise InputError(f"{path}: not a `vidrestore eval --json` file")
    return result


# --- comparison grids -----------------------------------------------------------------------


def choose_grid_frames(data: RunLogData, count: int = DEFAULT_GRID_FRAMES) -> list[int]:
    """The first frame, the frame whose worst face identity is lowest, and the last;
    then evenly spaced ones up to `count`."""
    indices = [f["frame"] for f in data.frames]
    chosen = [indices[0]]
    scored = [(min((face.get("identity") or {}).get("cosine", 2.0)
                   for face in f.get("faces") or [{}]), f["frame"]) for f in data.frames]
    scored = [s for s in scored if s[0] <= 1.0]
    if scored:
        chosen.append(min(scored)[1])
    chosen.append(indices[-1])
    for i in np.linspace(0, len(indices) - 1, count).round().astype(int):
        chosen.append(indices[i])
    out: list[int] = []
    for index in chosen:
        if index not in out:
            out.append(index)
    return sorted(out[:count])


def _grids(data: RunLogData, out: Path, input_path, output_path, reference,
           grid_frames: Iterable[int] | None) -> list[Path]:
    summary = data.summary or {}
    sources = {"input": input_path or summary.get("input"),
               "output": output_path or summary.get("output")}
    missing = [name for name, path in sources.items() if not path or not Path(path).is_file()]
    if missing:
        log.warning("comparison grids not drawn: the %s file is not at hand (give it with "
                    "--%s)", " and ".join(missing), " / --".join(missing))
        return []
    if reference is not None:
        sources["reference"] = reference
    wanted = sorted(set(grid_frames) if grid_frames else choose_grid_frames(data))
    images = {name: _frames_at(Path(path), wanted) for name, path in sources.items()}
    records = {f["frame"]: f for f in data.frames}
    written = []
    for index in wanted:
        if index not in records or any(index not in frames for frames in images.values()):
            log.warning("frame %d is not in every file; its grid is skipped", index)
            continue
        figure = comparison_grid({n: frames[index] for n, frames in images.items()},
                                 records[index])
        written.append(_save(figure, out / f"grid_{index:06d}.png"))
    return written


def _frames_at(path: Path, indices: list[int]) -> dict[int, np.ndarray]:
    """The frames of `path` at `indices` (uint8 RGB), decoding up to the last one only."""
    wanted, out = set(indices), {}
    for frame in read_frames(probe(path)):
        if frame.index in wanted:
            out[frame.index] = frame.image
        if frame.index >= max(indices):
            break
    return out


def comparison_grid(images: dict[str, np.ndarray], record: dict[str, Any]) -> Figure:
    """Columns: the images (input, output, reference); rows: the whole frame, then each
    logged face cropped square around its box and zoomed (pixels drawn as they are)."""
    faces = [f for f in record.get("faces") or [] if f.get("box")]
    names = list(images)
    base_width = images["input"].shape[1]
    rows = 1 + len(faces)
    aspect = images["input"].shape[0] / images["input"].shape[1]
    figure = Figure(figsize=(2.6 * len(names), 2.6 * aspect + 2.4 * len(faces) + 0.5),
                    layout="constrained")
    grid = figure.add_gridspec(rows, len(names), height_ratios=[2.6 * aspect] + [2.4] * len(faces))
    for column, name in enumerate(names):
        image = images[name]
        ax = figure.add_subplot(grid[0, column])
        ax.imshow(image)
        _image_axes(ax, f"{name} ({image.shape[1]} × {image.shape[0]})")
        for row, face in enumerate(faces, start=1):
            scale = image.shape[1] / base_width
            ax = figure.add_subplot(grid[row, column])
            ax.imshow(crop_square(image, np.array(face["box"], float) * scale, FACE_ZOOM_MARGIN))
            _image_axes(ax, f"{name}: track {face['track']}{_face_note(face, name)}")
    time_s = record.get("time")
    figure.suptitle(f"FRAME {record['frame']}" + (f" (T = {time_s:.2f} S)" if time_s else ""))
    return figure


def _face_note(face: dict[str, Any], column: str) -> str:
    identity = face.get("identity") or {}
    if column == "output" and identity.get("cosine") is not None:
        return f", identity {identity['cosine']:.3f}"
    return ""


def crop_square(image: np.ndarray, box: np.ndarray, margin: float) -> np.ndarray:
    """The square of side `margin` x the box's longer side around the box's centre, moved
    inside the image where it would cross an edge (and no larger than the image)."""
    x1, y1, x2, y2 = box
    height, width = image.shape[:2]
    side = max(2, int(round(max(x2 - x1, y2 - y1) * margin)))
    side = min(side, height, width)
    left = int(round((x1 + x2) / 2 - side / 2))
    top = int(round((y1 + y2) / 2 - side / 2))
    left = min(max(left, 0), width - side)
    top = min(max(top, 0), height - side)
    return image[top:top + side, left:left + side]


# --- style helpers ----------------------------------------------------------------------------


def _label(ax: Axes, title: str, x_label: str, y_label: str) -> None:
    ax.set_title(title.upper())
    ax.set_xlabel(x_label.upper())
    ax.set_ylabel(y_label.upper())


def _image_axes(ax: Axes, title: str) -> None:
    ax.set_title(title.upper(), fontsize=7)
    ax.set_axis_off()  # no ticks, grid or frame over a picture


def _marks(x) -> dict[str, Any]:
    """Dots on the line where there are few points (a still image is one)."""
    return {"marker": "o", "markersize": 3} if len(x) < 30 else {}


def _note(ax: Axes, text: str) -> None:
    """A grey note in the middle of an empty panel; paths shortened to their file names."""
    words = [Path(w).name if "/" in w else w for w in text.split()]
    ax.text(0.5, 0.5, _wrap(" ".join(words).upper(), 38), transform=ax.transAxes,
            ha="center", va="center", fontsize=6.5, fontweight="bold", color="0.35")
    ax.set_yticks([])


def _single_frame_axis(axes, frames: int) -> None:
    """One frame (a still image): one tick, not a stretch of fractional frame numbers."""
    if frames == 1:
        for ax in np.atleast_1d(axes).flat:
            ax.set_xticks([0])
            ax.set_xlim(-1, 1)


def _wrap(text: str, width: int) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join([*lines, line])


def _save(figure: Figure, path: Path) -> Path:
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=DPI)
    log.info("wrote %s", path)
    return path
