"""`vidrestore serve`: the web interface and the HTTP job API, under uvicorn."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from .errors import ConfigError


def _default_data_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("vidrestore")) / "serve"


def _devices(workers: int | None) -> list[str]:
    """One worker a CUDA device by default, else one on the CPU; N workers share them."""
    import torch

    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    names = [f"cuda:{i}" for i in range(cuda)] or ["cpu"]
    count = workers or len(names)
    return [names[i % len(names)] for i in range(count)]


def _check_port(host: str, port: int) -> None:
    """Refuse a busy address up front, with one line, before models and workers start."""
    import socket

    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            sock.bind((host, port))
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick "
                          "another --port or --host") from exc


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but the local machine needs --token.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Jobs database, uploads and results (default: the user data folder, "
                   "e.g. ~/.local/share/vidrestore/serve).")
@click.option("--workers", type=click.IntRange(min=1),
              help="Jobs run at once (default: one per CUDA device, else 1 on the CPU).")
@click.option("--token", envvar="VIDRESTORE_TOKEN", metavar="T",
              help="Bearer token every API request must carry (also $VIDRESTORE_TOKEN).")
@click.option("--max-upload-mb", default=2048, show_default=True, type=click.IntRange(min=1),
              help="Largest upload accepted.")
@click.option("--models-dir", type=click.Path(file_okay=False),
              help="Where model weights are cached (default: $VIDRESTORE_HOME or the user "
                   "cache).")
@click.option("--no-download", is_flag=True, default=None,
              help="Never fetch weights; use what is cached or bundled.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors on the console.")
@click.option("--debug", is_flag=True, help="Debug logs and tracebacks.")
def serve_command(host: str, port: int, data_dir: Path | None, workers: int | None,
                  token: str | None, max_upload_mb: int, models_dir: str | None,
                  no_download: bool | None, quiet: bool, debug: bool) -> None:
    """Serve the web page and the JSON API: upload a video or photo, follow the queue,
    download the result. API docs at /docs."""
    from .serve.security import loopback

    if not loopback(host) and not token:
        raise ConfigError(f"--host {host} makes the server reachable from other machines: "
                          "give it a --token (or bind to 127.0.0.1)")
    try:
        import uvicorn

        from .serve import logs
        from .serve.app import Settings, create_app
    except ImportError as exc:
        raise ConfigError(f"vidrestore serve needs the serve extra ({exc.name} is missing): "
                          "pip install 'vidrestore[serve]'") from exc
    _check_port(host, port)
    from .memory import settle_process

    settle_process()  # before torch is imported
    data_dir = (data_dir or _default_data_dir()).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    json_log = logs.setup(data_dir, level)
    models = {"dir": models_dir, "download": None if no_download is None else not no_download}
    settings = Settings(data_dir=data_dir, token=token, devices=_devices(workers),
                        max_upload_bytes=max_upload_mb * 1024 * 1024, models=models)
    app = create_app(settings)
    logs.event(f"serving on http://{host}:{port} (API docs at /docs); JSON log {json_log}",
               host=host, port=port)
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False,
                log_level="debug" if debug else "warning", timeout_graceful_shutdown=30)


__all__ = ["serve_command"]
