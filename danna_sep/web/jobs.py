"""Separation jobs of the web page: one runs at a time in a worker thread, the others wait in order.

::

    submit(upload) → queued ─ worker ─→ running: Separator.separate_to_files → mixture.wav → pictures → done
                       │                   │ (progress callback: fraction, cancel checked between segments)
                       └─ cancel ──────────┴──→ cancelled          any error ─→ failed (the message kept)

Every job owns one folder ``workdir/<id>/`` (the id is random; every name inside is ours; a job that fails or is
cancelled keeps its record, for the page, but no files). Finished jobs are
removed ``keep`` seconds after they finish, and before a new upload the oldest finished jobs go first until the
work folder stays under its cap. Every change bumps ``Job.version``, which the event stream watches.

Nothing here knows HTTP; :mod:`danna_sep.web.app` serves it.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import shutil
import threading
import time
import warnings
import zipfile
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import SAMPLE_RATE, SOURCES
from ..errors import DannaError
from ..plots import MIXTURE, stem_colour

if TYPE_CHECKING:
    from ..audio import AudioInfo
    from ..separate import Progress, Separator

log = logging.getLogger("danna_sep.web")

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINISHED = (DONE, FAILED, CANCELLED)
SEPARATION_SHARE = 0.95  # of a job's progress bar; the mixture and the pictures take the rest


@dataclass(frozen=True)
class Mode:
    """A choice on the page: which blend (``fast``: without X-UMX) and which stems."""

    label: str
    fast: bool
    two_stems: str | None


MODES: dict[str, Mode] = {
    "full": Mode("Full: X-UMX + U-Net + Demucs, four stems", fast=False, two_stems=None),
    "fast": Mode("Fast: U-Net + Demucs, four stems", fast=True, two_stems=None),
    "two-stems": Mode("Two stems: vocals and accompaniment", fast=False, two_stems="vocals"),
}


class Cancelled(Exception):
    """Raised from the progress callback to stop a running separation between two segments."""


class QueueFull(DannaError):
    """Too many jobs are waiting."""


class NoRoom(DannaError):
    """The work folder is at its size cap and no finished job can be removed to make room."""


@dataclass(eq=False)
class Job:
    """One song: where its files are and how far it got. Change it only under the queue's lock."""

    id: str
    name: str  # the client's file name, for display and download names only
    mode: str
    folder: Path
    input: Path | None = None
    info: AudioInfo | None = None
    reserved: int = 0  # bytes its outputs may take (counted against the cap until it finishes)
    state: str = QUEUED
    stage: str = ""
    fraction: float = 0.0
    created: float = field(default_factory=time.monotonic)
    started: float | None = None
    finished: float | None = None
    error: str = ""
    stems: dict[str, Path] = field(default_factory=dict)  # stem (and "mixture") → wav, once done
    pictures: dict[str, Path] = field(default_factory=dict)
    clipped: dict[str, int] = field(default_factory=dict)
    cancel: threading.Event = field(default_factory=threading.Event)
    version: int = 0

    @property
    def track(self) -> str:
        """The song's name without its extension, for download names."""
        stem = self.name.rsplit(".", 1)[0] if "." in self.name[1:] else self.name
        return stem or "song"

    def zip_path(self) -> Path:
        return self.folder / "stems.zip"


def estimate_bytes(info: AudioInfo, stems: int) -> int:
    """What a job's outputs may take on disk: 16-bit stems and mixture at 44.1 kHz, their zip, and the float WAV
    that an input at another rate is resampled into while it is read."""
    samples = info.frames * SAMPLE_RATE // max(info.sample_rate, 1) + 1024
    channels = 1 if info.channels == 1 else 2
    return samples * (channels * 2 * (stems + 1) * 2 + 2 * 4)


def safe_name(name: str, limit: int = 100) -> str:
    """A client's file name made harmless for display and ``Content-Disposition``: its last path component,
    printable characters only, no quotes, at most ``limit`` characters; ``song`` if nothing is left."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable() and c not in "\"'<>|*?:;").strip(" .")
    return name[:limit] or "song"


def new_id() -> str:
    """A random job id (128 bits, URL-safe): unguessable, so one user cannot reach another's job."""
    return secrets.token_urlsafe(16)


class JobQueue:
    """The jobs of one server: submit, look up, cancel; a worker thread runs them one at a time.

    Args:
        workdir: folder for the job folders (created; only the folders of this queue's jobs are removed).
        load: ``fast → Separator`` (called once per value and kept: :meth:`separator`).
        keep: seconds a finished job stays before its files are removed.
        cap: bytes the work folder may hold (uploads, stems, pictures, zips, and what queued jobs will write).
        max_waiting: jobs that may wait at once; more are refused (:class:`QueueFull`).
        pictures: draw a spectrogram PNG per stem (needs matplotlib).
    """

    def __init__(
        self,
        workdir: Path,
        load: Callable[[bool], Separator],
        *,
        keep: float = 3600.0,
        cap: int = 10 * 2**30,
        max_waiting: int = 10,
        pictures: bool = True,
    ):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.load = load
        self.keep, self.cap, self.max_waiting, self.pictures = keep, cap, max_waiting, pictures
        self.jobs: dict[str, Job] = {}
        self.waiting: deque[Job] = deque()
        self.running: Job | None = None
        self._separators: dict[bool, Separator] = {}
        self._uploads: set[Path] = set()  # folders of uploads being received (not yet jobs)
        self._lock = threading.Condition()  # an RLock inside: describe() asks position() under it
        self._zip_lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._closed = False
        self._worker = threading.Thread(target=self._work, name="danna-serve-worker", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------------------------------------- public

    def new_folder(self) -> tuple[str, Path]:
        """A fresh job id and its (new, empty) folder, for an upload to be written into (then :meth:`submit`
        or :meth:`discard`)."""
        job_id = new_id()
        folder = self.workdir / job_id
        folder.mkdir()
        with self._lock:
            self._uploads.add(folder)
        return job_id, folder

    def discard(self, folder: Path) -> None:
        """Remove the folder of an upload that did not become a job."""
        with self._lock:
            self._uploads.discard(folder)
        shutil.rmtree(folder, ignore_errors=True)

    def make_room(self, nbytes: int) -> bool:
        """Remove expired jobs, then finished ones, oldest first, until ``nbytes`` more fit under the cap.
        → whether they fit."""
        self.expire()
        with self._lock:
            while self._used() + nbytes > self.cap:
                done = sorted((j for j in self.jobs.values() if j.state in FINISHED), key=lambda j: j.finished or 0)
                if not done:
                    return False
                self._remove(done[0])
            return True

    def submit(self, job_id: str, folder: Path, upload: Path, info: AudioInfo, name: str, mode: str) -> Job:
        """Queue the decoded upload ``upload`` (inside ``folder``, from :meth:`new_folder`) as job ``job_id``.

        Raises:
            QueueFull: :attr:`max_waiting` jobs wait already. NoRoom: its outputs would not fit under the cap,
            even with every finished job removed.
        """
        spec = MODES[mode]
        with self._lock:
            if self._closed:
                raise QueueFull("the server is shutting down")
            if len(self.waiting) >= self.max_waiting:
                raise QueueFull(f"{len(self.waiting)} songs are already waiting; try again later")
            job = Job(job_id, name, mode, folder, upload, info, estimate_bytes(info, 2 if spec.two_stems else 4))
            self._uploads.discard(folder)
            self.jobs[job.id] = job  # counted against the cap, not yet waiting
            if not self.make_room(0):
                del self.jobs[job.id]
                self._uploads.add(folder)  # the caller discards it
                raise NoRoom("the server's work folder is full; try again when the songs ahead are done")
            self.waiting.append(job)
            for other in self.waiting:
                self._changed(other)
        return job

    def separator(self, fast: bool) -> Separator:
        """The separator of the fast blend or the full one, loaded on first use (``load``) and kept."""
        with self._load_lock:
            if fast not in self._separators:
                self._separators[fast] = self.load(fast)
            return self._separators[fast]

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self.jobs.get(job_id)

    def cancel(self, job_id: str, reason: str = "") -> Job | None:
        """Cancel a waiting job at once, a running one at its next segment; finished jobs stay as they are."""
        with self._lock:
            job = self.jobs.get(job_id)
            if job is None or job.state in FINISHED:
                return job
            job.cancel.set()
            if job.state == QUEUED:
                self.waiting.remove(job)
                shutil.rmtree(job.folder, ignore_errors=True)
                self._finish(job, CANCELLED, reason)
                for other in self.waiting:
                    self._changed(other)
            return job

    def position(self, job: Job) -> int:
        """1 for the next job to run, 2 for the one after, …; 0 when not waiting."""
        with self._lock:
            try:
                return self.waiting.index(job) + 1
            except ValueError:
                return 0

    def describe(self, job: Job) -> dict[str, Any]:
        """What the page shows of ``job`` (JSON-ready): state, queue place, progress, times, results."""
        now = time.monotonic()
        with self._lock:
            elapsed = max((job.finished or now) - job.started, 0.0) if job.started is not None else 0.0
            remaining = None
            if job.state == RUNNING and job.fraction > 0.02:
                remaining = elapsed * (1 - job.fraction) / job.fraction
            base = f"api/jobs/{job.id}"
            return {
                "id": job.id,
                "name": job.name,
                "mode": job.mode,
                "state": job.state,
                "stage": job.stage,
                "position": self.position(job),
                "fraction": round(job.fraction, 4),
                "elapsed": round(elapsed, 1),
                "remaining": None if remaining is None else round(remaining, 1),
                "duration": round(job.info.duration, 2) if job.info else None,
                "error": job.error,
                "stems": [
                    {
                        "name": stem,
                        "colour": stem_colour(stem),
                        "audio": f"{base}/audio/{stem}",
                        "download": f"{base}/download/{stem}",
                        "picture": f"{base}/picture/{stem}" if stem in job.pictures else None,
                        "clipped": job.clipped.get(stem, 0),
                    }
                    for stem in job.stems
                ],
                "zip": f"{base}/zip" if job.state == DONE else None,
                "version": job.version,
            }

    def wait(self, job: Job, version: int, timeout: float) -> int:
        """Block until ``job.version`` differs from ``version`` (or ``timeout`` s); → its version."""
        with self._lock:
            self._lock.wait_for(lambda: job.version != version or self._closed, timeout)
            return job.version

    def zip(self, job: Job) -> Path:
        """The stems of a finished job in one zip (``<track>/<stem>.wav``, stored: WAV does not deflate much),
        written once, atomically."""
        path = job.zip_path()
        with self._zip_lock:
            if path.exists():
                return path
            tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
                for stem, wav in job.stems.items():
                    archive.write(wav, f"{job.track}/{stem}.wav")
            tmp.replace(path)
            return path

    def expire(self) -> None:
        """Remove the jobs that finished more than ``keep`` seconds ago."""
        now = time.monotonic()
        with self._lock:
            for job in list(self.jobs.values()):
                if job.state in FINISHED and now - (job.finished or now) > self.keep:
                    self._remove(job)

    def close(self) -> None:
        """Cancel every job, stop the worker and remove every job folder."""
        with self._lock:
            self._closed = True
            for job in list(self.jobs.values()):
                job.cancel.set()
            self._lock.notify_all()
        self._worker.join(timeout=30)
        with self._lock:
            for job in list(self.jobs.values()):
                self._remove(job)
            for folder in list(self._uploads):
                shutil.rmtree(folder, ignore_errors=True)
            self._uploads.clear()

    # ---------------------------------------------------------------------------------------------- internals

    def _used(self) -> int:
        """Bytes in the job and upload folders plus what unfinished jobs may still write."""
        total = 0
        for folder in [*self._uploads, *(j.folder for j in self.jobs.values())]:
            for f in folder.rglob("*"):
                with contextlib.suppress(OSError):  # removed meanwhile (a zip's temporary file)
                    total += f.stat().st_size if f.is_file() else 0
        return total + sum(j.reserved for j in self.jobs.values() if j.state not in FINISHED)

    def _changed(self, job: Job) -> None:
        job.version += 1
        self._lock.notify_all()

    def _finish(self, job: Job, state: str, error: str = "") -> None:
        job.state, job.error, job.finished, job.stage = state, error, time.monotonic(), ""
        if job.started is None:
            job.started = job.finished
        if self.running is job:
            self.running = None
        self._changed(job)

    def _remove(self, job: Job) -> None:
        shutil.rmtree(job.folder, ignore_errors=True)
        self.jobs.pop(job.id, None)
        if job in self.waiting:
            self.waiting.remove(job)

    def _work(self) -> None:
        last_sweep = time.monotonic()
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self.waiting or self._closed, timeout=min(30.0, self.keep / 4 + 0.01))
                if self._closed:
                    return
                job = self.waiting.popleft() if self.waiting else None
                if job is not None:
                    job.state, job.started, job.stage = RUNNING, time.monotonic(), "loading models"
                    self.running = job
                    for other in (job, *self.waiting):
                        self._changed(other)
            if job is not None:
                self._run(job)
            if time.monotonic() - last_sweep > min(30.0, self.keep / 4):
                self.expire()
                last_sweep = time.monotonic()

    def _run(self, job: Job) -> None:
        try:
            self._separate(job)
        except Cancelled:
            with self._lock:
                self._finish(job, CANCELLED, "cancelled")
        except DannaError as exc:
            with self._lock:
                self._finish(job, FAILED, _without_path(str(exc), job))
        except Exception as exc:  # a bug or an exhausted machine must not stop the worker
            log.exception("job %s (%s) failed", job.id, job.name)
            with self._lock:
                self._finish(job, FAILED, f"internal error ({type(exc).__name__}: {_without_path(str(exc), job)})")
        else:
            with self._lock:
                self._finish(job, DONE)
        finally:
            with self._lock:
                job.reserved = 0
            # the upload is no longer needed (the page plays mixture.wav); a failed job keeps no files
            if job.input is not None:
                job.input.unlink(missing_ok=True)
            if job.state != DONE:
                shutil.rmtree(job.folder, ignore_errors=True)

    def _separate(self, job: Job) -> None:
        from ..audio import ClippingWarning, load_audio, save_audio

        assert job.input is not None and job.info is not None
        spec = MODES[job.mode]
        separator = self.separator(spec.fast)
        self._check(job)

        def progress(p: Progress) -> None:
            self._check(job)
            with self._lock:
                job.fraction = max(SEPARATION_SHARE * min(p.fraction, 1.0), job.fraction)
                self._changed(job)

        stems = [spec.two_stems, "accompaniment"] if spec.two_stems else list(SOURCES)
        out = job.folder / "stems"
        out.mkdir(exist_ok=True)
        destinations = {stem: out / f"{stem}.wav" for stem in stems}
        with self._lock:
            job.stage = "separating"
            self._changed(job)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ClippingWarning)  # counted per stem and shown on the page
            result = separator.separate_to_files(job.input, destinations, progress=progress)
            self._check(job)
            # the mixture as the stems are (44.1 kHz WAV, the input's channels), so that the browser plays it
            # whatever the upload's format and the players stay in step
            mixture, _ = load_audio(job.input, SAMPLE_RATE, stereo=job.info.channels != 1)
            save_audio(out / f"{MIXTURE}.wav", mixture, SAMPLE_RATE)
        files = {**result.outputs, MIXTURE: out / f"{MIXTURE}.wav"}
        with self._lock:
            job.clipped = {s: n for s, n in result.clipped.items() if n}
        if self.pictures:
            self._draw(job, files, mixture)
        with self._lock:
            job.stems, job.fraction = files, 1.0

    def _draw(self, job: Job, files: dict[str, Path], mixture: Any) -> None:
        import soundfile as sf

        from ..plots import spectrogram_png

        folder = job.folder / "pictures"
        folder.mkdir(exist_ok=True)
        with self._lock:
            job.stage = "drawing"
            self._changed(job)
        for i, (stem, wav) in enumerate(files.items()):
            self._check(job)
            audio = mixture.numpy() if stem == MIXTURE else sf.read(wav, dtype="float32", always_2d=True)[0].T
            path = spectrogram_png(audio, SAMPLE_RATE, folder / f"{stem}.png", stem, stem=stem)
            with self._lock:
                job.pictures[stem] = path
                job.fraction = SEPARATION_SHARE + (1 - SEPARATION_SHARE) * (i + 1) / len(files)
                self._changed(job)

    def _check(self, job: Job) -> None:
        if job.cancel.is_set():
            raise Cancelled


def _without_path(message: str, job: Job) -> str:
    """An error's text with our file names replaced by the client's."""
    if job.input is not None:
        message = message.replace(str(job.input), job.name)
    return message.replace(str(job.folder), "…")
