"""`vidrestore models ...`: list, download, verify and locate model weights.

The group raises `VidrestoreError` subclasses and leaves printing them to the top-level CLI
(`main.add_command(models_group)` in cli.py). Progress bars go to stderr, only on a terminal.
"""

from __future__ import annotations

import sys

import click

from .config import load_config
from .errors import ModelError
from .models import ModelStore, get_spec, official_names
from .models.store import ModelStatus


@click.group("models")
@click.option("--models-dir", type=click.Path(file_okay=False), default=None,
              help="Where model weights are cached (default: $VIDRESTORE_HOME or the user "
                   "cache).")
@click.pass_context
def models_group(ctx: click.Context, models_dir: str | None) -> None:
    """List, download and verify model weights."""
    config = load_config(flags={"models": {"dir": models_dir}})
    ctx.obj = ModelStore(config.models)


@models_group.command("list")
@click.pass_obj
def list_models(store: ModelStore) -> None:
    """Show every model: role, present/missing/bundled, source, size, path and licence
    (last: some weights are for non-commercial use only)."""
    rows = [_row(status) for status in store.status()]
    header = ("NAME", "ROLE", "STATUS", "SOURCE", "SIZE", "PATH", "LICENCE")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        click.echo("  ".join([*cells, row[-1]]).rstrip())
    click.echo(f"cache: {store.cache_dir}", err=True)


@models_group.command("download")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.pass_obj
def download_models(store: ModelStore, names: tuple[str, ...]) -> None:
    """Fetch official weights into the cache (all of them when no NAME is given)."""
    for name in names:
        get_spec(name, store.registry)  # a typo stops everything before any download starts
    failures: list[ModelError] = []
    for name in names or official_names(store.registry):
        try:
            with _Bar(name) as bar:
                resolved = store.download(name, progress=bar.update)
        except ModelError as exc:
            failures.append(exc)  # the others may still come through; report all at the end
            continue
        click.echo(f"{name}: {resolved.source} {resolved.path}")
    if failures:
        first = failures[0]
        more = f" (and {len(failures) - 1} more failed)" if len(failures) > 1 else ""
        raise type(first)(f"{first}{more}") from first


@models_group.command("verify")
@click.pass_context
def verify_models(ctx: click.Context) -> None:
    """Re-hash every present file; exit 1 when any does not match its SHA-256."""
    store: ModelStore = ctx.obj
    results = store.verify_present()
    for result in results:
        verdict = "ok" if result.ok else f"MISMATCH (expected {result.expected})"
        if result.ok and result.expected is None:
            verdict = "ok (no published sha256; size only)"
        click.echo(f"{result.name}  {result.path}  {result.actual}  {verdict}")
    bad = [r.name for r in results if not r.ok]
    if bad:
        click.echo(f"vidrestore: {len(bad)} file(s) do not match: {', '.join(bad)}; delete "
                   "them and run `vidrestore models download NAME`", err=True)
        ctx.exit(1)
    if not results:
        click.echo(f"no model files found in {store.cache_dir} or installed packages", err=True)


@models_group.command("path")
@click.argument("name")
@click.pass_obj
def model_path(store: ModelStore, name: str) -> None:
    """Print where NAME's file is, or where to put it by hand."""
    click.echo(str(store.path_for(name)))


def _row(status: ModelStatus) -> tuple[str, ...]:
    path = str(status.path) if status.path else "-"
    return (status.name, status.role, status.status, status.source,
            _human_size(status.size_bytes), path, status.license)


def _human_size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / (1024 * 1024):.1f} MB"


class _Bar:
    """A tqdm download bar on stderr when it is a terminal; nothing otherwise."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.bar = None
        self.enabled = sys.stderr.isatty()

    def __enter__(self) -> _Bar:
        return self

    def update(self, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                            desc=self.name, file=sys.stderr, dynamic_ncols=True)
            self.bar.update(done)
            return
        self.bar.update(done - self.bar.n)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()


__all__ = ["models_group"]
