"""``danna serve``: a local web page to drop a song on, follow its separation, listen to and download the stems.

Binds to 127.0.0.1 unless ``--host`` says otherwise (then anyone who can reach that address can use it, and is
told so). The models load before the page opens, so that a missing model is an error here, not on the page.
Needs the ``web`` extra (``pip install 'danna-sep[web]'``).
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import socket
import sys
from pathlib import Path

from .. import defaults
from ..errors import ConfigError, DannaError

HELP = "a local web page: drop a song, follow the separation, play and download the stems"

_LOOPBACK_NAMES = ("localhost",)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this computer only; 0.0.0.0 opens it to the network)",
    )
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    parser.add_argument(
        "--checkpoints",
        type=Path,
        metavar="DIR",
        help=f"folder of the models (default: $DANNA_CHECKPOINTS, else {defaults.DEFAULT_CHECKPOINTS}; "
        "see `danna models`)",
    )
    parser.add_argument(
        "--no-download",
        action="store_true",
        help="never download missing models (also: DANNA_OFFLINE=1)",
    )
    parser.add_argument("-d", "--device", default="auto", help="cpu, cuda, mps or auto (default)")
    parser.add_argument(
        "--max-upload-mb", type=float, default=200, metavar="MB", help="largest file accepted (default 200 MB)"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        metavar="DIR",
        help="folder for uploads and stems (default: a temporary folder, removed when the server stops)",
    )
    parser.add_argument(
        "--keep-minutes",
        type=float,
        default=60,
        metavar="MIN",
        help="finished songs are removed this long after they finish (default 60)",
    )
    parser.add_argument(
        "--workdir-cap-gb",
        type=float,
        default=10,
        metavar="GB",
        help="most the work folder may hold; the oldest finished songs go first (default 10 GB)",
    )


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this computer only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    missing = [m for m in ("starlette", "uvicorn", "matplotlib") if importlib.util.find_spec(m) is None]
    if missing:
        from ..web import WEB_EXTRA

        raise DannaError(f"the web page needs {', '.join(missing)}: {WEB_EXTRA}")
    for flag, value in (
        ("--max-upload-mb", args.max_upload_mb),
        ("--keep-minutes", args.keep_minutes),
        ("--workdir-cap-gb", args.workdir_cap_gb),
    ):
        if not value > 0:
            raise ConfigError(f"{flag} must be > 0, got {value:g}")
    if not 0 <= args.port < 65536:
        raise ConfigError(f"--port must be in 0..65535, got {args.port}")

    import uvicorn

    from ..web.app import WebConfig, create_app

    loopback = is_loopback(args.host)
    sock = _listen(args.host, args.port)  # before the models load: a busy port is reported at once
    config = WebConfig(
        checkpoints=args.checkpoints,
        device=args.device,
        download=not args.no_download,
        notify=lambda line: print(line, file=sys.stderr),
        max_upload=int(args.max_upload_mb * 2**20),
        workdir=args.workdir,
        keep=args.keep_minutes * 60,
        cap=int(args.workdir_cap_gb * 2**30),
        # a page on another site must not reach a loopback server through a DNS name of its own (rebinding)
        allowed_hosts=["127.0.0.1", "localhost", "::1"] if loopback else None,
    )
    try:
        app = create_app(config)
        queue = app.state.queue
        try:
            # the default models now: a missing file is an error here, and the first song waits for nothing
            # (the fast blend loads on its first use)
            separator = queue.separator(False)
        except BaseException:
            queue.close()
            raise
        print("models: " + "; ".join(separator.describe_models()), file=sys.stderr)
        if not loopback:
            print(
                f"warning: listening on {args.host}: anyone who can reach this address on the network can use "
                "this page and this computer's processor; the default --host 127.0.0.1 keeps it to yourself",
                file=sys.stderr,
            )
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        print(f"danna serve: open http://{shown}:{port}/ (Ctrl-C stops it)", file=sys.stderr)
        uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    finally:
        sock.close()
    return 0


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (port 0: a free one); a one-line error if it cannot be."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigError(f"--host {host}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (choose another --port)") from None
    return sock
