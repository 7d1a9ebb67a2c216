"""A real `vidrestore serve` process on a free port: binding needs a token beyond the local
machine, SIGKILL in the middle of a job loses nothing, SIGTERM puts the running job back in
the queue, and the JSON log records requests and job transitions."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import ROOT
from tests.media import make_clip
from tests.serving import NO_MODELS, ServerProcess, submit, tiny_photo, wait_for

pytest.importorskip("fastapi", reason="needs the serve extra: pip install '.[serve]'")


@pytest.fixture
def servers(tmp_path):
    started = []

    def start(*args: str, host: str = "127.0.0.1") -> ServerProcess:
        server = ServerProcess(tmp_path / "data", tmp_path / "models", *args, host=host)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


def wait_running(client: httpx.Client, job_id: str) -> dict:
    """Until the job has written frames: it is surely in the middle of its run."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["state"] == "running" and job["progress"]["frames_done"] > 0:
            return job
        assert job["state"] in ("queued", "running"), job
        time.sleep(0.05)
    raise AssertionError("the job never got going")


def test_other_hosts_need_a_token(tmp_path):
    result = subprocess.run([sys.executable, "-m", "vidrestore", "serve", "--host", "0.0.0.0",
                             "--data-dir", str(tmp_path / "data")], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "vidrestore: error: --host 0.0.0.0 makes the server reachable from other machines: "
        "give it a --token (or bind to 127.0.0.1)"]
    assert not (tmp_path / "data").exists()


def test_token_on_a_real_server(servers, media, tmp_path):
    server = servers("--token", "t0ken", host="0.0.0.0")
    with server.client() as anonymous, server.client("t0ken") as client:
        assert anonymous.get("/health").json()["token_required"] is True
        assert anonymous.get("/api/jobs").status_code == 401
        assert submit(anonymous, tiny_photo(media, tmp_path / "p.png")).status_code == 401
        job = submit(client, tiny_photo(media, tmp_path / "p.png"), **NO_MODELS).json()
        assert wait_for(client, job["id"])["state"] == "done"
        assert client.get(f"/api/jobs/{job['id']}/output").status_code == 200


def test_sigkill_mid_job_reruns_it_and_keeps_results(servers, media, tmp_path):
    clip = make_clip(tmp_path / "long.mp4", width=320, height=240, frames=60)
    server = servers()
    with server.client() as client:
        finished = wait_for(client, submit(client, tiny_photo(media, tmp_path / "p.png"),
                                           **NO_MODELS).json()["id"])
        assert finished["state"] == "done"
        long_job = submit(client, clip, scale=4, **NO_MODELS).json()
        queued = submit(client, tiny_photo(media, tmp_path / "q.png"), **NO_MODELS).json()
        wait_running(client, long_job["id"])
    server.kill()

    server = servers()  # the same data folder
    with server.client() as client:
        rerun = wait_for(client, long_job["id"], timeout_s=120)
        assert rerun["state"] == "done" and rerun["attempts"] == 2, rerun
        assert rerun["summary"]["frames_out"] == 60 and rerun["summary"]["failed_frames"] == 0
        assert wait_for(client, queued["id"])["state"] == "done"  # still queued, then run
        output = client.get(finished["urls"]["output"])
        assert output.status_code == 200 and output.content.startswith(b"\x89PNG")
        assert client.get(f"/api/jobs/{long_job['id']}/output").status_code == 200
    job_files = {p.name for p in (tmp_path / "data" / "jobs" / long_job["id"]).iterdir()}
    assert job_files == {"input.mp4", "output.mp4", "output.jsonl", "plots"}, job_files
    events = [json.loads(line) for line in
              (tmp_path / "data" / "server.jsonl").read_text().splitlines()]
    recovered = [e for e in events if e.get("recovered")]
    assert [(e["job"], e["state"]) for e in recovered] == [(long_job["id"], "queued")]
    assert any(e.get("request") == "POST" and e.get("status") == 201 for e in events)
    states = [e["state"] for e in events if e.get("job") == long_job["id"]]
    assert states == ["queued", "running", "queued", "running", "done"], states


def test_sigterm_puts_the_running_job_back(servers, tmp_path):
    clip = make_clip(tmp_path / "long.mp4", width=320, height=240, frames=200)
    server = servers()
    with server.client() as client:
        job = submit(client, clip, scale=4, **NO_MODELS).json()
        wait_running(client, job["id"])
    # uvicorn shuts down cleanly, then re-raises SIGTERM so the exit says what ended it
    assert server.stop() in (0, -15)
    assert server.console.read_text().splitlines()[-1].endswith(
        "stopped; 1 job(s) queued for the next start")
    with sqlite3.connect(tmp_path / "data" / "jobs.sqlite3") as conn:
        state, attempts = conn.execute("SELECT state, attempts FROM jobs WHERE id = ?",
                                       (job["id"],)).fetchone()
    assert (state, attempts) == ("queued", 0)
    assert not list((tmp_path / "data" / "jobs" / job["id"]).glob("output*.mp4"))


def test_a_busy_port_is_one_line(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "vidrestore", "serve", "--port",
                                 str(port), "--data-dir", str(tmp_path / "data")], cwd=ROOT,
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"vidrestore: error: cannot listen on 127.0.0.1:{port} (Address already in use); "
        "pick another --port or --host"]
    assert not (tmp_path / "data").exists()
