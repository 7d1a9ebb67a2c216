"""`vidrestore report LOG.jsonl`: plots and comparison grids from a run's log."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("report")
@click.argument("log_path", metavar="LOG.jsonl",
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the PNGs (default: LOG.jsonl's name with .report beside it).")
@click.option("--input", "input_path", type=click.Path(exists=True, dir_okay=False,
                                                        path_type=Path),
              help="The run's input (default: the path in the log's summary).")
@click.option("--output", "output_path", type=click.Path(exists=True, dir_okay=False,
                                                          path_type=Path),
              help="The run's output (default: the path in the log's summary).")
@click.option("--reference", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The undegraded original, a third column in the grids.")
@click.option("--eval", "eval_path", type=click.Path(exists=True, dir_okay=False,
                                                      path_type=Path),
              help="A `vidrestore eval --json` file: adds eval.png.")
@click.option("--frame", "frames", type=click.IntRange(min=0), multiple=True,
              help="Frame index for a comparison grid, repeatable (default: the first, the "
                   "one with the lowest identity, the last).")
def report_command(log_path: Path, out_dir: Path | None, input_path: Path | None,
                   output_path: Path | None, reference: Path | None, eval_path: Path | None,
                   frames: tuple[int, ...]) -> None:
    """Plot identity, quality and timings over time per face track, and draw comparison
    grids (input, output, reference; faces zoomed), as 500-DPI PNGs. For a training log
    (RUN/train.jsonl): loss curves, validation figures and the validation grids."""
    from .report import write_report  # matplotlib only when needed
    from .train.report import is_training_log, write_training_report

    out_dir = out_dir or log_path.with_name(log_path.name.removesuffix(".jsonl") + ".report")
    if is_training_log(log_path):  # RUN/train.jsonl of `vidrestore train`
        for path in write_training_report(log_path, out_dir):
            click.echo(str(path))
        return
    written = write_report(log_path, out_dir, input_path=input_path, output_path=output_path,
                           reference=reference, eval_path=eval_path, grid_frames=frames or None)
    for path in written:
        click.echo(str(path))


__all__ = ["report_command"]
