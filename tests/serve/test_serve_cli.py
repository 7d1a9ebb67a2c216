"""`vidrestore serve`'s command line: its help, and one worker per device by default."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from vidrestore.cli import main
from vidrestore.cli_serve import _devices


def test_help_lists_serve_and_its_options():
    runner = CliRunner()
    assert "vidrestore serve" in runner.invoke(main, ["--help"]).output
    result = runner.invoke(main, ["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--data-dir", "--workers", "--token",
                   "--max-upload-mb"):
        assert option in result.output


@pytest.mark.parametrize("cuda, workers, devices", [
    (0, None, ["cpu"]), (0, 2, ["cpu", "cpu"]), (2, None, ["cuda:0", "cuda:1"]),
    (2, 3, ["cuda:0", "cuda:1", "cuda:0"]), (1, None, ["cuda:0"]),
])
def test_one_worker_per_device_by_default(monkeypatch, cuda, workers, devices):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda)
    assert _devices(workers) == devices
