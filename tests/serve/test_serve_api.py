"""The JSON API in-process (httpx through Starlette's TestClient, the workers running):
every endpoint, bad uploads, cancelling, deleting, the token, path traversal, the schema's
migrations and a restart with a job left running."""

from __future__ import annotations

import io
import json
import sqlite3
import time
from pathlib import Path

import av
import pytest
from PIL import Image

from tests.media import make_clip
from tests.serving import NO_MODELS, real_clip, submit, tiny_photo, wait_for

pytest.importorskip("fastapi", reason="needs the serve extra: pip install '.[serve]'")

from fastapi.testclient import TestClient  # noqa: E402

from vidrestore.serve.app import Settings, create_app  # noqa: E402
from vidrestore.serve.db import MIGRATIONS, SCHEMA_VERSION, JobStore, migrate  # noqa: E402


@pytest.fixture
def make_client(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDRESTORE_HOME", str(tmp_path / "models"))
    opened = []

    def make(token=None, max_upload_bytes=50 * 1024**2, workers=1, data_dir=None):
        settings = Settings(data_dir=data_dir or tmp_path / "data", token=token,
                            devices=["cpu"] * workers, max_upload_bytes=max_upload_bytes)
        client = TestClient(create_app(settings),
                            headers={"Authorization": f"Bearer {token}"} if token else {})
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client):
    return make_client()


@pytest.fixture
def photo(media, tmp_path):
    return tiny_photo(media, tmp_path / "portrait.png")


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    """300 frames: at scale 4 a job that runs for many seconds, to cancel in the middle."""
    return make_clip(tmp_path_factory.mktemp("clips") / "long.mp4", width=320, height=240,
                     frames=300)


def job_dirs(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "data" / "jobs").iterdir())


def test_health_docs_and_page(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["workers"] == ["worker-0:cpu"]
    assert health["jobs"]["queued"] == 0 and health["token_required"] is False
    docs = client.get("/docs")
    assert docs.status_code == 200 and "https://" not in docs.text  # no CDN: works offline
    script = docs.text.split('<script src="')[1].split('"')[0]
    assert client.get(script).status_code == 200 and script.endswith("swagger-ui-bundle.js")
    schema = client.get("/openapi.json").json()
    for path in ("/api/jobs", "/api/jobs/{job_id}", "/api/jobs/{job_id}/events",
                 "/api/jobs/{job_id}/cancel", "/api/jobs/{job_id}/output",
                 "/api/jobs/{job_id}/log", "/api/jobs/{job_id}/plots/{name}", "/health"):
        assert path in schema["paths"], path
    upload = schema["paths"]["/api/jobs"]["post"]["requestBody"]["content"]
    assert {"file", "fidelity", "face_model"} <= set(
        upload["multipart/form-data"]["schema"]["properties"])
    page = client.get("/")
    assert page.status_code == 200 and "Drop a video or a photo" in page.text
    for name in ("app.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200


def test_page_loads_nothing_from_elsewhere():
    static = Path(__file__).resolve().parents[2] / "vidrestore" / "serve" / "static"
    for path in static.iterdir():
        text = path.read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, path


def test_image_job_runs_and_every_file_downloads(client, photo, tmp_path):
    created = submit(client, photo, scale=2, **NO_MODELS)
    assert created.status_code == 201, created.text
    job = created.json()
    assert job["state"] == "queued" and len(job["id"]) == 32 and job["kind"] == "image"
    job = wait_for(client, job["id"])
    assert job["state"] == "done", job["error"]
    assert job["progress"] == {"frames_done": 1, "frames_total": 1, "fraction": 1.0}
    assert job["summary"]["failed_frames"] == 0 and job["summary"]["frames_out"] == 1
    assert job["summary"]["input"] == "portrait.png"  # no server path in what clients see
    assert str(tmp_path) not in json.dumps(job)
    assert all("path" not in model for model in job["summary"]["models"].values())
    assert job["started_at"] >= job["created_at"] and job["finished_at"] >= job["started_at"]
    assert [j["id"] for j in client.get("/api/jobs").json()] == [job["id"]]

    output = client.get(job["urls"]["output"])
    assert output.status_code == 200 and output.headers["content-type"] == "image/png"
    assert "portrait_restored.png" in output.headers["content-disposition"]
    with Image.open(io.BytesIO(output.content)) as restored, Image.open(photo) as source:
        assert restored.size == (source.width * 2, source.height * 2)
    assert client.get(job["urls"]["input"]).content == photo.read_bytes()
    log = client.get(job["urls"]["log"])
    assert log.headers["content-type"] == "application/jsonl"
    records = [json.loads(line) for line in log.text.splitlines()]
    seek = client.get(job["urls"]["output"], headers={"Range": "bytes=0-9"})
    assert seek.status_code == 206 and seek.content == output.content[:10]
    assert records[0]["frame"] == 0 and records[-1]["summary"]["frames_out"] == 1
    assert "timings" in job["urls"]["plots"]
    plot = client.get(job["urls"]["plots"]["timings"])
    assert plot.status_code == 200 and plot.content.startswith(b"\x89PNG")
    missing = client.get(f"/api/jobs/{job['id']}/plots/identity.png")
    assert missing.status_code == 404 and "timings.png" in missing.json()["detail"]


def test_video_job_with_progress_stream(client, media, tmp_path):
    clip = real_clip(media, tmp_path / "talk.mp4", frames=6)
    job = submit(client, clip, **NO_MODELS).json()
    events = []
    with client.stream("GET", job["urls"]["events"]) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    assert events[-1]["state"] == "done", events[-1]["error"]
    assert [e["state"] for e in events][0] in ("queued", "running")
    done = [e["progress"]["frames_done"] for e in events]
    assert done == sorted(done) and done[-1] == 6
    output = client.get(events[-1]["urls"]["output"])
    assert output.headers["content-type"] == "video/mp4"
    out = tmp_path / "restored.mp4"
    out.write_bytes(output.content)
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        scale = events[-1]["summary"]["scale"]
        assert [stream.width, stream.height] == [96 * scale, 126 * scale]
        assert sum(1 for _ in container.decode(stream)) == 6
    # the list stream sends the whole list, once, for a server with nothing changing
    with client.stream("GET", "/api/events") as stream:
        first = next(line for line in stream.iter_lines() if line.startswith("data: "))
    assert [j["id"] for j in json.loads(first[6:])] == [job["id"]]


@pytest.mark.parametrize("name, content, status, says", [
    ("notes.png", b"this is plain text, not a picture", 415, "notes.png: neither an image"),
    ("empty.jpg", b"", 415, "empty.jpg: file is empty"),
    ("sound.mp4", None, 415, "sound.mp4: has no video stream (audio only)"),
    ("anim.gif", None, 415, "a GIF image"),
    ("cut.mp4", None, 422, "cut.mp4: truncated"),
])
def test_bad_uploads_are_refused_with_one_line(client, tmp_path, name, content, status, says):
    if content is None:
        content = _bad_file(name, tmp_path)
    response = client.post("/api/jobs", files={"file": (name, content)}, data=NO_MODELS)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert says in detail and "\n" not in detail and str(tmp_path) not in detail
    assert job_dirs(tmp_path) == [] and client.get("/api/jobs").json() == []


def _bad_file(name: str, tmp_path: Path) -> bytes:
    path = tmp_path / name
    if name == "sound.mp4":
        make_clip(path, frames=1, audio="aac", audio_seconds=0.5)
        with av.open(str(path)) as src, av.open(str(tmp_path / "a.m4a"), "w") as dst:
            audio = dst.add_stream_from_template(src.streams.audio[0])
            for packet in src.demux(src.streams.audio[0]):
                if packet.dts is not None:
                    packet.stream = audio
                    dst.mux(packet)
        return (tmp_path / "a.m4a").read_bytes()
    if name == "anim.gif":
        frames = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
        frames[0].save(path, save_all=True, append_images=frames[1:])
        return path.read_bytes()
    # cut.mp4: the index (moov) in front, as for streaming, and the file cut short
    make_clip(tmp_path / "whole.mp4", frames=30, width=96, height=64)
    with av.open(str(tmp_path / "whole.mp4")) as src, \
            av.open(str(path), "w", options={"movflags": "faststart"}) as dst:
        video = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = video
                dst.mux(packet)
    data = path.read_bytes()
    return data[: len(data) * 2 // 3]


def test_upload_limits_and_malformed_requests(make_client, photo, tmp_path):
    client = make_client(max_upload_bytes=2000)
    too_big = submit(client, photo, **NO_MODELS)
    assert too_big.status_code == 413 and "limit of 0.002 MB" in too_big.json()["detail"]
    no_file = client.post("/api/jobs", data={"preset": "fast"},
                          files={"other": ("x", b"1")})
    assert no_file.status_code == 400 and "named 'file'" in no_file.json()["detail"]
    two_files = client.post("/api/jobs", files=[("file", ("a.png", b"1")),
                                                 ("file", ("b.png", b"2"))])
    assert two_files.status_code == 400 and "one file" in two_files.json()["detail"]
    assert client.post("/api/jobs", json={"file": "x"}).status_code == 415
    garbled = client.post("/api/jobs", content=b"--xyz\r\nnot a header line at all",
                          headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert garbled.status_code == 400, garbled.text
    assert job_dirs(tmp_path) == []
    roomy = make_client(data_dir=tmp_path / "data")
    long_field = roomy.post("/api/jobs", data={"preset": "x" * 5000},
                            files={"file": ("p.png", photo.read_bytes())})
    assert long_field.status_code == 400 and "longer than 1024 bytes" in \
        long_field.json()["detail"]
    assert job_dirs(tmp_path) == []


@pytest.mark.parametrize("options, says", [
    ({"scale": "3"}, "scale: scale must be one of 1, 2, 4"),
    ({"fidelity": "1.5"}, "fidelity"),
    ({"face_model": "/tmp/evil.pth"}, "face_model"),
    ({"bg_model": "../models/x.safetensors"}, "bg_model"),
    ({"preset": "/etc/passwd"}, "preset"),
    ({"models_dir": "/tmp"}, "unknown option"),
])
def test_bad_options_and_model_files_are_refused(client, photo, tmp_path, options, says):
    response = submit(client, photo, **options)
    assert response.status_code == 422 and says in response.json()["detail"], response.text
    assert job_dirs(tmp_path) == []


def test_cancel_queued_and_running_jobs(client, long_clip, photo, tmp_path):
    running = submit(client, long_clip, scale=4, **NO_MODELS).json()
    queued = submit(client, photo, **NO_MODELS).json()
    job = wait_for(client, running["id"], states=("running",))
    while job["progress"]["frames_done"] == 0:
        job = client.get(f"/api/jobs/{running['id']}").json()
        time.sleep(0.05)
    assert job["eta_s"] is None or job["eta_s"] > 0
    assert client.post(f"/api/jobs/{queued['id']}/cancel").json()["state"] == "cancelled"
    assert client.post(f"/api/jobs/{running['id']}/cancel").status_code == 202
    job = wait_for(client, running["id"], timeout_s=30)
    assert job["state"] == "cancelled" and job["urls"]["output"] is None
    assert not any((tmp_path / "data" / "jobs" / running["id"]).glob("output*.mp4"))
    assert client.get(f"/api/jobs/{running['id']}/output").status_code == 409
    again = client.post(f"/api/jobs/{running['id']}/cancel")
    assert again.status_code == 409 and "already cancelled" in again.json()["detail"]
    assert client.get(f"/api/jobs/{queued['id']}").json()["attempts"] == 0  # never started


def test_delete_removes_files_even_while_running(client, long_clip, photo, tmp_path):
    done = wait_for(client, submit(client, photo, **NO_MODELS).json()["id"])
    running = submit(client, long_clip, scale=4, **NO_MODELS).json()
    wait_for(client, running["id"], states=("running",))
    for job in (done, running):
        assert client.delete(f"/api/jobs/{job['id']}").status_code == 204
        assert client.get(f"/api/jobs/{job['id']}").status_code == 404
        assert client.delete(f"/api/jobs/{job['id']}").status_code == 404
    assert job_dirs(tmp_path) == [] and client.get("/api/jobs").json() == []


def test_token(make_client, photo):
    client = make_client(token="s3cret")
    assert client.get("/health").status_code == 200  # liveness needs no token
    assert client.get("/").status_code == 200  # the page asks for it
    anonymous = {"Authorization": ""}
    refused = client.get("/api/jobs", headers=anonymous)
    assert refused.status_code == 401 and "Bearer" in refused.json()["detail"]
    assert client.get("/api/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    job = submit(client, photo, **NO_MODELS)
    assert job.status_code == 201
    job = wait_for(client, job.json()["id"])
    # a browser's <img>/<video> sends the cookie: good for GETs, never for changes
    client.cookies.set("vidrestore_token", "s3cret")
    assert client.get(job["urls"]["output"], headers=anonymous).status_code == 200
    assert client.delete(f"/api/jobs/{job['id']}", headers=anonymous).status_code == 401
    with photo.open("rb") as file:
        assert client.post("/api/jobs", files={"file": file}, headers=anonymous).status_code == 401
    client.cookies.clear()


@pytest.mark.parametrize("path", [
    "/api/jobs/..%2F..%2F..%2Fetc%2Fpasswd", "/api/jobs/../../etc/passwd/output",
    "/api/jobs/%2e%2e/output", "/api/jobs/00000000000000000000000000000000/output",
    "/api/jobs/{id}/plots/..%2F..%2Fjobs.sqlite3", "/api/jobs/{id}/plots/..%2Finput.png",
    "/api/jobs/{id}/plots/server.png", "/api/jobs/{id}%2F..%2F..%2Fjobs.sqlite3/log",
    "/static/..%2F..%2Fapp.py", "/static/../app.py",
])
def test_path_traversal_finds_nothing(client, photo, path):
    job = wait_for(client, submit(client, photo, **NO_MODELS).json()["id"])
    response = client.get(path.replace("{id}", job["id"]))
    assert response.status_code in (404, 422), (path, response.status_code)
    assert b"SQLite" not in response.content and b"import" not in response.content


def test_upload_name_never_reaches_the_file_system(client, photo, tmp_path):
    job = submit(client, photo, name="../../../escaped.png", **NO_MODELS).json()
    assert job["filename"] == "escaped.png"
    assert not list(tmp_path.rglob("escaped*"))
    assert [p.name for p in (tmp_path / "data" / "jobs" / job["id"]).iterdir()] == ["input.png"]


def test_workers_take_jobs_in_order(make_client, photo):
    client = make_client(workers=2)
    ids = [submit(client, photo, **NO_MODELS).json()["id"] for _ in range(6)]
    jobs = [wait_for(client, job_id) for job_id in ids]
    assert {j["state"] for j in jobs} == {"done"}
    assert {j["worker"] for j in jobs} <= {"worker-0:cpu", "worker-1:cpu"}
    for worker in {j["worker"] for j in jobs}:
        mine = [j for j in jobs if j["worker"] == worker]
        assert [j["started_at"] for j in mine] == sorted(j["started_at"] for j in mine)


def test_restart_requeues_a_running_job_and_keeps_results(make_client, photo, tmp_path):
    data = tmp_path / "data"
    first = make_client(data_dir=data)
    done = wait_for(first, submit(first, photo, **NO_MODELS).json()["id"])
    first.__exit__(None, None, None)
    # What a killed server leaves behind: a job `running` (the real-process test kills one).
    store = JobStore(data / "jobs.sqlite3")
    (data / "jobs" / ("a" * 32)).mkdir()
    (data / "jobs" / ("a" * 32) / "input.png").write_bytes(photo.read_bytes())
    store.add("a" * 32, kind="image", filename="left.png", input_name="input.png",
              output_name="output.png", options=NO_MODELS)
    store.claim("worker-0:cpu")
    store.add("b" * 32, kind="image", filename="gone.png", input_name="input.png",
              output_name="output.png", options=NO_MODELS)
    store._write("UPDATE jobs SET state = 'running', attempts = 2 WHERE id = ?", ("b" * 32,))
    store.close()
    second = make_client(data_dir=data)
    rerun = wait_for(second, "a" * 32)
    assert rerun["state"] == "done" and rerun["attempts"] == 2
    gone = second.get(f"/api/jobs/{'b' * 32}").json()
    assert gone["state"] == "failed" and "server stopped while this job ran, 2 times" in \
        gone["error"]
    assert second.get(done["urls"]["output"]).status_code == 200


def test_schema_migrates_an_older_database(tmp_path):
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[0] + " PRAGMA user_version = 1;")
    conn.execute("INSERT INTO jobs (id, state, kind, filename, input_name, output_name, "
                 "options, created_at) VALUES ('x', 'done', 'image', 'a.png', 'input.png', "
                 "'output.png', '{}', 0)")
    conn.commit()
    conn.close()
    store = JobStore(path)
    assert store.migrated_from == 1
    assert store.get("x")["attempts"] == 0 and store.get("x")["state"] == "done"
    store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(RuntimeError, match="upgrade vidrestore"):
        migrate(conn)
