"""The FastAPI application: the JSON API, the progress streams, job files and the page.

    GET    /health                      liveness, workers, jobs per state (no token needed)
    POST   /api/jobs                    multipart: file + options -> 201 the job
    GET    /api/jobs                    every job, oldest first
    GET    /api/jobs/{id}               one job: state, progress, ETA, summary, file URLs
    GET    /api/jobs/{id}/events        Server-Sent Events: the job each time it changes
    GET    /api/events                  Server-Sent Events: the job list each time it changes
    POST   /api/jobs/{id}/cancel        stop a queued or running job
    DELETE /api/jobs/{id}               remove a job and its files (cancels it first)
    GET    /api/jobs/{id}/input|output|log      the upload, the result, the JSON Lines log
    GET    /api/jobs/{id}/plots/{name}  identity.png, quality.png, timings.png
    GET    /                            the page (static/, no build step, nothing remote)

A job id is 32 random hex digits. Files are found from the job's database row, never from a
path in the request: the id must be one in the table and a plot name one of `PLOTS`.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import ValidationError

from .. import __version__
from . import logs, uploads
from .db import FINISHED, JobStore
from .options import FIELDS, JobOptions
from .plots import PLOTS
from .security import check_token
from .workers import WorkerPool

STATIC = Path(__file__).parent / "static"
BEARER = HTTPBearer(auto_error=False)  # declares the scheme, for /docs' Authorize button
JOB_ID = r"^[0-9a-f]{32}$"
EVENT_POLL_S = 0.25
HEARTBEAT_S = 15.0
MAX_ATTEMPTS = 2  # a job the server died under twice is failed, not run a third time
MEDIA_TYPES = {".jsonl": "application/jsonl", ".mp4": "video/mp4", ".mkv": "video/x-matroska",
               ".avi": "video/x-msvideo",
               ".jpg": "image/jpeg", ".png": "image/png", ".webp": "image/webp",
               ".bmp": "image/bmp", ".tif": "image/tiff"}


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    token: str | None = None
    devices: list[str] = field(default_factory=lambda: ["auto"])
    max_upload_bytes: int = 2 * 1024**3
    models: dict[str, Any] = field(default_factory=dict)  # load_config's `models` section


def output_name(kind: str, input_name: str) -> str:
    """Images keep a format browsers show (PNG otherwise); videos become H.264 MP4."""
    suffix = Path(input_name).suffix
    if kind == "video":
        return "output.mp4"
    return f"output{suffix if suffix in ('.jpg', '.png', '.webp') else '.png'}"


def create_app(settings: Settings) -> FastAPI:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    jobs_dir = settings.data_dir / "jobs"
    jobs_dir.mkdir(exist_ok=True)
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        store = JobStore(settings.data_dir / "jobs.sqlite3")
        requeued, failed = store.recover(MAX_ATTEMPTS)
        for job_id in requeued:
            logs.event(f"job {job_id} queued again: the server stopped while it ran",
                       job=job_id, state="queued", recovered=True)
        for job_id in failed:
            logs.event(f"job {job_id} failed: the server stopped while it ran, "
                       f"{MAX_ATTEMPTS} times", job=job_id, state="failed", recovered=True)
        pool = WorkerPool(store, jobs_dir, settings.devices, settings.models)
        state.update(store=store, pool=pool)
        pool.start()
        logs.event(f"{len(settings.devices)} worker(s) on {', '.join(settings.devices)}; data "
                   f"in {settings.data_dir}; {store.counts()['queued']} job(s) queued",
                   workers=pool.names)
        try:
            yield
        finally:
            await asyncio.to_thread(pool.stop)
            logs.event(f"stopped; {store.counts()['queued']} job(s) queued for the next start")
            store.close()

    # FastAPIOffline: /docs and /redoc with their scripts served from the package, no CDN
    app = FastAPIOffline(title="vidrestore", version=__version__, lifespan=lifespan,
                         description="Face restoration jobs: upload a video or a photo, "
                                     "follow its progress, download the result.")

    @app.middleware("http")
    async def log_requests(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        ms = (time.perf_counter() - started) * 1000
        logs.event(f"{request.method} {request.url.path} {response.status_code} {ms:.0f} ms",
                   request=request.method, path=request.url.path, status=response.status_code,
                   ms=round(ms, 1), client=request.client.host if request.client else None)
        return response

    def store() -> JobStore:
        return state["store"]

    def pool() -> WorkerPool:
        return state["pool"]

    def authorised(request: Request,
                   _: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]) -> None:
        check_token(request, settings.token)

    def job_or_404(job_id: str) -> dict[str, Any]:
        job = store().get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        return job

    JobId = PathParam(pattern=JOB_ID, description="a job id: 32 hex digits")

    @app.get("/health", tags=["server"])
    def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "workers": pool().names,
                "jobs": store().counts(), "token_required": settings.token is not None}

    api = APIRouter(prefix="/api", dependencies=[Depends(authorised)], tags=["jobs"])

    @api.post("/jobs", status_code=201, openapi_extra=_upload_schema())
    async def create_job(request: Request) -> dict[str, Any]:
        """Upload a video or an image (`file`) with the job's options as form fields."""
        job_id = secrets.token_hex(16)
        folder = jobs_dir / job_id
        try:
            upload = await uploads.receive(request, folder, settings.max_upload_bytes,
                                           max_fields=len(FIELDS) + 4)
        except uploads.UploadRefused as exc:
            logs.event(f"upload refused: {exc}", status=exc.status, error=str(exc))
            raise HTTPException(exc.status, str(exc)) from None
        try:
            options = JobOptions.model_validate(
                {k: v for k, v in upload.fields.items() if v != ""})
        except ValidationError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise HTTPException(422, _one_line(exc)) from None
        job = store().add(job_id, kind=upload.kind, filename=upload.filename,
                          input_name=upload.input_name,
                          output_name=output_name(upload.kind, upload.input_name),
                          options=options.model_dump(exclude_none=True))
        logs.event(f"job {job_id} queued ({upload.filename}, {upload.kind})", job=job_id,
                   state="queued", filename=upload.filename, options=job["options"])
        pool().notify()
        return _public(job)

    @api.get("/jobs")
    def list_jobs() -> list[dict[str, Any]]:
        return [_public(job) for job in store().list()]

    @api.get("/jobs/{job_id}")
    def get_job(job_id: str = JobId) -> dict[str, Any]:
        return _public(job_or_404(job_id))

    @api.get("/jobs/{job_id}/events", response_class=StreamingResponse)
    async def job_events(request: Request, job_id: str = JobId):
        """The job as a JSON `data:` event each time it changes; ends when it has finished."""
        job_or_404(job_id)

        def snapshot():
            job = store().get(job_id)
            return (None, True) if job is None else (_public(job), job["state"] in FINISHED)

        return _event_stream(request, snapshot)

    @api.get("/events", response_class=StreamingResponse)
    async def list_events(request: Request):
        """The job list as a JSON `data:` event each time any job changes."""
        return _event_stream(request, lambda: ([_public(j) for j in store().list()], False))

    @api.post("/jobs/{job_id}/cancel", status_code=202)
    def cancel_job(job_id: str = JobId) -> dict[str, Any]:
        job = job_or_404(job_id)
        if store().cancel_queued(job_id):
            logs.event(f"job {job_id} cancelled before it started", job=job_id,
                       state="cancelled")
        elif job["state"] == "running" and pool().cancel(job_id):
            logs.event(f"job {job_id}: cancel requested", job=job_id, state="running")
        elif job["state"] in FINISHED:
            raise HTTPException(409, f"job {job_id} is already {job['state']}")
        return _public(job_or_404(job_id))

    @api.delete("/jobs/{job_id}", status_code=204)
    def delete_job(job_id: str = JobId) -> Response:
        job = job_or_404(job_id)
        if job["state"] == "queued":
            store().cancel_queued(job_id)
        if pool().cancel(job_id) and not pool().wait_stopped(job_id, 60):
            raise HTTPException(409, f"job {job_id} did not stop within 60 s; try again")
        store().delete(job_id)
        shutil.rmtree(jobs_dir / job["id"], ignore_errors=True)
        logs.event(f"job {job_id} deleted", job=job_id, state="deleted")
        return Response(status_code=204)

    def job_file(job: dict[str, Any], name: str, download_as: str | None) -> FileResponse:
        path = jobs_dir / job["id"] / name  # both parts come from the database row
        if not path.is_file():
            raise HTTPException(404, f"job {job['id']} has no {name} "
                                     f"(it is {job['state']})")
        return FileResponse(path, media_type=MEDIA_TYPES.get(path.suffix),
                            filename=download_as, content_disposition_type="inline")

    @api.get("/jobs/{job_id}/input", response_class=FileResponse)
    def job_input(job_id: str = JobId):
        job = job_or_404(job_id)
        return job_file(job, job["input_name"], job["filename"])

    @api.get("/jobs/{job_id}/output", response_class=FileResponse)
    def job_output(job_id: str = JobId):
        job = job_or_404(job_id)
        if job["state"] != "done":
            raise HTTPException(409, f"job {job_id} is {job['state']}; no result to download")
        name = f"{Path(job['filename']).stem}_restored{Path(job['output_name']).suffix}"
        return job_file(job, job["output_name"], name)

    @api.get("/jobs/{job_id}/log", response_class=FileResponse)
    def job_log(job_id: str = JobId):
        job = job_or_404(job_id)
        return job_file(job, "output.jsonl", f"{Path(job['filename']).stem}_restored.jsonl")

    @api.get("/jobs/{job_id}/plots/{name}", response_class=FileResponse)
    def job_plot(job_id: str = JobId, name: str = PathParam(pattern=r"^[a-z]+\.png$")):
        job = job_or_404(job_id)
        plot = name.removesuffix(".png")
        if plot not in PLOTS or plot not in job["plots"]:
            raise HTTPException(404, f"job {job_id} has no plot {name}; it has: "
                                     f"{', '.join(p + '.png' for p in job['plots']) or 'none'}")
        return job_file(job, f"plots/{plot}.png", None)

    app.include_router(api)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(HTTPException)
    async def one_line(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)

    return app


def _public(job: dict[str, Any]) -> dict[str, Any]:
    """A job as the API shows it: no file system paths, URLs to its files."""
    done, total = job["frames_done"], job["frames_total"]
    eta = None
    if job["state"] == "running" and job["started_at"] and done and total:
        elapsed = time.time() - job["started_at"]
        eta = round(elapsed * (total - done) / done, 1)
    base = f"/api/jobs/{job['id']}"
    finished = job["state"] == "done"
    return {
        "id": job["id"], "seq": job["seq"], "state": job["state"], "kind": job["kind"],
        "filename": job["filename"], "options": job["options"],
        "progress": {"frames_done": done, "frames_total": total,
                     "fraction": round(done / total, 4) if total else (1.0 if finished else 0.0)},
        "eta_s": eta, "created_at": job["created_at"], "started_at": job["started_at"],
        "finished_at": job["finished_at"], "worker": job["worker"], "attempts": job["attempts"],
        "error": job["error"], "summary": _without_paths(job),
        "urls": {"input": f"{base}/input",
                 "output": f"{base}/output" if finished else None,
                 "log": f"{base}/log" if finished else None,
                 "plots": {name: f"{base}/plots/{name}.png" for name in job["plots"]},
                 "events": f"{base}/events"},
    }


def _without_paths(job: dict[str, Any]) -> dict[str, Any] | None:
    """The run's summary with the client's file name where it names the server's files,
    and the models without where their files lie on the server."""
    summary = job["summary"]
    if summary is None:
        return None
    models = {role: {k: v for k, v in model.items() if k != "path"}
              if isinstance(model, dict) else model
              for role, model in (summary.get("models") or {}).items()}
    return {**summary, "input": job["filename"], "output": Path(job["output_name"]).name,
            "models": models}


def _event_stream(request: Request, snapshot: Callable[[], tuple[Any, bool]]) -> StreamingResponse:
    async def events() -> AsyncIterator[str]:
        last, quiet_since = None, time.monotonic()
        while not await request.is_disconnected():
            value, finished = snapshot()
            text = json.dumps(value)
            if text != last:
                last, quiet_since = text, time.monotonic()
                yield f"data: {text}\n\n"
            elif time.monotonic() - quiet_since > HEARTBEAT_S:
                quiet_since = time.monotonic()
                yield ": still here\n\n"
            if finished:
                return
            await asyncio.sleep(EVENT_POLL_S)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _one_line(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "options"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = f"unknown option; options: {', '.join(FIELDS)}"
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def _upload_schema() -> dict[str, Any]:
    properties: dict[str, Any] = {"file": {"type": "string", "format": "binary",
                                           "description": "a video or an image"}}
    for name, schema in JobOptions.model_json_schema()["properties"].items():
        properties[name] = schema
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {
        "schema": {"type": "object", "required": ["file"], "properties": properties}}}}}
