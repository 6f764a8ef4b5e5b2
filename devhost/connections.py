"""Connection-level guards for the local host's HTTP server: header read timeouts.

uvicorn times out idle keep-alive connections, but nothing bounds how long a client may
take to send a request's headers: a client that drips one byte a second holds its
connection (and a file descriptor) forever, and 200 of them starve the server
("slowloris"). This protocol arms a timer when a connection opens and whenever a new
request begins, disarms it when the headers are complete, and closes the connection when
it fires. The body has its own deadline in ``devhost.http``.
"""
from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: Seconds a client has to deliver a request's line and headers.
HEADER_TIMEOUT_SECONDS = 10.0


def guarded_protocol(header_timeout: float = HEADER_TIMEOUT_SECONDS) -> type[asyncio.Protocol]:
    """An httptools protocol class that closes connections whose headers come too slowly."""

    class HeaderTimeoutProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(header_timeout, self._header_timed_out)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_timed_out(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()  # a client that connects and sends nothing is timed too

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            self._disarm()  # between requests uvicorn's keep-alive timeout takes over
            super().on_response_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderTimeoutProtocol
