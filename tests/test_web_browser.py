"""The web page in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright opens the page of a
real ``danna serve`` (tiny release models), uploads a short song, waits for the stems, plays them in step, checks
the pictures and the download links, and saves a screenshot. Skipped, with the reason, without a browser."""

import os
import re
import shutil
import subprocess
import sys
import time

import pytest
import soundfile as sf

pytest.importorskip("starlette", reason="the web extra is not installed: pip install 'danna-sep[web]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")

from danna_sep import SOURCES  # noqa: E402
from tests.original_release.build import write_release  # noqa: E402
from tests.original_release.models import example_mix  # noqa: E402

CHROMIUM = os.environ.get("DANNA_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
# as root in a container Chromium needs --no-sandbox; the rest keeps it off the (closed) network
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium found (apt-get install chromium)")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``danna serve`` itself, in a subprocess on a free port of 127.0.0.1; → its URL."""
    root = tmp_path_factory.mktemp("serve")
    write_release(root / "checkpoints", size="tiny", onnx=False)
    command = [
        sys.executable,
        "-m",
        "danna_sep",
        "serve",
        "--checkpoints",
        str(root / "checkpoints"),
        "--no-download",
        "--device",
        "cpu",
        "--port",
        "0",
        "--workdir",
        str(root / "work"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines = []
        deadline = time.monotonic() + 120
        for line in proc.stderr:  # type: ignore[union-attr]
            lines.append(line)
            found = re.search("open (" + re.escape("http://127.0.0.1:") + r"\d+/)", line)
            if found:
                break
            assert time.monotonic() < deadline, "".join(lines)
        else:
            pytest.fail(f"danna serve did not start:\n{''.join(lines)}")
        yield found.group(1)
    finally:
        proc.terminate()
        proc.wait(20)
    assert not any((root / "work").iterdir())  # a stopped server leaves no job behind


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        try:
            chromium = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        except sync_api.Error as exc:
            pytest.skip(f"Chromium at {CHROMIUM} does not start: {str(exc).splitlines()[0]}")
        yield chromium
        chromium.close()


def poll(page, function, timeout=10.0):
    """Wait until the JavaScript ``function`` returns true (``page.wait_for_function`` evaluates a string, which
    the page's Content-Security-Policy forbids, as it should)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(function):
        assert time.monotonic() < deadline, f"timed out waiting for {function}"
        time.sleep(0.05)


def test_drop_a_song_listen_and_download(server, browser, tmp_path):
    song = tmp_path / "Test Song.wav"
    sf.write(song, example_mix(int(1.5 * 44100)).T.numpy(), 44100)
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    problems = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(server)
    sync_api.expect(page.locator('#modes input[name="mode"]')).to_have_count(3)
    page.set_input_files("#file", str(song))
    sync_api.expect(page.locator("#results")).to_be_visible(timeout=90_000)

    rows = page.locator(".stem")
    sync_api.expect(rows).to_have_count(5)
    assert [rows.nth(i).get_attribute("data-stem") for i in range(5)] == ["mixture", *SOURCES]
    sync_api.expect(page.locator("#play")).to_be_enabled(timeout=20_000)  # every player can play through
    durations = page.eval_on_selector_all("audio", "els => els.map(a => a.duration)")
    assert durations == pytest.approx([1.5] * 5, abs=0.01)
    poll(page, "() => [...document.images].every(i => i.complete && i.naturalWidth > 0)")
    assert page.eval_on_selector_all(".stem img", "els => els.length") == 5

    # the players start together and stay in step; solo leaves one stem audible
    page.click("#play")
    poll(page, "() => document.querySelector('audio').currentTime > 0.4")
    times = page.eval_on_selector_all("audio", "els => els.map(a => a.currentTime)")
    assert max(times) - min(times) < 0.15, times
    page.locator('.stem[data-stem="vocals"] .solo').click()
    muted = page.eval_on_selector_all("audio", "els => els.map(a => a.muted)")
    assert muted == [True, True, True, True, False]  # mixture, drums, bass, other, vocals
    page.locator('.stem[data-stem="vocals"] .solo').click()
    assert page.eval_on_selector_all("audio", "els => els.map(a => a.muted)") == [True, False, False, False, False]
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    page.click("#play")  # pause

    # every download link works, and is named after the song
    links = page.locator(".stem a.download")
    for i in range(5):
        response = page.request.get(server + links.nth(i).get_attribute("href"))
        stem = rows.nth(i).get_attribute("data-stem")
        assert response.ok and response.headers["content-type"] == "audio/wav"
        assert f"Test%20Song%20-%20{stem}.wav" in response.headers["content-disposition"]
    archive = page.request.get(server + page.get_attribute("#zip", "href"))
    assert archive.ok and archive.body()[:2] == b"PK"

    # a file that is not audio: a clear message, and the page is ready for the next song
    page.click("#again")
    text = tmp_path / "notes.wav"
    text.write_text("not music at all\n" * 50)
    page.set_input_files("#file", str(text))
    sync_api.expect(page.locator("#error")).to_contain_text("not an audio file", timeout=20_000)
    sync_api.expect(page.locator("#drop")).to_be_visible()
    # the browser logs the refused upload's status; nothing else may go wrong
    assert [p for p in problems if "415" not in p] == []
