"""HTTP triggers over ASGI: routes under ``/api``, keys, and the admin invoke endpoint.

Auth levels follow the platform: ``anonymous`` needs no key, ``function`` a function key or
the master key, ``admin`` the master key; a key comes in the ``x-functions-key`` header or
the ``code`` query parameter. ``POST /admin/functions/{name}`` with the master key runs a
non-HTTP function now (body ``{"input": "..."}``), as the real host offers.

The front door works in this order, so that a caller without a key costs next to nothing:
route, key, declared size, room in the host's budget of body bytes held at once, and only
then the body, read with the limit enforced while it streams in. Every refusal is in the error
envelope the app's edge defines for the path (``functions.edge.host_envelope``: the v2
protocol's on ``/api/v2``, this API's elsewhere), and a refusal sent before the body was read
closes the connection (nothing waits for, or buffers, the rest of the upload). Query strings are
redacted before anything is logged: a key in ``?code=`` never reaches a log.
"""
from __future__ import annotations

import asyncio
import hmac
import inspect
import json
import logging
import re
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote_from_bytes, unquote_to_bytes

import azure.functions as func

from devhost.invocation import Invoker
from functions.edge import host_envelope
from shared.core.errors import InvalidRequest
from shared.serving.protocols.jsonkeys import check_unique_keys

log = logging.getLogger("devhost.http")

#: The Functions host's own request limit (its setting ``FUNCTIONS_REQUEST_BODY_SIZE_LIMIT``).
MAX_BODY_BYTES = 100 * 1024 * 1024
#: A caller must deliver its whole body within this many seconds (a slow upload holds a slot).
BODY_TIMEOUT_SECONDS = 30.0
#: Bytes of request bodies the host holds at once, across connections (see ``BodyBudget``).
BODY_BUDGET_BYTES = 16 * 1024 * 1024
_KEY_HEADER = b"x-functions-key"
#: Query parameters whose values may be logged; every other value is written as ``***``.
_LOGGABLE_PARAMS = frozenset({"format"})
_KNOWN_PARAMS = frozenset({"code", "format"})


@dataclass
class HttpFunction:
    name: str
    arg_name: str
    route: str
    methods: tuple[str, ...]
    auth_level: str  # ANONYMOUS | FUNCTION | ADMIN
    user_function: Callable[..., Any]
    pattern: re.Pattern[str] | None = None

    def __post_init__(self) -> None:
        self.pattern = compile_route(self.route)
        self.is_async = inspect.iscoroutinefunction(self.user_function)


def compile_route(route: str) -> re.Pattern[str]:
    """``models/{name}/predict`` -> a regex with named groups; ``{x:int}`` and ``{x?}`` understood."""
    out = ""
    for part in re.split(r"(\{[^}]+\})", route.strip("/")):
        if part.startswith("{"):
            inner = part[1:-1]
            optional = inner.endswith("?")
            inner = inner.rstrip("?")
            name, _, constraint = inner.partition(":")
            body = r"\d+" if constraint == "int" else r"[^/]+"
            out += f"(?P<{name}>{body})" + ("?" if optional else "")
        else:
            out += re.escape(part)
    return re.compile(f"^{out}/?$")


@dataclass(frozen=True)
class Refusal:
    """The host's own error answer, written in the path's error envelope when it is sent."""

    code: str
    message: str


def _error(status: int, code: str, message: str, *,
           close: bool = False) -> tuple[int, list[tuple[bytes, bytes]], Refusal]:
    """A refusal by the host; ``close`` ends the connection after it (an unread body waits)."""
    headers = [(b"content-type", b"application/json")]
    if close:
        headers.append((b"connection", b"close"))
    return status, headers, Refusal(code, message)


def redact_query(query_string: bytes) -> str:
    """The query string safe to log: values are ``***`` except a few known-harmless ones, and
    a parameter name is shown only if it is one the API knows (``code``, ``format``).

    Allow-listing what is shown, rather than blanking ``code``, also covers a key sent under a
    misspelt name, as a bare token (``?local-master-key``), or a signature some client appends.
    """
    if not query_string:
        return ""
    parts = []
    for pair in query_string.split(b"&")[:20]:
        raw_name, eq, raw_value = pair.partition(b"=")
        name = unquote_to_bytes(raw_name).decode("utf-8", "replace").lower()
        shown = name if name in _KNOWN_PARAMS else "*"
        if not eq:
            parts.append(shown)
        elif name in _LOGGABLE_PARAMS:
            parts.append(f"{shown}={quote_from_bytes(unquote_to_bytes(raw_value)[:40], safe='')}")
        else:
            parts.append(f"{shown}=***")
    return "&".join(parts)


def key_matches(given: bytes, expected: str) -> bool:
    """Constant-time comparison of a presented key with a configured one, on bytes.

    Keys arrive as raw bytes (a header) or percent-decoded bytes (``?code=``); comparing
    bytes means a non-ASCII or undecodable key is simply a wrong key, never an exception.
    """
    return bool(expected) and hmac.compare_digest(given, expected.encode("utf-8"))


def _presented_key(headers: list[tuple[bytes, bytes]], query_string: bytes) -> bytes | None:
    """The key as the caller sent it, bytes as they came: header first, then ``?code=``."""
    for name, value in headers:
        if name.lower() == _KEY_HEADER and value:
            return value
    if b"code=" in query_string:
        for pair in query_string.split(b"&"):
            name, _, value = pair.partition(b"=")
            if name == b"code" and value:
                # bytes all the way: ``parse_qsl`` on bytes round-trips through ASCII and
                # raises on a percent-encoded non-ASCII key
                return unquote_to_bytes(value.replace(b"+", b" "))
    return None


class BodyTooLarge(Exception):
    """The body grew past the limit while it streamed in."""


class HostBusy(Exception):
    """The host's budget of body bytes stayed spent for longer than a caller may wait."""


class BodyBudget:
    """How many bytes of request bodies the host holds at once, across all connections.

    The size limit bounds one body; this bounds their sum. Without it, memory grows with the
    number of authenticated callers that upload at once: each body is held while it streams
    in, then again while it is joined and parsed (16 clients posting 4 MB bodies grew the
    host by 68 MB, 4 clients by 24 MB). A request takes its share before a byte of its body
    is read and gives it back when its answer is ready.

    A request with a ``Content-Length`` takes it whole, and waits in arrival order while the
    budget is spent; it holds nothing while it waits, and its upload waits in the client's
    socket. A chunked request takes each chunk as it comes and never waits (it would hold
    bytes while waiting, and two such waits can block each other): a chunk that does not fit
    refuses the request. One request always fits when it is alone, so a body up to the size
    limit still goes through.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    def take(self, size: int) -> asyncio.Future[None] | None:
        """Reserve ``size`` bytes: None when they are granted now, else a future done once they are."""
        if not self._waiting and (self.used == 0 or self.used + size <= self.limit):
            self.used += size
            return None
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((size, granted))
        return granted

    def try_take(self, size: int, held: int) -> bool:
        """Reserve ``size`` more bytes for a request holding ``held``, only if they fit now."""
        if self.used + size <= self.limit or self.used == held:
            self.used += size
            return True
        return False

    def give_back(self, size: int) -> None:
        """Return ``size`` bytes and grant waiting requests, in order, as far as they fit."""
        self.used -= size
        while self._waiting:
            want, granted = self._waiting[0]
            if granted.done():  # its caller stopped waiting
                self._waiting.popleft()
                continue
            if self.used and self.used + want > self.limit:
                break
            self._waiting.popleft()
            self.used += want
            granted.set_result(None)


class HttpApp:
    """A minimal ASGI application serving the app's HTTP functions."""

    def __init__(self, functions: list[HttpFunction], invoker: Invoker, *, master_key: str,
                 function_keys: tuple[str, ...], admin_invoke: Callable[[str, str], bool] | None = None,
                 threads: int = 16, log_requests: bool = True, max_body_bytes: int = MAX_BODY_BYTES,
                 body_timeout_seconds: float = BODY_TIMEOUT_SECONDS, body_budget_bytes: int = BODY_BUDGET_BYTES,
                 per_function_keys: dict[str, tuple[str, ...]] | None = None) -> None:
        self.functions = functions
        self.invoker = invoker
        self.master_key = master_key
        self.function_keys = function_keys
        self.per_function_keys = per_function_keys or {}
        self.admin_invoke = admin_invoke
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="http")
        self.log_requests = log_requests
        self.max_body_bytes = max_body_bytes
        self.body_timeout_seconds = body_timeout_seconds
        self.body_budget = BodyBudget(body_budget_bytes)
        self._route_cache: dict[str, list[tuple[HttpFunction, dict[str, str]]]] = {}

    # -- keys ----------------------------------------------------------------------------
    def _authorized(self, level: str, key: bytes | None, function: str | None = None) -> bool:
        """The one key check: does ``key`` (raw bytes, or None) open ``function``, a route of ``level``?"""
        if level == "ANONYMOUS":
            return True
        if not key:
            return False
        if key_matches(key, self.master_key):
            return True
        if level == "ADMIN":
            return False
        # A function with keys of its own opens only to those (see devhost.config.parse_key_table).
        keys = self.per_function_keys.get(function or "") or self.function_keys
        return any(key_matches(key, k) for k in keys)

    # -- ASGI ----------------------------------------------------------------------------
    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    self.executor.shutdown(wait=False, cancel_futures=True)
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        try:
            status, headers, body = await self._handle(scope, receive)
        except Exception as exc:  # a host bug must still answer in the JSON shape
            log.error("host failed on %s %s: %s", scope.get("method"), scope.get("path", "")[:200], type(exc).__name__)
            status, headers, body = _error(500, "INTERNAL_ERROR", f"the host failed: {type(exc).__name__}", close=True)
        if isinstance(body, Refusal):
            body = host_envelope(scope["path"]).body(body.code, body.message, status)
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _declared(self, raw_headers: list[tuple[bytes, bytes]]):
        """``(declared Content-Length or None, None)``, or ``(None, refusal)``: a 413 for a
        length over the limit, a 400 for an unreadable one."""
        for name, value in raw_headers:
            if name.lower() == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    return None, _error(400, "INVALID_REQUEST", "the Content-Length header is not a number", close=True)
                if declared > self.max_body_bytes:
                    return None, _error(413, "PAYLOAD_TOO_LARGE", f"request body of {declared} bytes is over the host "
                                        f"limit of {self.max_body_bytes} bytes", close=True)
                return declared, None
        return None, None

    async def _wait_for_room(self, granted: asyncio.Future[None], size: int) -> None:
        """Wait, in arrival order, until the body budget grants this request's ``size`` bytes;
        ``HostBusy`` if that takes longer than a body may take to arrive."""
        try:
            async with asyncio.timeout(self.body_timeout_seconds):
                await granted
        except BaseException as exc:
            if granted.done() and not granted.cancelled():
                self.body_budget.give_back(size)  # granted just as the wait ended
            else:
                granted.cancel()  # give_back skips it
            if isinstance(exc, TimeoutError):
                raise HostBusy from None
            raise

    async def _read_body(self, receive: Callable, held: int) -> tuple[bytes, int]:
        """The body and the bytes of the budget it holds, ``held`` (its declared length, taken
        already) or more as a chunked one streams in; the caller gives them back.

        Refused with ``BodyTooLarge`` as soon as it passes the limit (chunked uploads have no
        length to check up front), ``HostBusy`` when a chunk does not fit in the budget, and
        ``TimeoutError`` if it is slow. Whatever it holds is given back if it raises.
        """
        chunks = []
        size = 0
        try:
            async with asyncio.timeout(self.body_timeout_seconds):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise ConnectionError("client went away")
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body_bytes:
                        raise BodyTooLarge
                    if size > held:  # chunked: each chunk takes its room as it comes
                        if not self.body_budget.try_take(size - held, held):
                            raise HostBusy
                        held = size
                    chunks.append(chunk)
                    if not message.get("more_body"):
                        return b"".join(chunks), held
        except BaseException:
            if held:
                self.body_budget.give_back(held)
            raise

    async def _handle(self, scope: dict, receive: Callable):
        path: str = scope["path"]
        method: str = scope["method"]
        raw_qs: bytes = scope.get("query_string", b"")
        raw_headers: list[tuple[bytes, bytes]] = scope["headers"]
        shown = path[:200] + (f"?{redact_query(raw_qs)}" if raw_qs else "")
        # 1. route and key, from the request line and headers alone
        target, route_params, refused = self._route(path, method, _presented_key(raw_headers, raw_qs), shown)
        if refused is not None:
            return refused
        # 2. the declared size, before a byte of the body is read
        declared, refused = self._declared(raw_headers)
        if refused is not None:
            self._refused(target.name if target else "admin", method, shown, refused[0])
            return refused
        # 3. room in the body budget, then the body, with the limit enforced as it streams in
        body, held, refused = await self._receive_body(receive, declared, target, method, shown)
        if refused is not None:
            return refused
        try:
            if target is None:
                return self._admin(path[len("/admin/functions/"):], body)
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw_headers}
            qs = raw_qs.decode("latin-1")
            host = headers.get("host", "localhost")
            request = func.HttpRequest(
                method=method,
                url=f"http://{host}{path}" + (f"?{qs}" if qs else ""),
                headers=headers,
                params=dict(parse_qsl(qs, keep_blank_values=True)) if qs else {},
                route_params=route_params,
                body=body,
            )
            return await self._invoke(target, request, f"{method} {shown.removeprefix('/api')}")
        finally:
            if held:  # the body, and what the function made of it, go with the answer
                self.body_budget.give_back(held)

    def _route(self, path: str, method: str, key: bytes | None, shown: str):
        """``(function, route parameters, None)`` for a request the key opens (function None: the
        admin endpoint), or ``(None, {}, refusal)``: 404, 405 naming the allowed methods, 401."""
        if path.startswith("/admin/functions/"):
            if method != "POST":
                return None, {}, _error(405, "METHOD_NOT_ALLOWED", "use POST /admin/functions/{name}", close=True)
            if not self._authorized("ADMIN", key):
                self._refused("admin", method, shown, 401)
                return None, {}, _error(401, "UNAUTHORIZED", "the admin API needs the master key", close=True)
            return None, {}, None
        if not path.startswith("/api/"):
            return None, {}, _error(404, "NOT_FOUND", f"no route {path[:200]}; functions are under /api/", close=True)
        sub = path[len("/api/"):]
        routes = self._routes(sub)
        found = next(((fn, params) for fn, params in routes if method in fn.methods), None)
        if found is None:
            allowed = {m for fn, _ in routes for m in fn.methods}
            if allowed:
                methods = ", ".join(sorted(allowed))
                status, out_headers, out = _error(405, "METHOD_NOT_ALLOWED",
                                                  f"{method} not allowed on /api/{sub[:200]}; use {methods}",
                                                  close=True)
                return None, {}, (status, [*out_headers, (b"allow", methods.encode())], out)  # RFC 9110
            return None, {}, _error(404, "NOT_FOUND", f"no function serves /api/{sub[:200]}", close=True)
        fn, params = found
        if not self._authorized(fn.auth_level, key, fn.name):
            self._refused(fn.name, method, shown, 401)
            level = ("the master key" if fn.auth_level == "ADMIN"
                     else f"a key of the {fn.name} function" if fn.name in self.per_function_keys
                     else "a function key")
            return None, {}, _error(401, "UNAUTHORIZED",
                                    f"{fn.name} needs {level} in the x-functions-key header or the code query "
                                    "parameter", close=True)
        return fn, params, None

    async def _receive_body(self, receive: Callable, declared: int | None, target: HttpFunction | None,
                            method: str, shown: str):
        """``(body, bytes of the budget it holds, None)`` once there is room for it and it has all
        arrived within the limits, or ``(b"", 0, refusal)``: 503 (no room), 413, 408, 400."""
        name = target.name if target else "admin"
        try:
            if declared and (granted := self.body_budget.take(declared)) is not None:
                await self._wait_for_room(granted, declared)  # a coroutine only when the budget is spent
            body, held = await self._read_body(receive, declared or 0)
        except HostBusy:
            self._refused(name, method, shown, 503)
            status, out_headers, out = _error(503, "TRANSIENT", "the host is holding too many request bodies; "
                                              "retry shortly", close=True)
            return b"", 0, (status, [*out_headers, (b"retry-after", b"1")], out)
        except BodyTooLarge:
            self._refused(name, method, shown, 413)
            return b"", 0, _error(413, "PAYLOAD_TOO_LARGE",
                                  f"request body over the host limit of {self.max_body_bytes} bytes", close=True)
        except TimeoutError:
            self._refused(name, method, shown, 408)
            return b"", 0, _error(408, "REQUEST_TIMEOUT",
                                  f"the body did not arrive within {self.body_timeout_seconds:g} s", close=True)
        except ConnectionError:
            return b"", 0, _error(400, "INVALID_REQUEST", "the client disconnected", close=True)
        return body, held, None

    def _refused(self, name: str, method: str, shown: str, status: int) -> None:
        if self.log_requests:
            self.invoker.http_done(name, f"{method} {shown.removeprefix('/api')}", time.perf_counter(), status)

    def _routes(self, sub: str) -> list[tuple[HttpFunction, dict[str, str]]]:
        """The functions whose route matches ``sub``, with its route parameters (cached)."""
        hit = self._route_cache.get(sub)
        if hit is None:
            hit = []
            for fn in self.functions:
                m = fn.pattern.match(sub)
                if m:
                    hit.append((fn, {k: v for k, v in m.groupdict().items() if v is not None}))
            if len(self._route_cache) >= 4096:  # paths are caller input: keep the cache bounded
                self._route_cache.clear()
            self._route_cache[sub] = hit
        return hit

    async def _invoke(self, fn: HttpFunction, request: func.HttpRequest, detail: str):
        # Like the Python worker: coroutine functions run on the event loop, plain ones in
        # the thread pool. ``detail`` is the path with its query redacted: it is what gets logged.
        kwargs = {fn.arg_name: request}
        started = time.perf_counter()
        try:
            if fn.is_async:
                response = await fn.user_function(**kwargs)
            else:
                response = await asyncio.get_running_loop().run_in_executor(
                    self.executor, lambda: fn.user_function(**kwargs))
        except Exception as exc:  # the platform answers 500 for an unhandled exception
            if self.log_requests:
                self.invoker.http_done(fn.name, detail, started, 500, exc)
            else:
                log.error("%s raised %s", fn.name, type(exc).__name__, exc_info=exc)
            return _error(500, "INTERNAL_ERROR", f"function {fn.name} failed: {type(exc).__name__}")
        if self.log_requests:
            self.invoker.http_done(fn.name, detail, started, response.status_code)
        out_headers = []
        has_type = False
        for k, v in response.headers.items():
            k = k.lower()
            if k == "content-length":
                continue  # set from the body we send
            has_type = has_type or k == "content-type"
            out_headers.append((k.encode("latin-1"), v.encode("latin-1")))
        if response.mimetype and not has_type:
            ctype = response.mimetype + (f"; charset={response.charset}" if response.charset else "")
            out_headers.append((b"content-type", ctype.encode()))
        return response.status_code, out_headers, response.get_body() or b""

    def _admin(self, name: str, body: bytes):
        try:
            payload = json.loads(body or b"{}")
        except (ValueError, RecursionError):  # RecursionError: a body nested 100,000 deep
            return _error(400, "INVALID_REQUEST", "body must be JSON: {\"input\": \"...\"}")
        try:  # as the app's routes: {"input": "a", "input": "b"} is refused, not read as "b"
            check_unique_keys(body, payload)
        except InvalidRequest as exc:
            return _error(400, "INVALID_REQUEST", exc.message)
        text = payload.get("input", "") if isinstance(payload, dict) else ""
        if not isinstance(text, str):
            return _error(400, "INVALID_REQUEST", "field 'input' must be a string")
        if self.admin_invoke is None or not self.admin_invoke(name, text):
            return _error(404, "NOT_FOUND", f"no non-HTTP function named {name[:100]!r}")
        return 202, [], b""
