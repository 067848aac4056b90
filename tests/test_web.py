"""`danna serve`'s HTTP side, in process (Starlette's TestClient): upload, live events, results, downloads, the
queue, cancelling, every kind of bad input and the limits, with the tiny release models."""

import io
import json
import re
import subprocess
import sys
import threading
import time
import zipfile

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("starlette", reason="the web extra is not installed: pip install 'danna-sep[web]'")
pytest.importorskip("matplotlib", reason="the web extra is not installed: pip install 'danna-sep[web]'")

# after the skips: these need the web extra
import anyio
from starlette.testclient import TestClient

from danna_sep import SOURCES
from danna_sep.audio import AudioInfo
from danna_sep.plots import STEM_COLOURS
from danna_sep.separate import Separator
from danna_sep.web.app import WebConfig, create_app
from danna_sep.web.jobs import estimate_bytes, safe_name
from tests.original_release.build import write_release
from tests.original_release.models import example_mix

pytestmark = pytest.mark.usefixtures("one_thread")
SR = 44100
FINISHED = ("done", "failed", "cancelled")

# an address with a scheme (http:, https:, ws: …) or a protocol-relative //host.tld
ELSEWHERE = re.compile(r"\b[a-z][a-z0-9+.-]*://|(?<![:\w/])//[\w-]+\.[a-z]", re.IGNORECASE)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """The release's three model files at tiny size (real architectures, random weights)."""
    folder = tmp_path_factory.mktemp("checkpoints")
    write_release(folder, size="tiny", onnx=False)
    return folder


@pytest.fixture(scope="module")
def separators(checkpoints):
    """fast → the Separator the server would load, loaded once for the module."""
    return {fast: Separator.from_checkpoints(checkpoints, fast=fast, device="cpu") for fast in (False, True)}


def wav_bytes(seconds=1.0, channels=2, rate=SR, seed=0, subtype="PCM_16", fmt="WAV"):
    x = example_mix(int(seconds * rate), seed=seed)[:channels].T.numpy()
    buf = io.BytesIO()
    sf.write(buf, x, rate, subtype=subtype, format=fmt)
    return buf.getvalue()


class Held:
    """The real separator, held at its first progress report until ``release`` is set, so that a job stays
    running as long as a test needs; ``started`` lists the inputs in the order they ran."""

    def __init__(self, separator):
        self.separator = separator
        self.reached = threading.Event()
        self.release = threading.Event()
        self.started = []

    def separate_to_files(self, path, destinations, *, progress, **kw):
        self.started.append(path)

        def hold(p):
            self.reached.set()
            assert self.release.wait(20), "the test never released the job"
            progress(p)

        return self.separator.separate_to_files(path, destinations, progress=hold, **kw)

    def __getattr__(self, name):
        return getattr(self.separator, name)


@pytest.fixture
def serve(tmp_path, separators):
    """serve(load=None, **config) → a TestClient of a fresh app (workdir under tmp_path; the module's separators
    unless ``load`` is given). Closed (lifespan shutdown) at the end of the test."""
    clients = []

    def make(load=None, **config):
        config.setdefault("workdir", tmp_path / f"work{len(clients)}")
        config.setdefault("pictures", False)
        app = create_app(WebConfig(**config), load or separators.__getitem__)
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def submit(client, data, name="song.wav", mode="full"):
    return client.post("/api/jobs", params={"mode": mode, "name": name}, content=data)


def events(client, job_id):
    """Every event of a job's stream, until it ends (the stream ends when the job finishes)."""
    out = []
    with client.stream("GET", f"/api/jobs/{job_id}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("data: "):
                out.append(json.loads(line[6:]))
    return out


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def job_folders(client):
    return sorted(p.name for p in client.app.state.workdir.iterdir())


# ----------------------------------------------------------------------------------------------- the page


def test_page_is_self_contained_and_info_has_the_colours(serve):
    client = serve()
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert 'src="app.js"' in page.text and 'href="style.css"' in page.text
    for path, kind in (("/app.js", "text/javascript"), ("/style.css", "text/css")):
        r = client.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind)
        # works offline: nothing fetched from elsewhere (no CDN, no fonts): no absolute or protocol-relative address
        assert not ELSEWHERE.search(r.text), ELSEWHERE.search(r.text)
    assert not ELSEWHERE.search(page.text), ELSEWHERE.search(page.text)
    info = client.get("/api/info").json()
    assert info["sources"] == list(SOURCES)
    assert {k: info["colours"][k] for k in STEM_COLOURS} == STEM_COLOURS
    assert list(info["modes"]) == ["full", "fast", "two-stems"]
    assert client.get("/nothing-here").status_code == 404


# -------------------------------------------------------------------------------------------- a whole job


def test_a_song_from_upload_to_zip(tmp_path, checkpoints, separators):
    """Through the default loader (the checkpoint folder): the stems equal the Python API's, up to 16-bit."""
    app = create_app(WebConfig(checkpoints=checkpoints, device="cpu", workdir=tmp_path / "work"))
    with TestClient(app) as client:
        data = wav_bytes(1.5)
        r = submit(client, data, name="My Song.wav")
        assert r.status_code == 201, r.text
        job = r.json()
        assert job["state"] in ("queued", "running") and job["name"] == "My Song.wav" and job["duration"] == 1.5
        seen = events(client, job["id"])
        assert seen[-1]["state"] == "done", seen[-1]
        fractions = [e["fraction"] for e in seen]
        assert fractions == sorted(fractions) and fractions[-1] == 1
        assert all(e["elapsed"] >= 0 for e in seen)
        assert {e["stage"] for e in seen if e["state"] == "running"} <= {"loading models", "separating", "drawing"}

        done = client.get(f"/api/jobs/{job['id']}").json()
        assert [s["name"] for s in done["stems"]] == [*SOURCES, "mixture"]
        song = tmp_path / "song.wav"
        song.write_bytes(data)
        expected = separators[False].separate_file(song)
        for stem in done["stems"]:
            assert stem["colour"] == STEM_COLOURS[stem["name"]]
            audio = client.get("/" + stem["audio"])
            assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
            x, rate = sf.read(io.BytesIO(audio.content), dtype="float32", always_2d=True)
            assert rate == SR and x.shape == (int(1.5 * SR), 2)
            reference = sf.read(song, dtype="float32")[0].T if stem["name"] == "mixture" else expected[stem["name"]]
            assert np.abs(x.T - np.asarray(reference)).max() < 1e-4
            picture = client.get("/" + stem["picture"])
            assert picture.headers["content-type"] == "image/png" and picture.content[:8] == b"\x89PNG\r\n\x1a\n"
            download = client.get("/" + stem["download"])
            assert download.content == audio.content
            assert f"My%20Song%20-%20{stem['name']}.wav" in download.headers["content-disposition"]
        # byte ranges, so that the players can seek
        part = client.get("/" + done["stems"][0]["audio"], headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and len(part.content) == 100
        archive = client.get("/" + done["zip"])
        assert archive.headers["content-type"] == "application/zip"
        names = sorted(zipfile.ZipFile(io.BytesIO(archive.content)).namelist())
        assert names == sorted(f"My Song/{s}.wav" for s in [*SOURCES, "mixture"])
        # everything lives in the job's folder, under our names; the upload itself is gone
        folder = app.state.workdir / job["id"]
        assert sorted(p.name for p in folder.iterdir()) == ["pictures", "stems", "stems.zip"]
    assert not folder.exists()  # shutdown removes the jobs


def test_fast_and_two_stem_modes(serve, separators):
    loaded = []

    def load(fast):
        loaded.append(fast)
        return separators[fast]

    client = serve(load)
    fast = submit(client, wav_bytes(0.5, channels=1), mode="fast").json()
    two = submit(client, wav_bytes(0.5), mode="two-stems").json()
    assert events(client, fast["id"])[-1]["state"] == "done"
    last = events(client, two["id"])[-1]
    assert last["state"] == "done"
    assert [s["name"] for s in last["stems"]] == ["vocals", "accompaniment", "mixture"]
    assert loaded == [True, False]  # each blend loaded once, when first needed
    stems = client.get(f"/api/jobs/{fast['id']}").json()["stems"]
    assert [s["name"] for s in stems] == [*SOURCES, "mixture"]
    mono, _ = sf.read(io.BytesIO(client.get("/" + stems[0]["audio"]).content), always_2d=True)
    assert mono.shape[1] == 1  # a mono song gives mono stems (and a mono mixture)
    assert submit(client, wav_bytes(0.5), mode="slow").status_code == 400


# ----------------------------------------------------------------------------------------- queue and cancel


def test_jobs_run_one_at_a_time_in_order_with_their_place_shown(serve, separators):
    held = Held(separators[False])
    client = serve(lambda fast: held)
    a, b, c = (submit(client, wav_bytes(0.5, seed=i), name=f"{n}.wav").json() for i, n in enumerate("abc"))
    assert held.reached.wait(20)
    state = {j["id"]: client.get(f"/api/jobs/{j['id']}").json() for j in (a, b, c)}
    assert (state[a["id"]]["state"], state[a["id"]]["position"]) == ("running", 0)
    assert (state[b["id"]]["state"], state[b["id"]]["position"]) == ("queued", 1)
    assert (state[c["id"]]["state"], state[c["id"]]["position"]) == ("queued", 2)
    assert len(held.started) == 1
    # cancelling a waiting job moves the ones behind it up, at once
    assert client.post(f"/api/jobs/{b['id']}/cancel").json()["state"] == "cancelled"
    assert client.get(f"/api/jobs/{c['id']}").json()["position"] == 1
    assert events(client, b["id"])[-1]["state"] == "cancelled"
    held.release.set()
    assert events(client, c["id"])[-1]["state"] == "done"
    assert client.get(f"/api/jobs/{a['id']}").json()["state"] == "done"
    assert len(held.started) == 2 and held.started[0].parent.name == a["id"]
    assert held.started[1].parent.name == c["id"]
    assert job_folders(client) == sorted([a["id"], c["id"]])  # the cancelled job keeps no files


def test_cancel_a_running_job_then_keep_serving(serve, separators):
    held = Held(separators[False])
    client = serve(lambda fast: held)
    job = submit(client, wav_bytes(1.0)).json()
    assert held.reached.wait(20)
    assert client.get(f"/api/jobs/{job['id']}").json()["state"] == "running"
    client.post(f"/api/jobs/{job['id']}/cancel")
    held.release.set()  # the separator reaches its next progress report, where the cancellation stops it
    last = events(client, job["id"])[-1]
    assert last["state"] == "cancelled" and last["stems"] == [] and last["zip"] is None
    assert not (client.app.state.workdir / job["id"]).exists()
    assert client.get(f"/api/jobs/{job['id']}/zip").status_code == 404
    # the worker goes on with the next song
    again = submit(client, wav_bytes(0.5)).json()
    assert events(client, again["id"])[-1]["state"] == "done"


def test_a_client_that_goes_away_mid_job_does_not_stop_it(serve, separators):
    held = Held(separators[False])
    client = serve(lambda fast: held)
    job = submit(client, wav_bytes(0.5)).json()
    with client.stream("GET", f"/api/jobs/{job['id']}/events") as stream:
        first = next(line for line in stream.iter_lines() if line.startswith("data: "))
        assert json.loads(first[6:])["id"] == job["id"]
    # the page is gone; the job runs on and can be found again (the page keeps its id in the address)
    held.release.set()
    wait_for(lambda: client.get(f"/api/jobs/{job['id']}").json()["state"] == "done")
    assert events(client, job["id"])[-1]["state"] == "done"


# --------------------------------------------------------------------------------------------- bad input


def truncated_wav():
    data = wav_bytes(1.0)
    return data[: len(data) // 2]


def nan_wav():
    x = np.full((SR // 2, 2), np.nan, dtype=np.float32)
    buf = io.BytesIO()
    sf.write(buf, x, SR, subtype="FLOAT", format="WAV")
    return buf.getvalue()


@pytest.mark.parametrize(
    "data,name,status,message",
    [
        (b"", "song.wav", 400, "empty"),
        (b"Just some text, certainly not music.\n" * 20, "notes.mp3", 415, "not an audio file"),
        (b"RIFF\x10\x00\x00\x00WAVEfmt garbage" + bytes(200), "broken.wav", 415, "not an audio file"),
        (b"\x89PNG\r\n\x1a\n" + bytes(500), "picture.flac", 415, "not an audio file"),
        (b"#!/bin/sh\nrm -rf /\n", "run.sh", 415, "not an audio file"),
        (truncated_wav(), "cut.wav", 415, "cut.wav: truncated"),
        (b"\x00\x00\x00\x18ftypM4A " + bytes(100), "fake.m4a", 415, "fake.m4a: cannot decode"),
    ],
)
def test_bad_uploads_get_a_clear_message_and_leave_nothing(serve, data, name, status, message):
    client = serve()
    r = submit(client, data, name=name)
    assert r.status_code == status and message in r.json()["error"], r.text
    assert str(client.app.state.workdir) not in r.text  # our file names are never shown
    assert job_folders(client) == []
    assert submit(client, wav_bytes(0.3)).status_code == 201  # and the server goes on


def test_content_is_recognised_whatever_the_name_says(serve):
    client = serve()
    flac = wav_bytes(0.5, fmt="FLAC")
    job = submit(client, flac, name="song.mp3").json()
    assert events(client, job["id"])[-1]["state"] == "done"
    ogg = submit(client, wav_bytes(0.5, fmt="OGG", subtype="VORBIS"), name="no extension").json()
    assert events(client, ogg["id"])[-1]["state"] == "done"


def test_a_file_that_fails_while_separating_fails_its_job_only(serve):
    client = serve()
    bad = submit(client, nan_wav(), name="nan.wav").json()
    last = events(client, bad["id"])[-1]
    assert last["state"] == "failed" and "nan.wav" in last["error"] and "NaN" in last["error"]
    assert str(client.app.state.workdir) not in json.dumps(last)
    assert job_folders(client) == []
    good = submit(client, wav_bytes(0.3)).json()
    assert events(client, good["id"])[-1]["state"] == "done"


def test_client_paths_never_reach_the_file_system(serve):
    client = serve()
    job = submit(client, wav_bytes(0.3), name="../../etc/passwd").json()
    assert job["name"] == "passwd"
    assert events(client, job["id"])[-1]["state"] == "done"
    for path in (
        "/api/jobs/..%2F..%2Fetc",
        "/api/jobs/../../etc/passwd",
        f"/api/jobs/{job['id']}/audio/..%2F..%2Fstems.zip",
        f"/api/jobs/{job['id']}/audio/mixture.wav",
        f"/api/jobs/{job['id']}/download/%2Fetc%2Fpasswd",
        f"/api/jobs/{job['id']}/picture/vocals",  # pictures were off: there is none
        "/api/jobs/AAAAAAAAAAAAAAAAAAAAAA/zip",
    ):
        r = client.get(path)
        assert r.status_code == 404, path
    assert safe_name('a"b\r\n<c>.wav') == "abc.wav" and safe_name("C:\\music\\x.wav") == "x.wav"
    assert safe_name("..") == "song" and len(safe_name("x" * 500)) == 100


def test_a_loopback_server_answers_only_to_its_own_names(tmp_path, separators):
    """What `danna serve` sets on 127.0.0.1: another site's page cannot reach it through a DNS name of its own."""
    app = create_app(WebConfig(workdir=tmp_path / "w", allowed_hosts=["127.0.0.1", "localhost"]), separators.get)
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        assert client.get("/api/info").status_code == 200
        assert client.get("/api/info", headers={"host": "evil.example:8000"}).status_code == 400
        assert submit(client, wav_bytes(0.3)).status_code == 201


# ---------------------------------------------------------------------------------------------------- limits


def test_upload_size_cap(serve):
    client = serve(max_upload=100_000)
    r = submit(client, wav_bytes(2.0), name="big.wav")  # with Content-Length: refused before reading
    assert r.status_code == 413 and "larger than this server's limit of 0.0954 MB" in r.json()["error"]

    def chunks():  # no Content-Length: streamed to disk and stopped at the cap
        for _ in range(50):
            yield bytes(8192)

    r = client.post("/api/jobs", content=chunks())
    assert r.status_code == 413 and "larger" in r.json()["error"]
    assert job_folders(client) == []
    assert submit(client, wav_bytes(0.3)).status_code == 201


def test_a_client_that_goes_away_mid_upload(serve):
    client = serve()
    app = client.app
    messages = [
        {"type": "http.request", "body": wav_bytes(1.0)[:20000], "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/jobs",
        "raw_path": b"/api/jobs",
        "query_string": b"mode=full&name=a.wav",
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/octet-stream")],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }
    anyio.run(app, scope, receive, send)
    assert job_folders(client) == []  # the partial upload was removed
    assert app.state.queue.jobs == {}
    assert submit(client, wav_bytes(0.3)).status_code == 201


def test_queue_full(serve, separators):
    held = Held(separators[False])
    client = serve(lambda fast: held, max_waiting=1)
    assert submit(client, wav_bytes(0.3)).status_code == 201
    assert held.reached.wait(20)  # running: no longer waiting
    assert submit(client, wav_bytes(0.3)).status_code == 201  # waits
    r = submit(client, wav_bytes(0.3))
    assert r.status_code == 503 and "already waiting" in r.json()["error"]
    assert len(job_folders(client)) == 2
    held.release.set()


def test_work_folder_cap_removes_the_oldest_finished_jobs(serve):
    song = wav_bytes(0.5)
    one_job = len(song) + estimate_bytes(AudioInfo(SR, 2, SR // 2, 1), 4)  # the upload and what it will write
    client = serve(cap=one_job)
    first = submit(client, song).json()
    assert events(client, first["id"])[-1]["state"] == "done"
    assert client.get("/" + client.get(f"/api/jobs/{first['id']}").json()["zip"]).status_code == 200
    second = submit(client, wav_bytes(0.5, seed=1))
    assert second.status_code == 201, second.text
    assert client.get(f"/api/jobs/{first['id']}").status_code == 404  # made room
    assert job_folders(client) == [second.json()["id"]]
    assert events(client, second.json()["id"])[-1]["state"] == "done"

    small = serve(cap=one_job - 1)  # the upload fits, its outputs would not
    r = submit(small, song)
    assert r.status_code == 507 and "full" in r.json()["error"]
    tiny = serve(cap=len(song) - 1)  # not even the upload (refused before reading it)
    assert submit(tiny, song).status_code == 507
    assert job_folders(small) == job_folders(tiny) == []


def test_finished_jobs_expire(serve):
    client = serve(keep=0.3)
    job = submit(client, wav_bytes(0.3)).json()
    assert events(client, job["id"])[-1]["state"] == "done"
    wait_for(lambda: client.get(f"/api/jobs/{job['id']}").status_code == 404, timeout=10)
    assert "no such job" in client.get(f"/api/jobs/{job['id']}").json()["error"]
    assert job_folders(client) == []


# --------------------------------------------------------------------------------------------- the command


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "danna_sep", *args], capture_output=True, text=True, **kw)


def test_serve_help_does_not_import_torch_or_the_web_stack():
    code = (
        "import sys; from danna_sep.cli import main\n"
        "try: main(['serve', '--help'])\n"
        "except SystemExit: pass\n"
        "assert not {'torch', 'starlette', 'uvicorn', 'matplotlib'} & set(sys.modules), 'heavy import'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "--max-upload-mb" in proc.stdout and "127.0.0.1" in proc.stdout


def test_serve_without_the_web_extra_says_what_to_install():
    code = (
        "import sys; sys.modules['uvicorn'] = None\n"  # as if it were not installed
        "from danna_sep.cli import main; sys.exit(main(['serve']))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == ["danna serve: error: the web page needs uvicorn: pip install 'danna-sep[web]'"]


def test_serve_reports_missing_models_and_warns_off_loopback(tmp_path, checkpoints):
    proc = _cli("serve", "--checkpoints", str(tmp_path / "none"), "--no-download", "--port", "0")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("danna serve: error:") and "xumx_mwf.pth" in proc.stderr

    args = ["serve", "--checkpoints", str(checkpoints), "--no-download", "--device", "cpu", "--port", "0"]
    server = subprocess.Popen(
        [sys.executable, "-m", "danna_sep", *args, "--host", "0.0.0.0"], stderr=subprocess.PIPE, text=True
    )
    try:
        lines = []
        for line in server.stderr:
            lines.append(line)
            if line.startswith("danna serve: open "):
                break
        text = "".join(lines)
        assert "warning: listening on 0.0.0.0: anyone who can reach this address" in text
        assert "models: X-UMX" in text
    finally:
        server.terminate()
        server.wait(10)
    assert _cli("serve", "--max-upload-mb", "0").returncode == 2
