"""`vidrestore faces extract` and `vidrestore train` (with `train export`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click


@click.group("faces")
def faces_group() -> None:
    """Face datasets for training."""


@faces_group.command("extract")
@click.argument("inputs", metavar="IN...", nargs=-1, required=True,
                type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--out", "dataset", required=True,
              type=click.Path(file_okay=False, path_type=Path), help="The dataset folder.")
@click.option("--min-eye-px", type=float, default=24.0, show_default=True,
              help="Drop faces whose eyes are closer than this in the frame.")
@click.option("--min-score", type=float, default=0.9, show_default=True,
              help="Least detection score.")
@click.option("--min-sharpness", type=float, default=1.0, show_default=True,
              help="Least Laplacian variance of the crop's centre (0-255 grey).")
@click.option("--dedupe", type=float, default=0.02, show_default=True,
              help="Least mean difference (0-1) from the last kept crop of the same track.")
@click.option("--every", type=click.IntRange(min=1), default=1, show_default=True,
              help="Look at every n-th frame of a video.")
@click.option("--max-per-source", type=click.IntRange(min=0), default=0, show_default=True,
              help="Most faces from one source (0: all).")
@click.option("--val-fraction", type=click.FloatRange(0, 1), default=0.2, show_default=True,
              help="Share of identity groups of sources held out for validation.")
@click.option("--val", "val_sources", multiple=True, metavar="GLOB",
              help="Source file names for validation (repeatable; replaces --val-fraction).")
@click.option("--seed", type=int, default=0, show_default=True)
def extract_command(inputs, dataset, min_eye_px, min_score, min_sharpness, dedupe, every,
                    max_per_source, val_fraction, val_sources, seed) -> None:
    """Cut aligned 512 px faces from images, folders and videos into a dataset, with the
    pipeline's own detector, tracker and aligner. Sources already done are skipped, so an
    interrupted extract goes on where it stopped."""
    import torch

    from .faces_dataset import ExtractSettings, extract_faces

    torch.set_num_threads(1)
    settings = ExtractSettings(min_eye_px=min_eye_px, min_score=min_score,
                               min_sharpness=min_sharpness, dedupe=dedupe, every=every,
                               max_per_source=max_per_source, val_fraction=val_fraction,
                               val_sources=tuple(val_sources), seed=seed)
    bar = _bar()

    def progress(source: str, kept: int) -> None:
        if bar is not None:
            bar.set_description(source[:30])
            bar.update(1)

    try:
        summary = extract_faces(inputs, dataset, settings, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    click.echo(f"{dataset}: {summary['faces']} faces ({summary['train_faces']} train, "
               f"{summary['val_faces']} validation) from {len(summary['sources'])} sources",
               err=True)


def _bar():
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(unit="face", file=sys.stderr, dynamic_ncols=True)


@click.group("train", invoke_without_command=True)
@click.option("--data", "data", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A dataset from `vidrestore faces extract`.")
@click.option("--out", "run", type=click.Path(file_okay=False, path_type=Path),
              help="The run folder (checkpoints, log, validation strips).")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False,
                                                          path_type=Path),
              help="A train.yaml (see configs/train/unet.yaml).")
@click.option("--resume", is_flag=True, help="Go on with the run in --out from its last.pt.")
@click.option("--gen-data", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A second dataset for the generalisation test at the end.")
@click.option("--steps", type=click.IntRange(min=1),
              help="Total steps: the length of the schedule (overrides the config).")
@click.option("--stop-at", type=click.IntRange(min=1),
              help="Pause after this step with a checkpoint; --resume goes on from it.")
@click.option("--device", default=None, help="cpu or cuda (default: cuda when there is one).")
@click.pass_context
def train_group(ctx, data, run, config_path, resume, gen_data, steps, stop_at,
                device) -> None:
    """Train a face restorer: FaceUNet from scratch, or fine-tune GFPGAN.

    \b
      vidrestore train --data DATASET --out RUN [--config train.yaml] [--resume]
      vidrestore train export RUN FILE.safetensors
    """
    if ctx.invoked_subcommand is not None:
        return
    if data is None or run is None:
        raise click.UsageError("vidrestore train needs --data DATASET and --out RUN")
    import torch

    from .train.config import load_train_config
    from .train.trainer import train

    cfg = load_train_config(config_path)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    result = train(data, run, cfg, resume=resume, gen_data=gen_data, device=device,
                   steps=steps, stop_at=stop_at)
    click.echo(f"{run}: step {result.step}, checkpoint {result.checkpoint}", err=True)
    for label, figures in (("validation", result.val), ("generalisation", result.gen)):
        if figures:
            click.echo(f"{label}: " + json.dumps({k: v for k, v in figures.items()
                                                  if k not in ("kind",)}), err=True)


@train_group.command("export")
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--name", help="The model's name in its card (default: OUT's stem).")
def export_command(run: Path, out: Path, name: str | None) -> None:
    """Write RUN's EMA weights as OUT (.safetensors) with its model card (OUT.md); load it
    with `vidrestore IN OUT --face-model OUT`."""
    from .train.export import export_run

    if out.suffix != ".safetensors":
        raise click.UsageError(f"{out}: the export is a .safetensors file")
    card = export_run(run, out, name=name)
    click.echo(f"wrote {out} and {out.with_suffix('.md')} ({card['training']['steps']} steps)",
               err=True)


__all__ = ["faces_group", "train_group"]
