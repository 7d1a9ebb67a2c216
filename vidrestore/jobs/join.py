"""Joining a file's restored segments into OUT and one log that reads as one run.

The video is stream-copied segment after segment, and the source's audio and subtitles
are copied once (`io.segments.join_segments`). Each segment's tracker numbered its own
tracks; they are matched to the previous segment's in the overlap (a segment's warm-up
frames are the previous segment's last frames: boxes of the same person there overlap)
and renumbered, so one person keeps one track id across the joins. The joined summary
adds up the segments' figures, and `segments` says where each ran and what it cost.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..config import RunConfig
from ..destination import check_destination, commit, partial_path, remove_stale_partials
from ..errors import EncodeError, OutputError
from ..metrics.summary import FaceSummary
from .finished import finished_summary

MATCH_IOU = 0.5  # mean box IoU over the overlap above which two tracks are one person


def join_file(source: Path, output: Path, log: Path, config: RunConfig,
              segments: Sequence[Path]) -> dict[str, Any]:
    """Write OUT and its log from the finished `segments` (each with its log beside it),
    atomically; remove the segments' folder; return the joined summary, whose `wall_s` is
    the segments' times added up plus the join's (the work, wherever it ran)."""
    from ..io.plan import plan_output
    from ..io.probe import probe
    from ..io.segments import join_segments

    info = probe(source)
    check_destination(source, output, overwrite=False)
    plan = plan_output(info, output, config.scale, config.encode)
    summaries, records = [], []
    for path in segments:
        summary = finished_summary(path, path.with_name(path.name + ".jsonl"))
        if summary is None:
            raise OutputError(f"{path}: segment is not finished; cannot join {output}")
        summaries.append(summary)
        records.append(_frame_records(path.with_name(path.name + ".jsonl")))
    renumber_tracks(records, [s["segment"]["warmup"] for s in summaries])
    remove_stale_partials(output.parent)
    partial, log_partial = partial_path(output), partial_path(log)
    joined_at = time.perf_counter()
    try:
        join_segments(info, plan, config.encode, segments, partial)
        join_s = time.perf_counter() - joined_at
        wall_s = sum(s["wall_s"] for s in summaries) + join_s
        summary = _joined_summary(info, source, output, plan, summaries, records, wall_s,
                                  join_s)
        with open(log_partial, "w") as file:
            for segment_records in records:
                for record in segment_records:
                    file.write(json.dumps(record) + "\n")
            file.write(json.dumps({"summary": summary}) + "\n")
        commit(partial, output, overwrite=False)
        try:
            commit(log_partial, log, overwrite=False)
        except BaseException:
            output.unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise EncodeError(f"{output}: joining the segments failed ({exc})") from exc
    finally:
        partial.unlink(missing_ok=True)
        log_partial.unlink(missing_ok=True)
    shutil.rmtree(segments[0].parent, ignore_errors=True)
    return summary


def _frame_records(log: Path) -> list[dict[str, Any]]:
    lines = log.read_text().splitlines()
    return [json.loads(line) for line in lines[:-1]]


def renumber_tracks(records: list[list[dict[str, Any]]],
                    warmups: list[list[dict[str, Any]]]) -> None:
    """Give the segments' tracks one numbering, in place: segment 0 keeps its ids; a track
    of a later segment takes the id of the previous segment's track its warm-up boxes
    overlap most (mean IoU >= MATCH_IOU, one to one), or a new id."""
    next_id = 0
    for n, segment in enumerate(records):
        local = sorted({face["track"] for r in segment for face in r.get("faces", [])}
                       | {face["track"] for r in warmups[n] for face in r.get("faces", [])})
        mapping = _match(warmups[n], records[n - 1]) if n else {}
        for track in local:
            if track not in mapping:
                mapping[track] = next_id
                next_id += 1
            next_id = max(next_id, mapping[track] + 1)
        for record in segment:
            for face in record.get("faces", []):
                face["track"] = mapping[face["track"]]
        for record in warmups[n]:
            for face in record.get("faces", []):
                face["track"] = mapping[face["track"]]


def _match(warmup: list[dict[str, Any]], previous: list[dict[str, Any]]) -> dict[int, int]:
    """This segment's local track id -> the previous segment's (already renumbered) id."""
    from scipy.optimize import linear_sum_assignment

    before = {r["frame"]: r.get("faces", []) for r in previous}
    sums: dict[tuple[int, int], float] = defaultdict(float)
    counts: dict[tuple[int, int], int] = defaultdict(int)
    for record in warmup:
        theirs = before.get(record["frame"], [])
        for mine in record.get("faces", []):
            for other in theirs:
                pair = (mine["track"], other["track"])
                sums[pair] += _iou(mine["box"], other["box"])
                counts[pair] += 1
    if not sums:
        return {}
    mine_ids = sorted({a for a, _ in sums})
    their_ids = sorted({b for _, b in sums})
    score = np.zeros((len(mine_ids), len(their_ids)))
    for (a, b), total in sums.items():
        score[mine_ids.index(a), their_ids.index(b)] = total / counts[(a, b)]
    rows, cols = linear_sum_assignment(-score)
    return {mine_ids[r]: their_ids[c] for r, c in zip(rows, cols, strict=True)
            if score[r, c] >= MATCH_IOU}


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _joined_summary(info, source: Path, output: Path, plan, summaries: list[dict[str, Any]],
                    records: list[list[dict[str, Any]]], wall_s: float,
                    join_s: float) -> dict[str, Any]:
    first = summaries[0]
    frames = sum(s["frames_out"] for s in summaries)
    faces = FaceSummary()
    for segment in records:
        for record in segment:
            faces.add(record)
    failures: dict[str, dict[str, Any]] = {}
    fallbacks: dict[str, int] = defaultdict(int)
    stage_ms: dict[str, float] = defaultdict(float)
    warnings: list[str] = list(plan.warnings)
    for s in summaries:
        for f in s.get("failures") or []:
            merged = failures.setdefault(f["error"], {**f, "count": 0})
            merged["count"] += f["count"]
            merged["first_frame"] = min(merged["first_frame"], f["first_frame"])
        for f in s.get("fallbacks") or []:
            fallbacks[f["what"]] += f["count"]
        for name, ms in (s.get("mean_ms_per_frame") or {}).items():
            stage_ms[name] += ms * s["frames_out"]
        warnings += [w for w in s.get("warnings") or [] if w not in warnings]
    return {
        "version": __version__, "input": str(source), "output": str(output),
        "frames_in": frames, "frames_out": frames,  # warm-up frames: under `segments`
        "frames_declared": first.get("frames_declared"),
        "failed_frames": sum(s["failed_frames"] for s in summaries),
        "max_failed_frames": first.get("max_failed_frames"),
        "failures": list(failures.values()),
        "fallbacks": [{"what": what, "count": n} for what, n in fallbacks.items()],
        "wall_s": round(wall_s, 3), "fps": round(frames / wall_s, 3) if wall_s else None,
        "device": first.get("device"), "scale": first.get("scale"),
        "batch_size": first.get("batch_size"), "size_in": first.get("size_in"),
        "size_out": first.get("size_out"), "codec": first.get("codec"),
        "pix_fmt": first.get("pix_fmt"), "decoder": first.get("decoder"),
        "models": first.get("models"),
        "mean_ms_per_frame": {k: round(v / max(frames, 1), 3) for k, v in stage_ms.items()},
        "faces": faces.as_dict(), "warnings": warnings,
        "segments": [{"first_frame": s["segment"]["first_index"]
                      + len(s["segment"]["warmup"]), "frames": s["frames_out"],
                      "warmup_frames": len(s["segment"]["warmup"]), "wall_s": s["wall_s"],
                      "fps": s["fps"]} for s in summaries],
        "join_s": round(join_s, 3),
    }
