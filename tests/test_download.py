"""Getting released model files: a local HTTP server serves tiny exported models and misbehaves on demand
(breaks, 5xx, 4xx, web pages, Drive's confirm and quota pages); nothing here touches the internet."""

import errno
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlunsplit

import pytest
import torch

from danna_sep.cli import main
from danna_sep.errors import CheckpointError
from danna_sep.export import ModelInfo, _quiet_jit, export_torchscript
from danna_sep.models import build_model
from danna_sep.release import download
from danna_sep.release.download import (
    CHUNK,
    LOCK_NAME,
    DownloadError,
    RetryPolicy,
    ensure,
    fetch,
    file_states,
    read_lock,
)
from danna_sep.release.registry import REGISTRY_ENV, ReleasedFile
from danna_sep.release.verify import sha256_of

pytestmark = pytest.mark.usefixtures("one_thread")

NAME = "unet_attention.pth"
ARCH = {
    "type": "UNetAttn",
    "args": {"k": 2, "levels": 2, "d_model": 4, "n_heads": 1, "attn_channels": 2, "max_bins": 32},
}


def _export(path: Path, seed: int) -> bytes:
    torch.manual_seed(seed)
    model = build_model(ARCH)
    export_torchscript(model, path, ModelInfo.from_model(model, {"arch": ARCH}))
    return path.read_bytes()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two tiny U-Nets of the same architecture (same parameter count, other weights, hence other hashes)."""
    tmp = tmp_path_factory.mktemp("models")
    a, b = _export(tmp / "a.pth", 0), _export(tmp / "b.pth", 1)
    with _quiet_jit():
        params = sum(p.numel() for p in torch.jit.load(str(tmp / "a.pth")).parameters())
    assert a != b and len(a) > 2 * CHUNK  # a broken transfer then keeps one whole chunk to resume from
    return {"a": a, "b": b, "params": params}


# ------------------------------------------------------------------------------------------------- server


@pytest.fixture()  # `server`: the local HTTP server of conftest.py
def srv(server, models, monkeypatch):
    """The server, reset: serving model "a" as NAME; no environment that changes the sources."""
    server.files.clear()
    server.plans.clear()
    server.log.clear()
    server.files[NAME] = models["a"]
    for var in (download.OFFLINE_ENV, download.SOURCE_ENV):
        monkeypatch.delenv(var, raising=False)
    return server


def _entry(models, *sources, sha256=None, params=None, name=NAME):
    return ReleasedFile(
        name=name,
        role="unet",
        format="torchscript",
        title="tiny U-Net",
        size=len(models["a"]),
        params=params or models["params"],
        sha256=sha256,
        sources=tuple(sources),
    )


class Notes(list):
    def __call__(self, line):
        self.append(line)


def _fetch(entry, folder, **kw):
    kw.setdefault("retry", RetryPolicy(tries=3, delay=0.0))
    kw.setdefault("notify", Notes())
    return fetch([entry], folder, quiet=True, **kw)


# ----------------------------------------------------------------------------------------- plain transfers


def test_download_is_verified_renamed_and_locked_then_already_there(srv, models, tmp_path):
    entry = _entry(models, f"{srv.base}/files/{NAME}")
    notes = Notes()
    [v] = _fetch(entry, tmp_path, notify=notes)
    assert (tmp_path / NAME).read_bytes() == models["a"] and not (tmp_path / f"{NAME}.part").exists()
    assert v.path == tmp_path / NAME and v.params == models["params"] and "I/O contract ok" in v.detail
    assert notes[0] == f"downloading {NAME} (0.2 MB) from 127.0.0.1 into {tmp_path}"
    record = read_lock(tmp_path)[NAME]
    assert record["sha256"] == sha256_of(tmp_path / NAME) and record["size"] == len(models["a"])
    assert record["source"] == f"{srv.base}/files/{NAME}" and record["verified"]
    requests_made = len(srv.log)
    notes = Notes()
    [again] = _fetch(entry, tmp_path, notify=notes)
    assert len(srv.log) == requests_made and again.sha256 == v.sha256
    assert notes == [f"{NAME}: already there (matches the lock)"]


def test_transfer_broken_half_way_resumes_with_range(srv, models, tmp_path):
    srv.plans[f"/files/{NAME}"] = ["break"]
    [_v] = _fetch(_entry(models, f"{srv.base}/files/{NAME}"), tmp_path)
    assert (tmp_path / NAME).read_bytes() == models["a"]
    assert [r for _, _, r in srv.log] == [None, f"bytes={CHUNK}-"]  # all but the last chunk was kept


def test_ctrl_c_keeps_the_part_and_the_next_run_resumes(srv, models, tmp_path, monkeypatch):
    real, calls = download._write_block, []

    def interrupted(fh, data):
        calls.append(len(data))
        if len(calls) == 2:
            raise KeyboardInterrupt
        real(fh, data)

    monkeypatch.setattr(download, "_write_block", interrupted)
    entry = _entry(models, f"{srv.base}/files/{NAME}")
    notes = Notes()
    with pytest.raises(KeyboardInterrupt):
        _fetch(entry, tmp_path, notify=notes)
    part = tmp_path / f"{NAME}.part"
    assert part.stat().st_size == CHUNK and not (tmp_path / NAME).exists()
    assert notes[-1].startswith(f"interrupted: {part} keeps 0.1 MB") and not read_lock(tmp_path)
    monkeypatch.setattr(download, "_write_block", real)
    notes = Notes()
    _fetch(entry, tmp_path, notify=notes)
    assert srv.log[-1][2] == f"bytes={CHUNK}-" and (tmp_path / NAME).read_bytes() == models["a"]
    assert notes[0].startswith(f"resuming {NAME} at 0.1 of 0.2 MB from 127.0.0.1")


def test_server_ignoring_range_starts_over(srv, models, tmp_path):
    (tmp_path / f"{NAME}.part").write_bytes(b"x" * 1000)  # not even the file's start
    srv.plans[f"/files/{NAME}"] = ["norange"]
    _fetch(_entry(models, f"{srv.base}/files/{NAME}"), tmp_path)
    assert srv.log[0][2] == "bytes=1000-" and (tmp_path / NAME).read_bytes() == models["a"]


def test_416_means_the_part_is_complete(srv, models, tmp_path):
    (tmp_path / f"{NAME}.part").write_bytes(models["a"])
    notes = Notes()
    _fetch(_entry(models, f"{srv.base}/files/{NAME}"), tmp_path, notify=notes)
    assert (tmp_path / NAME).read_bytes() == models["a"] and len(srv.log) == 1
    assert "is complete" in notes[0]


def test_5xx_is_retried_with_backoff_then_succeeds(srv, models, tmp_path):
    srv.plans[f"/files/{NAME}"] = ["500", "503"]
    waits = []
    _fetch(_entry(models, f"{srv.base}/files/{NAME}"), tmp_path, retry=RetryPolicy(3, 0.01, waits.append))
    assert waits == [0.01, 0.02] and len(srv.log) == 3 and (tmp_path / NAME).is_file()


def test_5xx_gives_up_after_the_last_try(srv, models, tmp_path):
    srv.plans[f"/files/{NAME}"] = ["503"] * 3
    with pytest.raises(DownloadError, match=r"answered 503 Service Unavailable \(3 tries\)"):
        _fetch(_entry(models, f"{srv.base}/files/{NAME}"), tmp_path)
    assert not (tmp_path / NAME).exists()


@pytest.mark.parametrize(
    "code, words", [(404, "404 Not Found): a dead link"), (403, "refuses"), (410, "answered 410 Gone")]
)
def test_4xx_fails_at_once_with_the_url(srv, models, tmp_path, code, words):
    srv.plans[f"/files/{NAME}"] = [str(code)]
    url = f"{srv.base}/files/{NAME}"
    with pytest.raises(DownloadError) as err:
        _fetch(_entry(models, url), tmp_path)
    message = str(err.value)
    assert words in message and url in message and "--source DIR" in message and "\n" not in message
    assert len(srv.log) == 1  # a client error is not retried


def test_web_page_instead_of_model(srv, models, tmp_path):
    srv.plans[f"/files/{NAME}"] = ["html"]
    with pytest.raises(DownloadError, match=f"answered a web page instead of {NAME}.*Sign in"):
        _fetch(_entry(models, f"{srv.base}/files/{NAME}"), tmp_path)
    assert not (tmp_path / NAME).exists() and not (tmp_path / f"{NAME}.part").exists()


def test_connection_refused_and_dns_failure(srv, models, tmp_path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    with pytest.raises(DownloadError, match=r"127.0.0.1 refused the connection \(2 tries\); check the network"):
        _fetch(_entry(models, f"http://127.0.0.1:{port}/{NAME}"), tmp_path, retry=RetryPolicy(2, 0.0))

    def no_dns(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    # name resolution itself is replaced, so nothing leaves the machine; the reserved .invalid name
    # (RFC 6761) could not be resolved anyway
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    host = "drive.invalid"
    with pytest.raises(DownloadError, match=rf"cannot look up {host} \(DNS failed: no network\?\)"):
        _fetch(_entry(models, urlunsplit(("http", host, "/uc", "id=x", ""))), tmp_path, retry=RetryPolicy(1, 0.0))


# ------------------------------------------------------------------------------------------------- Drive


@pytest.mark.parametrize("page", ["drive-form", "drive-link", "drive-cookie"])
def test_drive_warning_page_is_followed(srv, models, tmp_path, page):
    srv.plans["/uc"] = [page]
    _fetch(_entry(models, f"{srv.base}/uc?id={NAME}"), tmp_path)
    assert (tmp_path / NAME).read_bytes() == models["a"]
    followed = srv.log[1]
    if page == "drive-form":
        assert followed[0] == "/download" and followed[1] == {
            "id": NAME,
            "export": "download",
            "confirm": "t",
            "uuid": "u-1",
        }
    else:
        assert followed[0] == "/uc" and followed[1]["confirm"] == ("ABCD" if page == "drive-link" else "TOKEN")


def test_drive_quota_page(srv, models, tmp_path):
    srv.plans["/uc"] = ["quota"]
    url = f"{srv.base}/uc?id={NAME}"
    with pytest.raises(DownloadError, match="download quota is exceeded") as err:
        _fetch(_entry(models, url), tmp_path)
    assert url in str(err.value) and f"danna download --source DIR {NAME}" in str(err.value)


# --------------------------------------------------------------------------------------- hashes and lock


def test_hash_differing_from_the_lock_is_refused_then_accepted_with_force(srv, models, tmp_path):
    entry = _entry(models, f"{srv.base}/files/{NAME}")
    _fetch(entry, tmp_path)
    first = read_lock(tmp_path)[NAME]["sha256"]
    srv.files[NAME] = models["b"]  # the publisher's file changed
    (tmp_path / NAME).unlink()
    with pytest.raises(CheckpointError, match=f"differs from the {NAME} recorded in .*{LOCK_NAME}.*--force"):
        _fetch(entry, tmp_path)
    assert not (tmp_path / NAME).exists() and (tmp_path / f"{NAME}.part").stat().st_size == len(models["b"])
    assert read_lock(tmp_path)[NAME]["sha256"] == first
    _fetch(entry, tmp_path, force=True)  # the kept part is complete: accepted without a second transfer
    assert srv.log[-1][2] == f"bytes={len(models['b'])}-"
    assert (tmp_path / NAME).read_bytes() == models["b"]
    assert read_lock(tmp_path)[NAME]["sha256"] == sha256_of(tmp_path / NAME) != first


def test_file_changed_in_place_is_refused(srv, models, tmp_path):
    entry = _entry(models, f"{srv.base}/files/{NAME}")
    _fetch(entry, tmp_path)
    (tmp_path / NAME).write_bytes(models["b"])
    with pytest.raises(CheckpointError, match=f"replaced or damaged: `danna download --force {NAME}`"):
        _fetch(entry, tmp_path)
    assert file_states([entry], tmp_path)[0].status == "wrong hash"


def test_registry_hash_binds_even_with_force(srv, models, tmp_path):
    entry = _entry(models, f"{srv.base}/files/{NAME}", sha256="0" * 64)
    with pytest.raises(CheckpointError, match=r"is not that of .* in the registry"):
        _fetch(entry, tmp_path, force=True)
    assert not (tmp_path / f"{NAME}.part").exists() and not read_lock(tmp_path)


def test_disk_full(srv, models, tmp_path, monkeypatch):
    def full(fh, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(download, "_write_block", full)
    with pytest.raises(
        DownloadError,
        match=rf"disk full while writing {tmp_path}/{NAME}.part: 0.2 MB needed, "
        "free some space",
    ):
        _fetch(_entry(models, f"{srv.base}/files/{NAME}"), tmp_path)
    assert len(srv.log) == 1  # neither retried nor passed to another source


# ------------------------------------------------------------------------------------- sources and offline


def test_offline_refuses_urls_but_takes_a_local_folder(srv, models, tmp_path, monkeypatch):
    monkeypatch.setenv(download.OFFLINE_ENV, "1")
    url = f"{srv.base}/uc?id={NAME}"
    with pytest.raises(DownloadError) as err:
        _fetch(_entry(models, url), tmp_path / "ckpt")
    message = str(err.value)
    for words in (
        f"DANNA_OFFLINE=1 forbids downloads, and {NAME} (0.2 MB, {url})",
        f"`danna download {NAME}`",
        f"danna download --source DIR {NAME}",
    ):
        assert words in message
    assert not srv.log
    hand = tmp_path / "by-hand"
    hand.mkdir()
    (hand / NAME).write_bytes(models["a"])  # fetched by hand elsewhere
    [v] = _fetch(_entry(models, url), tmp_path / "ckpt", source=hand)
    assert v.path.read_bytes() == models["a"] and read_lock(tmp_path / "ckpt")[NAME]["source"] == str(hand / NAME)
    assert not srv.log


def test_local_folder_holding_a_web_page(models, tmp_path):
    hand = tmp_path / "by-hand"
    hand.mkdir()
    (hand / NAME).write_text("<!DOCTYPE html><html>Virus scan warning</html>")
    with pytest.raises(CheckpointError, match=f"{hand / NAME}: an HTML page was saved instead of the model"):
        _fetch(_entry(models), tmp_path / "ckpt", source=hand)


def test_mirror_base_url_has_no_fall_back(srv, models, tmp_path, monkeypatch):
    entry = _entry(models, f"{srv.base}/uc?id={NAME}")
    srv.plans[f"/mirror/{NAME}"] = ["404"]
    with pytest.raises(DownloadError, match="404"):
        _fetch(entry, tmp_path, source=f"{srv.base}/mirror/")
    assert [p for p, _, _ in srv.log] == [f"/mirror/{NAME}"]
    monkeypatch.setenv(download.SOURCE_ENV, f"{srv.base}/lab")  # the lab's mirror, for every command
    _fetch(entry, tmp_path)
    assert srv.log[-1][0] == f"/lab/{NAME}" and (tmp_path / NAME).is_file()


def test_own_sources_are_tried_in_order(srv, models, tmp_path):
    srv.plans[f"/dead/{NAME}"] = ["404"]
    _fetch(_entry(models, f"{srv.base}/dead/{NAME}", f"{srv.base}/files/{NAME}"), tmp_path)
    assert [p for p, _, _ in srv.log] == [f"/dead/{NAME}", f"/files/{NAME}"] and (tmp_path / NAME).is_file()


def test_ensure_fetches_only_what_is_missing_with_a_notice(srv, models, tmp_path):
    srv.files["other.pth"] = models["b"]
    present, missing = (
        _entry(models, f"{srv.base}/files/{NAME}"),
        _entry(models, f"{srv.base}/files/other.pth", name="other.pth"),
    )
    (tmp_path / NAME).write_bytes(models["a"])
    notes = Notes()
    got = ensure([present, missing], tmp_path, allow_download=True, quiet=True, notify=notes, retry=RetryPolicy(1, 0.0))
    assert [v.name for v in got] == ["other.pth"] and [p for p, _, _ in srv.log] == ["/files/other.pth"]
    assert notes[0] == (
        f"downloading other.pth (0.2 MB) from 127.0.0.1 into {tmp_path} "
        "(once; --no-download or DANNA_OFFLINE=1 forbids this)"
    )


@pytest.mark.parametrize("offline", [False, True])
def test_ensure_without_downloads_names_every_missing_file(srv, models, tmp_path, monkeypatch, offline):
    entries = [_entry(models, f"{srv.base}/uc?id=a", name="a.pth"), _entry(models, f"{srv.base}/uc?id=b", name="b.pth")]
    if offline:
        monkeypatch.setenv(download.OFFLINE_ENV, "yes")
    with pytest.raises(DownloadError) as err:
        ensure(entries, tmp_path, allow_download=offline, retry=RetryPolicy(1, 0.0))  # offline: allowed, yet off
    message = str(err.value)
    assert (
        f"a.pth (0.2 MB, {srv.base}/uc?id=a); b.pth (0.2 MB, {srv.base}/uc?id=b)" in message
        and f"`danna download --dir {tmp_path} a.pth b.pth`" in message
        and "\n" not in message
    )
    assert ("DANNA_OFFLINE=1" if offline else "--no-download") in message and not srv.log


# ------------------------------------------------------------------------------------------ command line


def _registry_file(tmp_path, models, url):
    path = tmp_path / "registry.json"
    path.write_text(
        json.dumps(
            {
                "files": [
                    {
                        "name": NAME,
                        "role": "unet",
                        "format": "torchscript",
                        "title": "tiny",
                        "size": len(models["a"]),
                        "params": models["params"],
                        "sha256": None,
                        "sources": [url],
                        "imported": "unet_imported.pt",
                    }
                ],
                "sets": {"default": [NAME], "all": [NAME]},
            }
        )
    )
    return path


def test_cli_download_from_a_folder_then_models_table(srv, models, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(REGISTRY_ENV, str(_registry_file(tmp_path, models, f"{srv.base}/uc?id={NAME}")))
    hand, ckpt = tmp_path / "hand", tmp_path / "ckpt"
    hand.mkdir()
    (hand / NAME).write_bytes(models["a"])
    assert main(["models", "--dir", str(ckpt)]) == 0
    out = capsys.readouterr().out
    assert "missing" in out and f"missing: danna download --dir {ckpt} {NAME}" in out
    assert main(["download", "unet", "--no-import", "-q", "--source", str(hand), "--dir", str(ckpt)]) == 0
    assert (ckpt / NAME).read_bytes() == models["a"] and NAME in read_lock(ckpt)
    capsys.readouterr()
    assert main(["models", "--dir", str(ckpt)]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("unet "))
    assert row.split() == ["unet", NAME, "127.0.0.1", "0.2", "MB", "verified", "unet_imported.pt", "missing"]
    (ckpt / NAME).write_bytes(models["b"])
    assert main(["models", "--dir", str(ckpt)]) == 0
    assert f"wrong hash: danna download --force --dir {ckpt} {NAME}" in capsys.readouterr().out
    assert main(["download", "frobnicate", "--no-import", "--dir", str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("danna download: error: unknown model 'frobnicate'") and err.count("\n") == 1


def test_cli_offline_error_is_one_line_without_traceback(srv, models, tmp_path):
    url = f"{srv.base}/uc?id={NAME}"
    env = {**os.environ, REGISTRY_ENV: str(_registry_file(tmp_path, models, url)), download.OFFLINE_ENV: "1"}
    env.pop(download.SOURCE_ENV, None)
    proc = subprocess.run(
        [sys.executable, "-m", "danna_sep.cli", "download", "--no-import", "--dir", str(tmp_path / "ckpt")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert NAME in proc.stderr and url in proc.stderr and "danna download --source DIR" in proc.stderr
    assert not srv.log


def test_cli_help_does_not_import_torch(capsys):
    """The two commands parse their arguments without torch (`--help` stays fast)."""
    code = (
        "import sys; from danna_sep.cli import build_parser\n"
        "parsers = [build_parser(c) for c in ('download', 'models')]\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr
    with pytest.raises(SystemExit):
        main(["download", "--help"])
    assert "--no-import" in capsys.readouterr().out
