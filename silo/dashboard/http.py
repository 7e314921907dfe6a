"""The dashboard's HTTP server: a few routes on the silo's own event loop, standard library only.

Why not aiohttp or http.server: the handlers need the silo's objects (membership, catalog,
channels), which live on its event loop; a threaded server would hop threads for every
request, and a framework would be a new dependency for five GET routes. So this is a
deliberately small HTTP/1.1 server on ``asyncio.start_server``: GET and HEAD only, one request
per connection, bounded header size and read time, and every malformed request answered
with a status (never an exception that reaches the loop).

Auth: with ``--token`` every route needs it, as the gRPC port does. Programs send
``Authorization: Bearer <token>``; a browser opens ``/?token=<token>`` once, which sets an
HttpOnly, SameSite=Strict cookie holding a digest of the token (not the token itself) and
redirects to the same page without it, so the token does not stay in the address bar or
the history.

TLS: a silo started with ``--tls-cert``/``--tls-key`` serves the dashboard over HTTPS with
the same certificate, and with ``--tls-client-ca`` it requires a client certificate there
too, so the page is never less protected than the gRPC port.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

log = logging.getLogger("grainery.dashboard")

COOKIE = "grainery_dashboard"
MAX_HEAD = 16 * 1024
READ_TIMEOUT = 10.0
MAX_CONNECTIONS = 64  # open at once; more are answered 503 at once (a page polls with one)
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".txt": "text/plain; charset=utf-8"}
_HEADERS = (
    ("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; "
     "img-src 'self' data:; frame-ancestors 'none'"),
)

Overview = Callable[[], Awaitable[dict[str, Any]]]
Lookup = Callable[[str, str], Awaitable[dict[str, Any]]]


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def load_static() -> dict[str, bytes]:
    """The page and its vendored scripts, read once from the installed package."""
    folder = resources.files("grainery.silo.dashboard").joinpath("static")
    return {item.name: item.read_bytes() for item in folder.iterdir() if item.is_file()}


def server_ssl_context(cert: str, key: str, client_ca: str | None = None) -> ssl.SSLContext:
    """The silo's certificate for HTTPS; with ``client_ca``, client certificates required."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    if client_ca:
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class Response:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: bytes = b"", content_type: str = "",
                 headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.status = status
        self.body = body
        self.headers = ((("Content-Type", content_type),) if content_type else ()) + headers

    @classmethod
    def json(cls, value: Any, status: int = 200) -> Response:
        return cls(status, json.dumps(value).encode(), "application/json",
                   (("Cache-Control", "no-store"),))

    @classmethod
    def text(cls, status: int, message: str,
             headers: tuple[tuple[str, str], ...] = ()) -> Response:
        return cls(status, (message + "\n").encode(), _TYPES[".txt"], headers)


class DashboardServer:
    def __init__(self, host: str, port: int, token: str | None, overview: Overview,
                 lookup: Lookup, tls: ssl.SSLContext | None = None,
                 max_connections: int = MAX_CONNECTIONS) -> None:
        self.host = host
        self._open = 0
        self._max_connections = max_connections
        self.port = port
        self.tls = tls
        self._overview = overview
        self._lookup = lookup
        self._static = load_static()
        self._expected = f"Bearer {token}".encode() if token else None
        # The cookie holds a digest of the token: stealing it does not give the gRPC token.
        self._cookie = (hmac.new(token.encode(), b"grainery-dashboard", hashlib.sha256)
                        .hexdigest() if token else None)
        self._token = token
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        """Listen; returns the bound port (``port`` 0 picks a free one)."""
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, limit=MAX_HEAD, ssl=self.tls,
            ssl_handshake_timeout=READ_TIMEOUT if self.tls else None,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    # ----- one connection, one request -------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        method = "GET"
        self._open += 1
        try:
            if self._open > self._max_connections:  # bounded: idle sockets cannot pile up
                # Read the request first (briefly): closing on unread data resets the
                # connection, and the caller would never see the 503.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 1.0)
                await self._write(writer, Response.text(503, "too many connections"), False)
                return
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
                method, target, headers = _parse(head)
                response = await self._respond(method, target, headers)
            except HttpError as error:
                response = Response.text(error.status, error.message)
            except asyncio.LimitOverrunError:
                response = Response.text(431, "request header too large")
            except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
                return
            except Exception:  # noqa: BLE001 - never leak internals; the silo keeps serving
                log.exception("dashboard request failed")
                response = Response.text(500, "internal error")
            # A reader that never reads must not hold its connection slot for ever.
            await asyncio.wait_for(self._write(writer, response, head_only=method == "HEAD"),
                                   READ_TIMEOUT)
        except (ConnectionError, asyncio.TimeoutError):
            pass
        finally:
            self._open -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), READ_TIMEOUT)

    @staticmethod
    async def _write(writer: asyncio.StreamWriter, response: Response, head_only: bool) -> None:
        reason = HTTPStatus(response.status).phrase
        lines = [f"HTTP/1.1 {response.status} {reason}",
                 f"Content-Length: {len(response.body)}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in (*_HEADERS, *response.headers)]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if not head_only:
            writer.write(response.body)
        await writer.drain()

    async def _respond(self, method: str, target: str, headers: dict[str, str]) -> Response:
        if method not in ("GET", "HEAD"):
            return Response(405, b"", headers=(("Allow", "GET, HEAD"),))
        url = urlsplit(target)
        query = parse_qs(url.query, keep_blank_values=True)
        path = url.path or "/"
        if self._token is not None:
            offered = query.pop("token", [None])[0]
            if offered is not None:
                return self._sign_in(offered, path, query)
            if not self._authorized(headers):
                return Response.text(401, "401: this dashboard needs the silo's token: open "
                                     "/?token=TOKEN once in the browser, or send "
                                     "'Authorization: Bearer TOKEN'",
                                     (("WWW-Authenticate", 'Bearer realm="grainery"'),))
        if path == "/":
            return self._file("index.html")
        if path == "/favicon.ico":
            return Response(204)
        if path.startswith("/static/"):
            return self._file(path[len("/static/"):])
        if path == "/api/overview":
            return Response.json(await self._overview())
        if path == "/api/grain":
            grain_type = query.get("type", [""])[0]
            key = query.get("key", [""])[0]
            return Response.json(await self._lookup(grain_type, key))
        raise HttpError(404, f"no such page: {path[:200]}")

    def _authorized(self, headers: dict[str, str]) -> bool:
        assert self._expected is not None and self._cookie is not None
        sent = headers.get("authorization", "").encode("latin-1", "replace")
        if sent and hmac.compare_digest(sent, self._expected):
            return True
        cookie = _cookies(headers.get("cookie", "")).get(COOKIE, "")
        return bool(cookie) and hmac.compare_digest(cookie.encode(), self._cookie.encode())

    def _sign_in(self, offered: str, path: str, query: dict[str, list[str]]) -> Response:
        assert self._token is not None and self._cookie is not None
        if not hmac.compare_digest(offered.encode(), self._token.encode()):
            return Response.text(401, "401: wrong token")
        rest = urlencode(query, doseq=True)
        location = path + (f"?{rest}" if rest else "")
        cookie = f"{COOKIE}={self._cookie}; HttpOnly; SameSite=Strict; Path=/"
        if self.tls is not None:
            cookie += "; Secure"
        return Response(303, b"", headers=(("Location", location), ("Set-Cookie", cookie),
                                           ("Cache-Control", "no-store")))

    def _file(self, name: str) -> Response:
        body = self._static.get(name)
        if body is None or "/" in name:
            raise HttpError(404, f"no such file: {name[:200]}")
        suffix = name[name.rfind("."):]
        return Response(200, body, _TYPES.get(suffix, "application/octet-stream"),
                        (("Cache-Control", "no-cache"),))


def _parse(head: bytes) -> tuple[str, str, dict[str, str]]:
    try:
        text = head.decode("latin-1")
        request_line, *header_lines = text.split("\r\n")
        method, target, version = request_line.split(" ")
    except ValueError:
        raise HttpError(400, "malformed request line") from None
    if not version.startswith("HTTP/1.") or not target.startswith("/"):
        raise HttpError(400, "malformed request line")
    headers: dict[str, str] = {}
    for line in header_lines:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise HttpError(400, "malformed header")
        headers[name.strip().lower()] = value.strip()
    return method, target, headers


def _cookies(header: str) -> dict[str, str]:
    cookies: dict[str, str] = {}
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name:
            cookies[name] = value
    return cookies
