"""`vidrestore eval --reference GT --restored OUT`: quality, identity and flicker figures."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click

log = logging.getLogger(__name__)


@click.command("eval")
@click.option("--reference", required=True, type=click.Path(exists=True, path_type=Path),
              help="The undegraded original: an image, a video, or a folder of them.")
@click.option("--restored", required=True, type=click.Path(exists=True, path_type=Path),
              help="What to judge (same kind as the reference; may be larger: it is resized "
                   "down to the reference's size).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write every figure, per frame and summed up, to this JSON file.")
@click.option("--no-identity", is_flag=True, help="Skip face detection and identity scores.")
@click.option("--no-lpips", is_flag=True, help="Skip LPIPS.")
@click.option("--check", is_flag=True, help="Exit with status 1 when a target is missed.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--config", "config", metavar="FILE|PRESET",
              help="Config whose face and models sections are used (identity encoder, "
                   "detector size, tracker, model cache).")
@click.option("--models-dir", type=click.Path(file_okay=False),
              help="Where model weights are cached.")
@click.pass_context
def eval_command(ctx: click.Context, reference: Path, restored: Path, json_path: Path | None,
                 no_identity: bool, no_lpips: bool, check: bool, device: str,
                 config: str | None, models_dir: str | None) -> None:
    """Compare RESTORED against REFERENCE: PSNR, SSIM, LPIPS, identity per face track and
    temporal flicker, with pass/fail against PSNR > 25 dB, SSIM > 0.8, LPIPS < 0.3 and
    identity > 0.4 (ArcFace; dlib's own 0.91)."""
    from .memory import settle_process

    settle_process()  # before torch is imported, as for a restore
    from .api import load_config  # the one way presets and files are read
    from .device import resolve_device
    from .evaluate import evaluate, open_measures

    cfg = load_config(config or "default", models={"dir": models_dir, "download": False})
    torch_device = resolve_device(device)
    measures = open_measures(cfg, torch_device, identity=not no_identity, lpips=not no_lpips)
    result = evaluate(reference, restored, measures)
    for line in format_result(result):
        click.echo(line)
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        click.echo(f"figures per frame in {json_path}", err=True)
    if check and result["pass"] is False:
        ctx.exit(1)


def format_result(result: dict[str, Any]) -> list[str]:
    """The summary as lines of text: what was compared, the table, the verdict."""
    lines = [f"reference  {result['reference']}", f"restored   {result['restored']}"]
    for pair in result.get("pairs") or []:
        lines.append(f"  {pair['file']}: {pair['frame_count']} frame(s), PSNR "
                     f"{_num(pair['means']['psnr'], 2)}, SSIM {_num(pair['means']['ssim'], 3)}"
                     f"{'; ' + pair['resized'] if pair.get('resized') else ''}")
    if not result.get("pairs"):
        lines.append(f"frames     {result['frame_count']}")
    resized = {p["resized"] for p in result.get("pairs") or [result]}
    lines += [f"note       {r}" for r in sorted(filter(None, resized))]
    lines.append("")
    lines.append(f"{'figure':<12}{'value':>10}  {'target':<8}  result")
    checks, means = result["checks"], result["means"]
    for name, label, digits in (("psnr", "PSNR (dB)", 2), ("ssim", "SSIM", 4),
                                ("lpips", "LPIPS", 4), ("identity", "identity", 4)):
        c = checks[name]
        verdict = {True: "pass", False: "FAIL", None: c.get("reason") or "not measured"}[c["pass"]]
        lines.append(f"{label:<12}{_num(c['value'], digits):>10}  {c['target'] or '-':<8}  "
                     f"{verdict}")
    if means.get("flicker"):
        f = means["flicker"]
        lines.append(f"{'flicker':<12}{_num(f['restored'], 3):>10}  {'-':<8}  reference "
                     f"{_num(f['reference'], 3)}, added {_num(f['added'], 3)} (RMS warping "
                     "error, 8-bit levels)")
    identity = result.get("identity")
    if identity:
        for track, t in identity["tracks"].items():
            lines.append(f"  track {track}: {t['frames']} frame(s), identity mean "
                         f"{_num(t['mean'], 4)}, min {_num(t['min'], 4)} ({identity['encoder']})")
    cap = result["psnr_cap_db"]
    if any((f.get("psnr") or 0) >= cap for f in result.get("frames") or []):
        lines.append(f"PSNR of identical frames is capped at {cap:g} dB")
    overall = {True: "PASS", False: "FAIL", None: "nothing measured"}[result["pass"]]
    lines.append(f"overall: {overall}")
    return lines


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


__all__ = ["eval_command", "format_result"]
