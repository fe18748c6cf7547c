"""A local HTTP server on 127.0.0.1 standing in for the hosts of the released weights.

``LocalServer(files)`` serves ``files`` (``{url path: bytes}``) from a thread and records every
request path. Extra routes imitate failures and Google Drive:

* ``/short/<path>``: announces the full ``Content-Length`` of ``<path>``, sends half, closes
  (also Drive ids ``short-ID``: half of ``files["/drive/" + ID]``);
* ``/redirect?to=URL``: a 302 to ``URL``;
* ``/uc?id=ID``: Drive's large-file page, a form (``#download-form``) whose action is
  ``https://drive.usercontent.google.com/download`` with hidden ``id``, ``export``, ``confirm``
  and ``uuid`` fields, as Drive serves it; ``/download?id=ID&confirm=t&uuid=...`` then sends
  ``files["/drive/" + ID]`` as an attachment.

:func:`route_drive_to` makes ``requests`` send Drive's hosts to the server (gdown always starts
at ``https://drive.google.com``). The server stops when the ``with`` block ends, and each
connection gives up after a few seconds, so no test can hang on it.
"""

from __future__ import annotations

import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from requests.adapters import HTTPAdapter

DRIVE_HOSTS = ("drive.google.com", "docs.google.com", "drive.usercontent.google.com")
_UUID = "7c1a0d2e"


class LocalServer:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = dict(files)
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 5  # seconds a connection may stay silent

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append(self.path)
                parts = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(parts.query)
                if parts.path == "/uc":
                    self._drive_page(query["id"][0])
                elif parts.path == "/download":
                    ok = query.get("confirm") == ["t"] and query.get("uuid") == [_UUID]
                    file_id = query["id"][0]
                    body = server.files.get("/drive/" + file_id.removeprefix("short-"))
                    if ok and body is not None and file_id.startswith("short-"):
                        self._send_half(body)
                    else:
                        attachment = {"Content-Disposition": 'attachment; filename="w.pth"'}
                        self._send(body if ok else None, attachment)
                elif parts.path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", query["to"][0])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif parts.path.startswith("/short/"):
                    self._send_half(server.files[parts.path.removeprefix("/short")])
                else:
                    self._send(server.files.get(urllib.parse.unquote(parts.path)))

            def _send(self, body: bytes | None, headers: dict[str, str] | None = None) -> None:
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def _send_half(self, body: bytes) -> None:
                """Announce all of ``body``, send half of it and close: a cut transfer."""
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Disposition", 'attachment; filename="w.pth"')
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True

            def _drive_page(self, file_id: str) -> None:
                fields = {"id": file_id, "export": "download", "confirm": "t", "uuid": _UUID}
                inputs = "".join(
                    f'<input type="hidden" name="{k}" value="{v}">' for k, v in fields.items()
                )
                page = (
                    "<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title>"
                    '</head><body><form id="download-form" '
                    'action="https://drive.usercontent.google.com/download" method="get">'
                    f'{inputs}<input type="submit" value="Download anyway"></form></body></html>'
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> LocalServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


class SilentServer:
    """Accepts TCP connections (kernel backlog) and never answers a byte."""

    def __enter__(self) -> SilentServer:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self.port = self._sock.getsockname()[1]
        return self

    def __exit__(self, *exc) -> None:
        self._sock.close()


def route_drive_to(monkeypatch, server: LocalServer) -> None:
    """Send every ``requests`` call to Drive's hosts to ``server`` (plain http, same path)."""
    original = HTTPAdapter.send

    def send(adapter, request, *args, **kwargs):
        parts = urllib.parse.urlsplit(request.url)
        if parts.hostname in DRIVE_HOSTS:
            netloc = f"127.0.0.1:{server.port}"
            request.url = urllib.parse.urlunsplit(("http", netloc, parts.path, parts.query, ""))
        return original(adapter, request, *args, **kwargs)

    monkeypatch.setattr(HTTPAdapter, "send", send)
