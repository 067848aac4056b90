"""Getting the released model files into a checkpoint folder: the transfer, its checks, and the folder's lock file.

::

    entry ── source? ── None: $DANNA_MODEL_URL, else the entry's own URLs in order (the next one on failure)
      │                 http(s) base: <base>/<name> only (a lab mirror)      local folder: copy <dir>/<name>
      ▼
    <folder>/<name>.part ── GET with ``Range: bytes=<part size>-``: 206 appends, 200 starts over, 416 = complete;
      │                      Drive's "can't scan for viruses" page followed; retries with backoff
      ▼
    HTML? · sha256 = the registry's / the lock's · verify_file (load, parameter count, I/O contract)
      ▼
    rename to <folder>/<name>, then record sha256, size, source and time in <folder>/danna-sep.lock.json

The first verified copy of a file fixes its hash in the lock: a later download or import with another hash is
refused unless ``force``, so a silently changed or damaged file never replaces the one a lab's results came from.

Why requests and a small parser of Drive's pages instead of a download library. gdown (the usual Drive
downloader) runs its confirm-page and quota handling only for URLs on drive.google.com / docs.google.com, so a test
against a local server cannot exercise it; it prints its own messages, has its own resume semantics
(``resume=True`` continues a temporary file it names itself) and pulls in beautifulsoup4. pooch writes every
download from its first byte (no HTTP ``Range`` resume) and knows nothing of Drive's confirm page.
huggingface_hub resumes and verifies well, but only files on the Hub, and these are not. What Drive needs is
small: recognise its pages and follow one form, one link or one cookie, with the standard library's html.parser.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import BinaryIO, Literal
from urllib.parse import urljoin, urlparse

import requests

from .. import PathLike, __version__
from ..checkpoints import atomic_write
from ..errors import CheckpointError, DannaError
from .registry import ReleasedFile
from .verify import Verified, looks_like_html, sha256_of, verify_file

OFFLINE_ENV = "DANNA_OFFLINE"
SOURCE_ENV = "DANNA_MODEL_URL"
LOCK_NAME = "danna-sep.lock.json"
LOCK_FORMAT = 1
CHUNK = 64 * 1024  # bytes per network read and per write: a broken transfer keeps all but the last chunk
TIMEOUT = (15.0, 60.0)  # seconds to connect, and between two reads
MAX_PAGES = 3  # web pages followed before the file (Drive: one warning page)
PAGE_LIMIT = 2 << 20  # bytes of a web page read to understand it
ENSURE_NOTE = f"once; --no-download or {OFFLINE_ENV}=1 forbids this"
_QUOTA_MARKS = (
    "too many users have viewed or downloaded this file recently",
    "quota exceeded",
    "download quota for this file has been exceeded",
)

Notify = Callable[[str], None]


class DownloadError(DannaError):
    """A model file cannot be fetched (network, server, disk, offline mode); the message names the file and the fix."""


class _DiskFull(DownloadError):
    """No other source helps."""


class _Retry(Exception):
    """A transient failure (connection, timeout, 5xx/429, transfer cut short) worth another try."""

    def __init__(self, kind: str, text: str):
        super().__init__(text)
        self.kind = kind


@dataclass(frozen=True)
class RetryPolicy:
    """``tries`` attempts per URL, waiting ``delay · 2**k`` seconds before try k + 2 (1, 2, 4 s by default)."""

    tries: int = 4
    delay: float = 1.0
    sleep: Callable[[float], None] = time.sleep

    def wait(self, attempt: int) -> None:
        self.sleep(self.delay * 2**attempt)


RETRY = RetryPolicy()


def offline() -> bool:
    """True when ``$DANNA_OFFLINE`` is 1, true or yes: no network access, local folders only."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes")


# ------------------------------------------------------------------------------------------------- lock file


def lock_path(folder: Path) -> Path:
    return Path(folder) / LOCK_NAME


def read_lock(folder: Path) -> dict[str, dict]:
    """file name → its record (sha256, size, source, verified, params, detail); empty without a lock file."""
    path = lock_path(folder)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise DownloadError(
            f"{path}: unreadable lock file ({exc}); repair it or delete it to re-verify every "
            "file on the next `danna download`"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        raise DownloadError(f"{path}: not a danna-sep lock file (no 'files' object); delete it to start over")
    return data["files"]


def _record(folder: Path, verified: Verified, source: str) -> None:
    files = read_lock(folder)
    files[verified.name] = {
        "sha256": verified.sha256,
        "size": verified.size,
        "source": source,
        "verified": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "params": verified.params,
        "detail": verified.detail,
    }
    text = json.dumps({"format": LOCK_FORMAT, "files": dict(sorted(files.items()))}, indent=2) + "\n"
    atomic_write(lock_path(folder), text.encode())


# ------------------------------------------------------------------------------------------------ sources


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def _host(url: str) -> str:
    return urlparse(url).hostname or url


def _candidates(entry: ReleasedFile, source: PathLike | None) -> list[str]:
    """Where ``entry`` comes from: URLs, or one local file path."""
    given = "--source"
    if source is None:
        source, given = os.environ.get(SOURCE_ENV) or None, f"${SOURCE_ENV}"
    if source is None:
        if not entry.sources:
            raise DownloadError(
                f"{entry.name}: the registry gives no download URL; put the file into a folder DIR "
                f"and run `danna download --source DIR {entry.name}`"
            )
        return list(entry.sources)
    text = os.fspath(source)
    if _is_url(text):
        return [f"{text.rstrip('/')}/{entry.name}"]
    folder = Path(text).expanduser()
    if not folder.is_dir():
        raise DownloadError(f"{given} {text}: neither a folder nor an http(s) URL")
    return [str(folder / entry.name)]


def _by_hand(entry: ReleasedFile, url: str) -> str:
    """How to get the file without this module."""
    return (
        f"open {url} in a browser, save the file into a folder DIR and run `danna download --source DIR {entry.name}`"
    )


# ------------------------------------------------------------------------------------------ Drive's pages


class _Page(HTMLParser):
    """The parts of a web page that tell what it is: forms with their inputs, confirm links, the text."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[dict, dict[str, str]]] = []
        self.links: list[str] = []
        self.text: list[str] = []
        self._form: tuple[dict, dict[str, str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._form = (a, {})
            self.forms.append(self._form)
        elif tag == "input" and self._form is not None and a.get("name"):
            self._form[1][a["name"]] = a.get("value", "")
        elif tag == "a" and "confirm=" in a.get("href", ""):
            self.links.append(a["href"])  # html.parser has already turned &amp; into &

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _follow_page(
    html: str, url: str, response: requests.Response, session: requests.Session, entry: ReleasedFile
) -> tuple[str, dict[str, str]]:
    """The request that Drive's warning page leads to: its download form (now), a ``confirm=`` link or a
    ``download_warning`` cookie (older pages). Raises :class:`DownloadError` for a quota page or any other page."""
    page = _Page()
    page.feed(html)
    text = " ".join(" ".join(page.text).split())
    if any(mark in text.lower() for mark in _QUOTA_MARKS):
        raise DownloadError(
            f"Google Drive refuses {entry.name} for now: its download quota is exceeded (too many users downloaded "
            f"it recently); try again in a few hours, or open {url} in a browser, save the file into a folder DIR "
            f"and run `danna download --source DIR {entry.name}`"
        )
    for attrs, inputs in page.forms:
        is_download = attrs.get("id") == "download-form" or attrs.get("action", "").rstrip("/").endswith("/download")
        if is_download and attrs.get("method", "get").lower() == "get":
            return urljoin(url, attrs.get("action") or url), inputs
    if page.links:
        return urljoin(url, page.links[0]), {}
    cookies = {**session.cookies.get_dict(), **response.cookies.get_dict()}
    token = next((v for k, v in cookies.items() if k.startswith("download_warning")), None)
    if token:
        return url, {"confirm": token}
    title = " ".join(text.split()[:12])
    raise DownloadError(
        f'{url} answered a web page instead of {entry.name} ("{title}…"): the link no longer '
        f"leads to the file; {_by_hand(entry, url)}"
    )


# ------------------------------------------------------------------------------------------------- transfer


def _write_block(fh, data: bytes) -> None:
    """One write of a transfer or copy (its own function, so that the tests can make the disk fill up)."""
    fh.write(data)


def _disk_full(part: Path, needed: int | None) -> _DiskFull:
    amount = f"{max(needed, 0) / 1e6:.1f} MB needed" if needed is not None else "more space needed"
    return _DiskFull(
        f"disk full while writing {part}: {amount}, free some space (what was written is kept; the "
        "same command resumes it)"
    )


@contextlib.contextmanager
def _writing(part: Path, total: int | None, mode: Literal["wb", "ab"]) -> Iterator[BinaryIO]:
    """``part`` open for writing, fsynced at the end; running out of space (before or while writing) is a
    :class:`DownloadError` that says how much is needed."""
    offset = _size(part) if mode == "ab" else 0
    if total is not None and shutil.disk_usage(part.parent).free < total - offset:
        raise _disk_full(part, total - offset)
    try:
        fh = open(part, mode)  # noqa: SIM115 (apart, for its own error message; the with below closes it)
    except OSError as exc:
        raise DownloadError(f"cannot write {part} ({exc.strerror or exc}); choose another folder with --dir") from None
    try:
        with fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:  # requests' errors are OSErrors too, without an errno: they pass through
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _disk_full(part, None if total is None else total - _size(part)) from None
        raise


def _bar(entry: ReleasedFile, total: int | None, initial: int, quiet: bool):
    """A bytes progress bar on stderr (size and speed), or None."""
    if quiet:
        return None
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        unit="B",
        unit_scale=True,
        unit_divisor=1000,
        desc=entry.name,
        file=sys.stderr,
        dynamic_ncols=True,
        leave=False,
    )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _take(chunks: Iterator[bytes], limit: int) -> Iterator[bytes]:
    got = 0
    for chunk in chunks:
        yield chunk
        got += len(chunk)
        if got >= limit:
            return


def _range_start(header: str) -> int | None:
    """The first byte of ``Content-Range: bytes START-END/TOTAL``."""
    match = re.match(r"\s*bytes\s+(\d+)-", header)
    return int(match.group(1)) if match else None


def _reason(exc: BaseException) -> str:
    """The innermost cause of a requests/urllib3 error, without object addresses."""
    inner: BaseException = exc
    for _ in range(6):
        nxt = getattr(inner, "reason", None)
        if not isinstance(nxt, BaseException):
            nxt = inner.args[0] if inner.args and isinstance(inner.args[0], BaseException) else None
        if nxt is None:
            break
        inner = nxt
    text = re.sub(r"<[^>]*>:?\s*", "", str(inner)).strip() or type(inner).__name__
    return text[:200]


def _connection_text(exc: BaseException, url: str) -> str:
    host, text = _host(url), repr(exc) + _reason(exc)
    if any(
        m in text
        for m in (
            "NameResolution",
            "Name or service not known",
            "name resolution",
            "getaddrinfo",
            "nodename nor servname",
        )
    ):
        return f"cannot look up {host} (DNS failed: no network?)"
    if "refused" in text.lower():
        return f"{host} refused the connection"
    return f"no connection to {host} ({_reason(exc)})"


def _status_error(response: requests.Response, url: str, entry: ReleasedFile) -> DownloadError:
    code, host = response.status_code, _host(url)
    if code == 403:
        return DownloadError(
            f"{host} refuses {entry.name} (403 Forbidden) at {url}: the file is no longer shared publicly, or its "
            f"download quota is exceeded; {_by_hand(entry, url)}"
        )
    if code == 404:
        return DownloadError(
            f"{entry.name} is not at {url} (404 Not Found): a dead link; set ${SOURCE_ENV} to a "
            f"mirror, or {_by_hand(entry, url)}"
        )
    return DownloadError(f"{host} answered {code} {response.reason} for {entry.name} at {url}; {_by_hand(entry, url)}")


class _Transfer:
    """One URL into ``part``: the request (following Drive's pages, resuming with Range) and the stream."""

    def __init__(
        self,
        session: requests.Session,
        url: str,
        part: Path,
        entry: ReleasedFile,
        folder: Path,
        quiet: bool,
        notify: Notify,
        note: str,
    ):
        self.session, self.url, self.part, self.entry, self.folder = session, url, part, entry, folder
        self.quiet, self.notify, self.note = quiet, notify, note

    def _get(self, url: str, params: dict | None, offset: int) -> requests.Response:
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            response = self.session.get(url, params=params, headers=headers, stream=True, timeout=TIMEOUT)
        except requests.Timeout as exc:
            raise _Retry("timeout", f"{_host(url)} did not answer within {TIMEOUT[1]:.0f} s") from exc
        except requests.ConnectionError as exc:
            raise _Retry("connection", _connection_text(exc, url)) from exc
        except requests.RequestException as exc:  # an invalid URL, too many redirects, ...
            raise DownloadError(f"{self.entry.name}: cannot request {url} ({_reason(exc)})") from None
        if response.status_code >= 500 or response.status_code == 429:
            response.close()
            raise _Retry("status", f"{_host(url)} answered {response.status_code} {response.reason}")
        return response

    def _open(self) -> tuple[requests.Response | None, int, bytes]:
        """The response that carries the file, the offset it starts at, and its first chunk; no response when the
        server says the part is already complete (416)."""
        url, params = self.url, None
        for _ in range(MAX_PAGES + 1):
            offset = _size(self.part)
            response = self._get(url, params, offset)
            if response.status_code == 416 and offset:
                response.close()
                return None, offset, b""
            if response.status_code >= 400:
                response.close()
                raise _status_error(response, url, self.entry)
            chunks = response.iter_content(CHUNK)
            first = next(chunks, b"")
            if "text/html" in response.headers.get("Content-Type", "") or looks_like_html(first):
                body = first + b"".join(_take(chunks, PAGE_LIMIT))
                response.close()
                url, params = _follow_page(
                    body.decode("utf-8", "replace"), response.url or url, response, self.session, self.entry
                )
                continue
            if response.status_code == 206:
                start = _range_start(response.headers.get("Content-Range", ""))
                if start != offset:  # not the bytes asked for: start over
                    response.close()
                    self.part.unlink(missing_ok=True)
                    raise _Retry("range", f"{_host(url)} sent bytes from {start} when asked from {offset}")
                return response, offset, first
            return response, 0, first  # 200: the whole file (a server that ignores Range: start over)
        raise DownloadError(
            f"{self.url}: more than {MAX_PAGES} web pages before {self.entry.name}; {_by_hand(self.entry, self.url)}"
        )

    def run(self) -> None:
        """One attempt; raises :class:`_Retry` for what another attempt may cure (the part keeps what came)."""
        response, offset, first = self._open()
        if response is None:
            self.notify(f"{self.part.name} is complete (the server has nothing more to send); verifying it")
            return
        length = response.headers.get("Content-Length", "")
        known = offset + int(length) if length.isdigit() else None  # the server's word, for the end check
        total = known or self.entry.size  # for the notice, the bar and the free-space check
        what = (
            f"resuming {self.entry.name} at {offset / 1e6:.1f} of {self.entry.size_text(total)}"
            if offset
            else f"downloading {self.entry.name} ({self.entry.size_text(total)})"
        )
        self.notify(f"{what} from {_host(self.url)} into {self.folder}" + (f" ({self.note})" if self.note else ""))
        bar = _bar(self.entry, total, offset, self.quiet)
        try:
            with response, _writing(self.part, total, "ab" if offset else "wb") as fh:
                for block in itertools.chain([first] if first else [], response.iter_content(CHUNK)):
                    _write_block(fh, block)
                    if bar is not None:
                        bar.update(len(block))
        except requests.RequestException as exc:  # connection lost, body cut short, read timeout
            raise _Retry("broken", f"the transfer from {_host(self.url)} broke off ({_reason(exc)})") from exc
        finally:
            if bar is not None:
                bar.close()
        if known is not None and _size(self.part) < known:
            raise _Retry(
                "broken", f"the transfer from {_host(self.url)} ended at {_size(self.part):,} of {known:,} bytes"
            )


def _download(transfer: _Transfer, retry: RetryPolicy) -> None:
    """``transfer`` with retries and exponential backoff; the message after the last try says what failed."""
    for attempt in range(1, retry.tries + 1):
        try:
            return transfer.run()
        except _Retry as exc:
            if attempt < retry.tries:
                retry.wait(attempt - 1)
                continue
            name, url, part = transfer.entry.name, transfer.url, transfer.part
            if exc.kind in ("broken", "range"):
                kept = f"{part} keeps {_size(part) / 1e6:.1f} MB: run the same command again to resume"
                raise DownloadError(f"{name}: {exc} ({attempt} tries); {kept}") from None
            if exc.kind == "status":
                raise DownloadError(
                    f"{name}: {exc} ({attempt} tries) at {url}; try again later, or set ${SOURCE_ENV} to a mirror"
                ) from None
            raise DownloadError(
                f"{name}: {exc} ({attempt} tries); check the network, or {_by_hand(transfer.entry, url)}"
            ) from None


def _copy(src: Path, part: Path, entry: ReleasedFile, folder: Path, quiet: bool, notify: Notify, note: str) -> None:
    """A local file (fetched by hand, or a lab's share) into ``part``."""
    if not src.is_file():
        url = entry.sources[0] if entry.sources else "it"
        raise DownloadError(
            f"{entry.name} is not in {src.parent}: fetch {url} by hand into that folder first, "
            "or give --source the folder that holds it"
        )
    with open(src, "rb") as fin:
        if looks_like_html(fin.read(512)):
            raise CheckpointError(
                f"{src}: an HTML page was saved instead of the model {entry.name}; fetch it "
                "again (a browser saves Drive's warning page when the download did not start)"
            )
        fin.seek(0)
        total = src.stat().st_size
        notify(
            f"copying {entry.name} ({entry.size_text(total)}) from {src.parent} into {folder}"
            + (f" ({note})" if note else "")
        )
        bar = _bar(entry, total, 0, quiet)
        try:
            with _writing(part, total, "wb") as fh:
                for block in iter(lambda: fin.read(16 * CHUNK), b""):
                    _write_block(fh, block)
                    if bar is not None:
                        bar.update(len(block))
        finally:
            if bar is not None:
                bar.close()


# ---------------------------------------------------------------------------------------------------- fetch


def _check_registry_hash(entry: ReleasedFile, sha: str, where: Path) -> None:
    if entry.sha256 and sha != entry.sha256:
        raise CheckpointError(
            f"{where}: sha256 {sha[:12]}… is not that of {entry.name} in the registry "
            f"({entry.sha256[:12]}…): a damaged or different file"
        )


def _lock_mismatch(entry: ReleasedFile, sha: str, folder: Path, where: Path, record: dict, fix: str) -> CheckpointError:
    return CheckpointError(
        f"{where}: sha256 {sha[:12]}… differs from the {entry.name} recorded in {lock_path(folder)} "
        f"({str(record.get('sha256'))[:12]}…, verified {record.get('verified')} from {record.get('source')}); {fix}"
    )


def _verify_part(part: Path, entry: ReleasedFile, folder: Path, force: bool) -> Verified:
    """Verify a finished ``.part``. One that is not the model is deleted; one that is a valid model but not the
    locked one is kept, so that ``--force`` accepts it without fetching it again."""
    try:
        verified = verify_file(part, entry)
        _check_registry_hash(entry, verified.sha256, part)
    except CheckpointError:
        part.unlink(missing_ok=True)
        raise
    record = read_lock(folder).get(entry.name)
    if record and not force and record.get("sha256") != verified.sha256:
        raise _lock_mismatch(
            entry,
            verified.sha256,
            folder,
            part,
            record,
            "if the new file is meant, rerun with --force to accept it (the part is kept)",
        )
    return verified


def _existing(entry: ReleasedFile, path: Path, folder: Path, notify: Notify) -> Verified:
    """A file already in the folder: the locked one (by hash), or verified now and recorded."""
    record = read_lock(folder).get(entry.name)
    if record:
        sha = sha256_of(path)
        if sha != record.get("sha256"):
            raise _lock_mismatch(
                entry,
                sha,
                folder,
                path,
                record,
                f"it was replaced or damaged: `danna download --force {entry.name}` fetches it "
                "again, `--source DIR --force` imports another copy",
            )
        _check_registry_hash(entry, sha, path)
        notify(f"{entry.name}: already there (matches the lock)")
        return Verified(
            entry.name, path, sha, path.stat().st_size, record.get("params"), record.get("detail") or "matches the lock"
        )
    verified = verify_file(path, entry)
    _check_registry_hash(entry, verified.sha256, path)
    _record(folder, verified, f"found in {folder}")
    notify(f"{entry.name}: already there, now verified and recorded: {verified.detail}")
    return verified


def _offline_error(entry: ReleasedFile, folder: Path, urls: Sequence[str]) -> DownloadError:
    return DownloadError(
        f"{OFFLINE_ENV}=1 forbids downloads, and {entry.name} ({entry.size_text()}, "
        f"{', '.join(urls)}) is missing from {folder}: run `danna download {entry.name}` on a "
        f"machine with network and copy the file here, or fetch {urls[0]} by hand into a folder "
        f"DIR and run `danna download --source DIR {entry.name}`"
    )


def _fetch_one(
    entry: ReleasedFile,
    folder: Path,
    source: PathLike | None,
    force: bool,
    quiet: bool,
    notify: Notify,
    retry: RetryPolicy,
    session: requests.Session,
    note: str,
) -> Verified:
    final = folder / entry.name
    if final.is_file() and not force:
        return _existing(entry, final, folder, notify)
    candidates = _candidates(entry, source)
    if offline() and any(_is_url(c) for c in candidates):
        raise _offline_error(entry, folder, candidates)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create the checkpoint folder {folder} ({exc.strerror or exc})") from None
    part = folder / f"{entry.name}.part"
    failures: list[DannaError] = []
    for where in candidates:
        try:
            try:
                if _is_url(where):
                    _download(_Transfer(session, where, part, entry, folder, quiet, notify, note), retry)
                else:
                    _copy(Path(where), part, entry, folder, quiet, notify, note)
            except KeyboardInterrupt:
                if part.exists():
                    notify(f"interrupted: {part} keeps {_size(part) / 1e6:.1f} MB; the same command resumes it")
                raise
            verified = _verify_part(part, entry, folder, force)
        except _DiskFull:
            raise  # no other source helps
        except DannaError as exc:
            failures.append(exc)
            continue
        os.replace(part, final)  # only now: a file under its final name has passed every check
        verified = replace(verified, path=final)
        _record(folder, verified, where)
        notify(f"verified {entry.name}: {verified.detail}")
        return verified
    if len(failures) == 1:
        raise failures[0]
    raise DownloadError(f"{entry.name}: every source failed: " + " | ".join(map(str, failures)))


def _fetch_all(
    entries: Sequence[ReleasedFile],
    folder: PathLike,
    source: PathLike | None,
    force: bool,
    quiet: bool,
    notify: Notify,
    retry: RetryPolicy,
    note: str,
) -> list[Verified]:
    folder = Path(folder).expanduser()
    done: list[Verified] = []
    failed: list[tuple[ReleasedFile, DannaError]] = []
    with requests.Session() as session:
        session.headers["User-Agent"] = f"danna-sep/{__version__} python-requests/{requests.__version__}"
        for entry in entries:
            try:
                done.append(_fetch_one(entry, folder, source, force, quiet, notify, retry, session, note))
            except _DiskFull:
                raise  # the next file would not fit either
            except DannaError as exc:
                failed.append((entry, exc))
    if len(failed) == 1:
        raise failed[0][1]
    if failed:
        raise DownloadError(
            f"{len(failed)} of {len(entries)} files failed (the others are in {folder}): "
            + " | ".join(str(exc) for _, exc in failed)
        )
    return done


def fetch(
    entries: Sequence[ReleasedFile],
    folder: PathLike,
    *,
    source: PathLike | None = None,
    force: bool = False,
    quiet: bool = False,
    notify: Notify = print,
    retry: RetryPolicy = RETRY,
) -> list[Verified]:
    """Get every entry into ``folder`` verified, and record it in the folder's lock file.

    A file already there is checked against its lock record (hash), or verified and recorded; ``force`` fetches it
    again and replaces the record. ``source``: None = ``$DANNA_MODEL_URL``, else each entry's own URLs in order;
    an http(s) base URL = ``<base>/<name>`` only; a local folder = copy ``<dir>/<name>`` (how hand-fetched files
    are imported). All files are tried; the failures are raised together at the end."""
    return _fetch_all(entries, folder, source, force, quiet, notify, retry, note="")


def ensure(
    entries: Sequence[ReleasedFile],
    folder: PathLike,
    *,
    allow_download: bool,
    source: PathLike | None = None,
    quiet: bool = False,
    notify: Notify = print,
    retry: RetryPolicy = RETRY,
) -> list[Verified]:
    """First use: fetch the entries missing from ``folder`` (one notice per file) and return what was fetched.
    Where downloads are forbidden (``allow_download=False``, or ``$DANNA_OFFLINE`` with a network source), raise
    one :class:`DownloadError` naming every missing file, its size and URL, and the command that gets them."""
    folder = Path(folder).expanduser()
    missing = [e for e in entries if not (folder / e.name).is_file()]
    if not missing:
        return []
    source = source if source is not None else os.environ.get(SOURCE_ENV) or None
    local = source is not None and not _is_url(os.fspath(source))
    if not allow_download or (offline() and not local):
        why = "downloads are off (--no-download)" if not allow_download else f"{OFFLINE_ENV}=1 forbids downloads"
        listing = "; ".join(f"{e.name} ({e.size_text()}, {', '.join(e.sources) or 'no URL'})" for e in missing)
        names = " ".join(e.name for e in missing)
        raise DownloadError(
            f"missing from {folder}: {listing}; {why}: run `danna download --dir {folder} {names}` where there is "
            f"network, or fetch the URLs by hand into a folder DIR and run "
            f"`danna download --source DIR --dir {folder} {names}`"
        )
    return _fetch_all(missing, folder, source, False, quiet, notify, retry, note=ENSURE_NOTE)


# ---------------------------------------------------------------------------------------------------- status


@dataclass(frozen=True)
class FileState:
    """What a checkpoint folder holds of one registry entry (for ``danna models``)."""

    entry: ReleasedFile
    size: int | None  # bytes on disk, None when missing
    status: str  # "verified", "present, unverified", "missing", "wrong hash"
    partial: int  # bytes of an unfinished download (<name>.part), 0 if none
    imported: bool | None  # its import is in the folder; None where the file is not importable


def file_states(entries: Sequence[ReleasedFile], folder: PathLike) -> list[FileState]:
    """Each entry's state in ``folder``: "verified" when its hash is the lock's (or the registry's)."""
    folder = Path(folder).expanduser()
    lock = read_lock(folder)
    states = []
    for entry in entries:
        path = folder / entry.name
        size = path.stat().st_size if path.is_file() else None
        record = lock.get(entry.name) or {}
        want = record.get("sha256") or entry.sha256
        if size is None:
            status = "missing"
        elif record.get("size") not in (None, size):
            status = "wrong hash"  # a different size cannot have the recorded hash
        elif want is None:
            status = "present, unverified"
        else:
            status = "verified" if sha256_of(path) == want else "wrong hash"
        imported = (folder / entry.imported).is_file() if entry.imported else None
        states.append(FileState(entry, size, status, _size(folder / f"{entry.name}.part"), imported))
    return states


def source_of(entry: ReleasedFile, source: PathLike | None = None) -> str:
    """Where ``entry`` would come from, in a word: a host name or a folder."""
    try:
        where = _candidates(entry, source)[0]
    except DownloadError:
        return "nowhere (no URL)"
    return _host(where) if _is_url(where) else str(Path(where).parent)
