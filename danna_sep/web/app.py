"""The web page's HTTP side (Starlette): the static page, uploads, a job's live events, its stems and pictures.

::

    GET  /  /app.js  /style.css               the page (package data, no build step, nothing from elsewhere)
    GET  /api/info                            sources and their colours, modes, the upload limit
    POST /api/jobs?mode=full&name=song.mp3    body: the file itself (streamed to disk, capped) → 201 the job
    GET  /api/jobs/{id}                       the job (state, queue place, progress, times, results)
    GET  /api/jobs/{id}/events                server-sent events: the job on every change, until it finishes
    POST /api/jobs/{id}/cancel                cancel (waiting: at once; running: at its next segment)
    GET  /api/jobs/{id}/audio/{stem}          the stem's WAV to play (byte ranges, for seeking)
    GET  /api/jobs/{id}/download/{stem}       the same as an attachment named after the song
    GET  /api/jobs/{id}/picture/{stem}        its spectrogram (PNG)
    GET  /api/jobs/{id}/zip                   every stem and the mixture in one zip

Errors are JSON ``{"error": message}`` with a status that says why (400 bad request, 404 unknown job or stem,
413 too large, 415 not audio we decode, 503 queue full, 507 work folder full). Job ids are random and only ever
looked up in a dict; stem names only in the job's own table: nothing the client sends reaches the file system.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .. import SOURCES, PathLike, __version__
from ..plots import COMPLEMENT_COLOUR, STEM_COLOURS
from .jobs import DONE, FINISHED, MODES, RUNNING, Job, JobQueue, NoRoom, QueueFull, log, safe_name
from .uploads import SUPPORTED, UploadError, receive, recognise, too_large

if TYPE_CHECKING:
    from ..separate import Separator

_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
# the page loads nothing from elsewhere (works offline), and nothing injected into it could
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
EVENT_INTERVAL = 0.2  # s between looks at a job for the event stream
TICK = 1.0  # s: a running job is re-sent at least this often (elapsed and remaining time move on)
KEEPALIVE = 15.0  # s: a comment line keeps a waiting job's stream open through proxies


@dataclass
class WebConfig:
    """What ``danna serve`` sets: models, limits, where files go.

    ``checkpoints``, ``device``, ``download``, ``notify`` (None: the log): as :meth:`Separator.from_checkpoints`;
    ``separator_options``: other
    keyword arguments for it. ``workdir``: None = a temporary folder removed at shutdown. ``keep``: seconds a
    finished job stays; ``cap``: bytes the work folder may hold; ``max_upload``: bytes per upload;
    ``allowed_hosts``: Host headers accepted (None: any), which stops DNS rebinding on a loopback server.
    """

    checkpoints: PathLike | None = None
    device: str = "auto"
    download: bool = False
    notify: Callable[[str], None] | None = None
    max_upload: int = 200 * 2**20
    workdir: Path | None = None
    keep: float = 3600.0
    cap: int = 10 * 2**30
    max_waiting: int = 10
    pictures: bool = True
    allowed_hosts: Sequence[str] | None = None
    separator_options: dict[str, Any] = field(default_factory=dict)


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status, headers=_HEADERS)


def create_app(config: WebConfig, load: Callable[[bool], Separator] | None = None) -> Starlette:
    """The ASGI app. ``load``: ``fast → Separator`` (default :meth:`Separator.from_checkpoints` with ``config``).

    The job queue starts with the app (``app.state.queue``); shutdown (the ASGI lifespan) cancels the jobs and
    removes their files."""
    if load is None:

        def load(fast: bool) -> Separator:
            from ..separate import Separator

            return Separator.from_checkpoints(
                config.checkpoints,
                fast=fast,
                device=config.device,
                download=config.download,
                notify=config.notify or log.info,
                **config.separator_options,
            )

    own_workdir = config.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="danna-serve-")) if config.workdir is None else Path(config.workdir)
    queue = JobQueue(
        workdir, load, keep=config.keep, cap=config.cap, max_waiting=config.max_waiting, pictures=config.pictures
    )
    pages = {
        route: (files(__package__).joinpath(f"static/{name}").read_bytes(), kind)
        for route, (name, kind) in _STATIC.items()
    }

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await run_in_threadpool(queue.close)
            if own_workdir:
                shutil.rmtree(workdir, ignore_errors=True)

    async def page(request: Request) -> Response:
        body, kind = pages[request.url.path]
        return Response(body, media_type=kind, headers=_HEADERS)

    async def info(request: Request) -> Response:
        return JSONResponse(
            {
                "version": __version__,
                "sources": list(SOURCES),
                "colours": {**STEM_COLOURS, "complement": COMPLEMENT_COLOUR},
                "modes": {key: mode.label for key, mode in MODES.items()},
                "max_upload": config.max_upload,
                "keep_minutes": round(config.keep / 60),
                "supported": SUPPORTED,
            },
            headers=_HEADERS,
        )

    async def submit(request: Request) -> Response:
        mode = request.query_params.get("mode", "full")
        if mode not in MODES:
            return _error(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}", 400)
        name = safe_name(request.query_params.get("name", ""))
        expected = config.max_upload
        if "content-length" in request.headers:
            try:
                expected = int(request.headers["content-length"])
            except ValueError:
                return _error("bad Content-Length header", 400)
            if expected > config.max_upload:
                return _error(too_large(config.max_upload), 413)
            if expected == 0:
                return _error("the file is empty (0 bytes)", 400)
        if not await run_in_threadpool(queue.make_room, expected):
            return _error("the server's work folder is full; try again when the songs ahead are done", 507)
        job_id, folder = queue.new_folder()
        try:
            await receive(request.stream(), folder / "upload", config.max_upload)
            path, header = await run_in_threadpool(recognise, folder / "upload", name)
            job = queue.submit(job_id, folder, path, header, name, mode)
        except UploadError as exc:
            queue.discard(folder)
            return _error(str(exc), exc.status)
        except QueueFull as exc:
            queue.discard(folder)
            return _error(str(exc), 503)
        except NoRoom as exc:
            queue.discard(folder)
            return _error(str(exc), 507)
        except ClientDisconnect:  # the client went away mid-upload: nobody reads this answer
            queue.discard(folder)
            return Response(status_code=400)
        except BaseException:
            queue.discard(folder)
            raise
        return JSONResponse(queue.describe(job), 201, headers=_HEADERS)

    def find(request: Request) -> Job:
        job = queue.get(request.path_params["id"])
        if job is None:
            raise HTTPException(404, f"no such job (finished jobs are kept {config.keep / 60:.0f} minutes)")
        return job

    async def status(request: Request) -> Response:
        return JSONResponse(queue.describe(find(request)), headers=_HEADERS)

    async def cancel(request: Request) -> Response:
        job = find(request)
        queue.cancel(job.id)
        return JSONResponse(queue.describe(job), headers=_HEADERS)

    async def events(request: Request) -> Response:
        job = find(request)

        async def stream() -> AsyncIterator[str]:
            version, sent = -1, 0.0
            while True:
                now = time.monotonic()
                if job.version != version or (job.state == RUNNING and now - sent >= TICK):
                    data = queue.describe(job)
                    version, sent = data["version"], now
                    yield f"event: job\ndata: {json.dumps(data)}\n\n"
                    if data["state"] in FINISHED:
                        return
                elif now - sent >= KEEPALIVE:
                    sent = now
                    yield ": waiting\n\n"
                await asyncio.sleep(EVENT_INTERVAL)

        headers = {**_HEADERS, "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    def stem_file(request: Request, table: str) -> tuple[Job, str, Path]:
        job = find(request)
        stem = request.path_params["stem"]
        path = getattr(job, table).get(stem)
        if path is None:
            raise HTTPException(404, f"this job has no {stem!r} ({job.state})")
        if not path.is_file():
            raise HTTPException(404, "this job's files were removed")
        return job, stem, path

    async def audio(request: Request) -> Response:
        _, _, path = stem_file(request, "stems")
        return FileResponse(path, media_type="audio/wav", headers=_HEADERS)

    async def download(request: Request) -> Response:
        job, stem, path = stem_file(request, "stems")
        return FileResponse(path, media_type="audio/wav", filename=f"{job.track} - {stem}.wav", headers=_HEADERS)

    async def picture(request: Request) -> Response:
        _, _, path = stem_file(request, "pictures")
        return FileResponse(path, media_type="image/png", headers=_HEADERS)

    async def archive(request: Request) -> Response:
        job = find(request)
        if job.state != DONE:
            raise HTTPException(404, f"this job has no stems ({job.state})")
        try:
            path = await run_in_threadpool(queue.zip, job)
        except FileNotFoundError:
            raise HTTPException(404, "this job's files were removed") from None
        return FileResponse(path, media_type="application/zip", filename=f"{job.track} - stems.zip", headers=_HEADERS)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _error(exc.detail, exc.status_code)

    routes = [Route(path, page) for path in _STATIC]
    routes += [
        Route("/api/info", info),
        Route("/api/jobs", submit, methods=["POST"]),
        Route("/api/jobs/{id}", status),
        Route("/api/jobs/{id}/events", events),
        Route("/api/jobs/{id}/cancel", cancel, methods=["POST"]),
        Route("/api/jobs/{id}/audio/{stem}", audio),
        Route("/api/jobs/{id}/download/{stem}", download),
        Route("/api/jobs/{id}/picture/{stem}", picture),
        Route("/api/jobs/{id}/zip", archive),
    ]
    middleware = (
        [Middleware(TrustedHostMiddleware, allowed_hosts=list(config.allowed_hosts))] if config.allowed_hosts else []
    )
    app = Starlette(
        routes=routes, middleware=middleware, lifespan=lifespan, exception_handlers={HTTPException: http_error}
    )
    app.state.queue = queue
    app.state.workdir = workdir
    return app
