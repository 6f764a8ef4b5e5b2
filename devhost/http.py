"""HTTP triggers over ASGI: routes under ``/api``, keys, and the admin invoke endpoint.

Auth levels follow the platform: ``anonymous`` needs no key, ``function`` a function key or
the master key, ``admin`` the master key; a key comes in the ``x-functions-key`` header or
the ``code`` query parameter. ``POST /admin/functions/{name}`` with the master key runs a
non-HTTP function now (body ``{"input": "..."}``), as the real host offers.
"""
from __future__ import annotations

import asyncio
import hmac
import inspect
import json
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import parse_qsl

import azure.functions as func

from devhost.invocation import Invoker

log = logging.getLogger("devhost.http")

MAX_BODY_BYTES = 100 * 1024 * 1024  # the Functions host's own request limit


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


def _json_response(status: int, body: dict) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    return status, [(b"content-type", b"application/json")], json.dumps(body).encode()


def _error(status: int, code: str, message: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    return _json_response(status, {"error": {"code": code, "message": message}})


class HttpApp:
    """A minimal ASGI application serving the app's HTTP functions."""

    def __init__(self, functions: list[HttpFunction], invoker: Invoker, *, master_key: str,
                 function_keys: tuple[str, ...], admin_invoke: Callable[[str, str], bool] | None = None,
                 threads: int = 16, log_requests: bool = True,
                 per_function_keys: dict[str, tuple[str, ...]] | None = None) -> None:
        self.functions = functions
        self.invoker = invoker
        self.master_key = master_key
        self.function_keys = function_keys
        self.per_function_keys = per_function_keys or {}
        self.admin_invoke = admin_invoke
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="http")
        self.log_requests = log_requests
        self._route_cache: dict[str, list[tuple[HttpFunction, dict[str, str]]]] = {}

    # -- keys ----------------------------------------------------------------------------
    def _authorized(self, level: str, key: str | None, function: str | None = None) -> bool:
        if level == "ANONYMOUS":
            return True
        if not key:
            return False
        if self.master_key and hmac.compare_digest(key, self.master_key):
            return True
        if level == "ADMIN":
            return False
        # A function with keys of its own opens only to those (see devhost.config.parse_key_table).
        keys = self.per_function_keys.get(function or "") or self.function_keys
        return any(hmac.compare_digest(key, k) for k in keys)

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
        status, headers, body = await self._handle(scope, receive)
        if status >= 400 and scope["path"].startswith("/api/v2") and body.startswith(b'{"error": {'):
            # The host's own refusals (key, route, method) in the v2 protocol's error shape.
            body = json.dumps({"error": json.loads(body)["error"]["message"]}).encode()
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _read_body(self, receive: Callable) -> bytes | None:
        chunks = []
        size = 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                return None
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    async def _handle(self, scope: dict, receive: Callable):
        path: str = scope["path"]
        method: str = scope["method"]
        qs = scope.get("query_string", b"").decode("latin-1")
        query = dict(parse_qsl(qs, keep_blank_values=True)) if qs else {}
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        key = headers.get("x-functions-key") or query.get("code")
        body = await self._read_body(receive)
        if body is None:
            return _error(413, "PAYLOAD_TOO_LARGE", f"request body over the host limit of {MAX_BODY_BYTES} bytes")
        if path.startswith("/admin/functions/"):
            return await self._admin(path[len("/admin/functions/"):], method, key, body)
        if not path.startswith("/api/"):
            return _error(404, "NOT_FOUND", f"no route {path}; functions are under /api/")
        sub = path[len("/api/"):]
        allowed: list[str] = []
        for fn, route_params in self._routes(sub):
            if method not in fn.methods:
                allowed.extend(fn.methods)
                continue
            if not self._authorized(fn.auth_level, key, fn.name):
                level = "the master key" if fn.auth_level == "ADMIN" else "a function key"
                return _error(401, "UNAUTHORIZED",
                              f"{fn.name} needs {level} in the x-functions-key header or the code query parameter")
            host = headers.get("host", "localhost")
            request = func.HttpRequest(
                method=method,
                url=f"http://{host}{path}" + (f"?{qs}" if qs else ""),
                headers=headers,
                params=query,
                route_params=route_params,
                body=body,
            )
            return await self._invoke(fn, request)
        if allowed:
            status, out_headers, out = _error(405, "METHOD_NOT_ALLOWED",
                                              f"{method} not allowed on /api/{sub}; use {', '.join(sorted(set(allowed)))}")
            return status, [*out_headers, (b"allow", ", ".join(sorted(set(allowed))).encode())], out  # RFC 9110
        return _error(404, "NOT_FOUND", f"no function serves /api/{sub}")

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

    async def _invoke(self, fn: HttpFunction, request: func.HttpRequest):
        # Like the Python worker: coroutine functions run on the event loop, plain ones in
        # the thread pool.
        kwargs = {fn.arg_name: request}
        detail = f"{request.method} {request.url.split('/api', 1)[-1]}"
        try:
            if fn.is_async:
                if self.log_requests:
                    response = await self.invoker.acall(fn.name, "httpTrigger", detail, fn.user_function, **kwargs)
                else:
                    response = await fn.user_function(**kwargs)
            else:
                call = (lambda: self.invoker.call(fn.name, "httpTrigger", detail, fn.user_function, **kwargs)) \
                    if self.log_requests else (lambda: fn.user_function(**kwargs))
                response = await asyncio.get_running_loop().run_in_executor(self.executor, call)
        except Exception as exc:  # the platform answers 500 for an unhandled exception
            log.exception("%s raised", fn.name)
            return _error(500, "INTERNAL_ERROR", f"function {fn.name} failed: {type(exc).__name__}")
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

    async def _admin(self, name: str, method: str, key: str | None, body: bytes):
        if method != "POST":
            return _error(405, "METHOD_NOT_ALLOWED", "use POST /admin/functions/{name}")
        if not self._authorized("ADMIN", key):
            return _error(401, "UNAUTHORIZED", "the admin API needs the master key")
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            return _error(400, "INVALID_REQUEST", "body must be JSON: {\"input\": \"...\"}")
        text = payload.get("input", "") if isinstance(payload, dict) else ""
        if not isinstance(text, str):
            return _error(400, "INVALID_REQUEST", "field 'input' must be a string")
        if self.admin_invoke is None or not self.admin_invoke(name, text):
            return _error(404, "NOT_FOUND", f"no non-HTTP function named {name!r}")
        return 202, [], b""
