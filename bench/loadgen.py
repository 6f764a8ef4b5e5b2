"""A small HTTP/1.1 keep-alive load generator on raw asyncio sockets (loopback only).

Each of ``concurrency`` connections sends one prebuilt request, reads the whole response,
and repeats until the deadline: closed-loop load, bounded in time.
"""
from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass

import numpy as np


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    latencies: np.ndarray  # seconds

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies, q) * 1000) if len(self.latencies) else float("nan")


def build_request(path: str, body: bytes, headers: dict[str, str] | None = None, host: str = "127.0.0.1") -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", "Content-Type: application/json", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _connection(port: int, request: bytes, start: float, deadline: float, lat: list, errs: list) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while True:
            t0 = time.perf_counter()
            if t0 >= deadline:
                return
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            lower = head.lower()
            # At a line start: "inference-header-content-length:" (v2 binary answers) ends the same way.
            i = lower.find(b"\r\ncontent-length:")
            n = int(head[i + 17: head.find(b"\r\n", i + 2)]) if i >= 0 else 0
            if n:
                await reader.readexactly(n)
            t1 = time.perf_counter()
            if t0 >= start:  # after the warm-up
                lat.append(t1 - t0)
                if head[9:12] != b"200":
                    errs.append(head[9:12])
    finally:
        writer.close()


async def _run(port: int, request: bytes, concurrency: int, seconds: float, warmup: float) -> LoadResult:
    now = time.perf_counter()
    start, deadline = now + warmup, now + warmup + seconds
    lat: list[float] = []
    errs: list = []
    await asyncio.gather(*(_connection(port, request, start, deadline, lat, errs) for _ in range(concurrency)))
    return LoadResult(len(lat), len(errs), seconds, np.array(lat))


def run_load(port: int, request: bytes, concurrency: int, seconds: float = 4.0, warmup: float = 0.5) -> LoadResult:
    try:
        import uvloop

        return uvloop.run(_run(port, request, concurrency, seconds, warmup))
    except ImportError:
        return asyncio.run(_run(port, request, concurrency, seconds, warmup))
