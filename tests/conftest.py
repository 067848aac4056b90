"""Fixtures shared by several test modules."""

import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest
import torch

# tests never touch the internet: a separation that misses its models must not try to download them (tests of the
# download code start their own server on 127.0.0.1 and clear this where they need to)
os.environ.setdefault("DANNA_OFFLINE", "1")


@pytest.fixture(scope="module")
def one_thread():
    """Small tensors: one intra-op thread is faster than two fighting over a shared CPU (restored afterwards).
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------ a local HTTP server


class _Handler(BaseHTTPRequestHandler):
    """Routes: /files/<name> (plain), /uc?id=<name> (Drive), /download (Drive's confirm form's action).
    ``server.plans[route]`` lists what the next requests get; an empty list serves the file."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        srv = self.server
        srv.log.append((url.path, query, self.headers.get("Range")))
        if url.path == "/download":
            ok = query.get("confirm") == "t" and query.get("uuid") == "u-1" and query.get("export") == "download"
            return self._file(query["id"]) if ok else self._status(400)
        if url.path == "/uc":
            if "confirm" in query:
                return self._file(query["id"]) if query["confirm"] in ("ABCD", "TOKEN") else self._status(400)
            name, route = query["id"], "/uc"
        else:
            name, route = url.path.rsplit("/", 1)[-1], url.path
        plan = srv.plans.get(route) or []
        action = plan.pop(0) if plan else "file"
        if action == "file":
            return self._file(name)
        if action == "norange":
            return self._file(name, honour_range=False)
        if action == "break":
            data = srv.files[name]
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        if action.isdigit():
            return self._status(int(action))
        return self._page(action, name)

    def _status(self, code):
        body = b"nope"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _file(self, name, honour_range=True):
        data = self.server.files[name]
        start, code = 0, 200
        rng = self.headers.get("Range")
        if rng and honour_range:
            start = int(rng.split("=")[1].rstrip("-"))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            code = 206
        self.send_response(code)
        if code == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def _page(self, kind, name):
        port = self.server.server_address[1]
        extra = {}
        if kind == "drive-form":  # today's "can't scan this file for viruses" page
            html = (
                f"<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>"
                f"<p>Google Drive can't scan this file for viruses.</p>"
                f'<form id="download-form" action="http://127.0.0.1:{port}/download" method="get">'
                f'<input type="submit" value="Download anyway"/>'
                f'<input type="hidden" name="id" value="{name}"><input type="hidden" name="export" '
                f'value="download"><input type="hidden" name="confirm" value="t">'
                f'<input type="hidden" name="uuid" value="u-1"></form></body></html>'
            )
        elif kind == "drive-link":  # older pages: a confirm token in a link
            html = (
                f'<html><body><a id="uc-download-link" href="/uc?export=download&amp;confirm=ABCD&amp;'
                f'id={name}">Download anyway</a></body></html>'
            )
        elif kind == "drive-cookie":  # older still: the token in a cookie
            html = "<html><body>Google Drive can't scan this file for viruses.</body></html>"
            extra["Set-Cookie"] = "download_warning_13058_x=TOKEN; Path=/"
        elif kind == "quota":
            html = (
                '<!DOCTYPE html><html><body><p class="uc-error-caption">Sorry, you can\'t view or download '
                'this file at this time.</p><p class="uc-error-subcaption">Too many users have viewed or '
                "downloaded this file recently. Please try accessing the file again later.</p></body></html>"
            )
        else:  # "html": some other page (a login wall)
            html = "<!DOCTYPE html><html><head><title>Sign in</title></head><body>Sign in to continue</body></html>"
        body = html.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        for k, v in extra.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server():
    """A local HTTP server on 127.0.0.1 serving ``server.files`` (name → bytes) by :class:`_Handler`'s routes;
    ``server.plans`` makes it misbehave, ``server.log`` lists (path, query, Range) per request, ``server.base`` is
    its URL."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.files, srv.plans, srv.log = {}, {}, []
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
