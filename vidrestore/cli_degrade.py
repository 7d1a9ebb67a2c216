"""`vidrestore degrade IN OUT`: a reproducible degradation, for testing restoration."""

from __future__ import annotations

from pathlib import Path

import click

from .degrade import STEPS, degrade, load_recipe, params_path, parse_step

_STEP_HELP = "; ".join(f"{name}: {spec.doc}" for name, spec in STEPS.items())


@click.command("degrade")
@click.argument("input_path", metavar="IN", type=click.Path(path_type=Path))
@click.argument("output_path", metavar="OUT", type=click.Path(path_type=Path))
@click.option("--seed", type=int, default=None,
              help="Seed of the drawn parameters and the noise (default: 0, or the recipe's).")
@click.option("--step", "steps", multiple=True, metavar="NAME[:KEY=VALUE,...]",
              help="A step, repeatable, applied in order; parameters not given are drawn from "
                   "the seed. Default: blur, downscale, noise, then jpeg (image) or codec "
                   f"(video). Steps: {_STEP_HELP}.")
@click.option("--recipe", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Replay the steps (and seed) of an OUT.degrade.json written before.")
@click.option("--overwrite", is_flag=True, help="Replace OUT and its parameters file.")
def degrade_command(input_path: Path, output_path: Path, seed: int | None,
                    steps: tuple[str, ...], recipe: Path | None, overwrite: bool) -> None:
    """Degrade IN (image or video) into OUT, and write the parameters to OUT.degrade.json."""
    if recipe is not None and steps:
        raise click.UsageError("give --recipe or --step, not both")
    chosen = [parse_step(text) for text in steps] or None
    recipe_seed = None
    if recipe is not None:
        chosen, recipe_seed = load_recipe(recipe)
    seed = seed if seed is not None else (recipe_seed if recipe_seed is not None else 0)
    record = degrade(input_path, output_path, seed=seed, steps=chosen, overwrite=overwrite)
    summary = ", ".join(f"{s['name']}({_params(s['params'])})" for s in record["steps"])
    click.echo(f"wrote {output_path} ({record['frames']} frame"
               f"{'s' if record['frames'] != 1 else ''}, {record['size_out'][0]}x"
               f"{record['size_out'][1]}): seed {seed}: {summary}; parameters in "
               f"{params_path(output_path)}", err=True)


def _params(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


__all__ = ["degrade_command"]
