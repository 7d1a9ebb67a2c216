"""What every benchmark result records about its run (date, commit, machine, device), and
how it is written."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def commit() -> str:
    """The short commit of the checkout, with "+dirty" when tracked files differ from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True,
                              text=True).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def cpu_machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def run_info() -> dict[str, str]:
    return {"date": date.today().isoformat(), "commit": commit(), "machine": cpu_machine()}


def device_info(device: str) -> dict:
    """torch and CUDA versions and the device the figures were measured on."""
    import torch

    info = {"torch": torch.__version__, "cuda": torch.version.cuda}
    if device != "cpu" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.device(device))
        info.update(device=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1))
    else:
        info.update(device="CPU only", cuda=None)
    return info


def write_json(result: dict, path: Path | None) -> None:
    """Print the result, and write it to `path` when one is given."""
    text = json.dumps(result, indent=2)
    print(text)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
