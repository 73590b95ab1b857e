"""What `crawl2chat serve` checks before a request reaches a route: one ASGI middleware.

    app.add_middleware(Guard, hosts={"127.0.0.1", "localhost"}, max_body_bytes=2 << 20, body_timeout_s=30)

- **Host**: only the names the server is meant to be reached by (the bound address, localhost,
  127.0.0.1, any --allowed-host). A web page the user visits can make its own name resolve to
  127.0.0.1 (DNS rebinding) and then talk to the server as same-origin; its requests still carry
  its own name in Host, so they are refused here.
- **Origin**: a browser puts the page's origin on every cross-origin request and on every POST; a
  request whose Origin is not this server's is refused (403). So no other site open in the user's
  browser can drive the API, whatever it sends.
- **Content type**: a POST must be `application/json`. Forms and `text/plain` are what a page may
  send cross-site without asking first; JSON needs a CORS preflight, which this server never grants.
- **Body**: refused by Content-Length when it claims too much, and while it streams when it grows
  past the limit; the whole body must arrive within body_timeout_s (408), so a client that stalls
  half-way holds neither a request slot nor its half body. Routes get the body already read. When
  a body is abandoned (the client left, stalled or sent too much) its memory goes back to the
  system: glibc keeps freed heap otherwise (40 stalled 1.9 MB bodies left +60 MB RSS after close).
- **Security headers** on every response: a CSP allowing only this origin's scripts, styles and
  connections and no framing, nosniff, no referrer, same-origin resource policy.

Refusals are OpenAI-shaped errors ({"error": {...}}), like every other error of the server.
"""
from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
from urllib.parse import urlsplit

from training.engine.openai_protocol import ApiError

SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                 b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),                     # frame-ancestors for browsers without CSP 2
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),  # no <script src>/<img src> of ours on other sites
]


def host_name(host: str) -> str:
    """'Example.com:8000' -> 'example.com', '[::1]:8000' -> '::1' (the Host header without its port)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Guard:
    def __init__(self, app, hosts: set[str], max_body_bytes: int, body_timeout_s: float):
        self.app, self.max_body_bytes, self.body_timeout_s = app, max_body_bytes, body_timeout_s
        self.hosts = {host_name(h) for h in hosts}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_secured(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        refusal = self._check(scope)
        if refusal is not None:
            return await refusal.response()(scope, receive, send_secured)
        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send_secured)
        try:
            body = await asyncio.wait_for(self._read(receive), self.body_timeout_s)
        except asyncio.TimeoutError:
            body = ApiError(408, f"the request body did not arrive within {self.body_timeout_s:g} s",
                            code="request_timeout")
        if body is None or isinstance(body, ApiError):
            _release_memory()
        if body is None:  # the client left
            return
        if isinstance(body, ApiError):
            return await body.response()(scope, receive, send_secured)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # http.disconnect: streams see the client leave

        await self.app(scope, replay, send_secured)

    def _check(self, scope) -> ApiError | None:
        headers = {k.lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        host = headers.get(b"host", "")
        if host_name(host) not in self.hosts:
            return ApiError(400, f"Host {host!r} is not one this server answers to ({', '.join(sorted(self.hosts))}); "
                            "start it with --allowed-host NAME to add one", code="host_not_allowed")
        origin = headers.get(b"origin")
        if origin is not None:
            o = urlsplit(origin)
            if o.scheme not in ("http", "https") or o.netloc.lower() != host.strip().lower():
                return ApiError(403, f"cross-site request from {origin!r} refused: only this server's own page "
                                f"({host}) may call it from a browser", code="cross_site_refused",
                                type="permission_error")
        if scope["method"] == "POST":
            kind = headers.get(b"content-type", "").split(";")[0].strip().lower()
            if kind != "application/json":
                return ApiError(415, f"Content-Type must be application/json, got {kind or 'none'!r}",
                                code="unsupported_media_type")
        length = headers.get(b"content-length", "0").strip()
        if (int(length) if length.isdigit() else 0) > self.max_body_bytes:
            return self._too_large()
        return None

    def _too_large(self) -> ApiError:
        return ApiError(413, f"the request body exceeds {self.max_body_bytes} bytes", code="request_too_large")

    async def _read(self, receive) -> bytes | ApiError | None:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body_bytes:
                return self._too_large()
            if not message.get("more_body"):
                return b"".join(chunks)


def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim   # glibc
    except (OSError, AttributeError, TypeError):
        return None   # another libc (musl, macOS): nothing to call


_TRIM = _malloc_trim()


def _release_memory() -> None:
    """Hand freed heap back to the system (glibc's malloc_trim; a no-op elsewhere)."""
    if _TRIM is not None:
        _TRIM(0)
