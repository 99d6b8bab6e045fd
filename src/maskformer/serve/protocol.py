"""uvicorn's HTTP/1.1 protocol (h11) with a time limit on a request's head: a client that opens a connection, or
sends part of its request line and headers, and then stalls is disconnected after ``timeout`` seconds.

uvicorn limits an idle kept-alive connection (``timeout_keep_alive``) and the app limits a stalled body (408 after
``--upload-timeout``), but nothing limits the head: such connections stayed open for good and could use up the
server's file descriptors one by one. The limit counts from the connection (or, on a kept-alive one, from the next
request's first byte) to the end of its headers, however slowly the bytes trickle in.
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["head_timeout_protocol"]


def head_timeout_protocol(timeout: float) -> type[H11Protocol]:
    """An ``H11Protocol`` subclass for ``uvicorn.Config(http=...)`` that closes a connection whose request head has
    not arrived ``timeout`` seconds after it began."""

    class HeadTimeoutProtocol(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                if self._head_timer is None:  # (part of a head: the clock runs from its first byte, not each one)
                    self._arm()
            else:
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._head_timer = self.loop.call_later(timeout, self._head_stalled)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_stalled(self) -> None:
            self._head_timer = None
            # still waiting for a request's head (not its body, not our answer): nothing to answer, close
            if self.conn.their_state is h11.IDLE and self.conn.our_state is h11.IDLE:
                if not self.transport.is_closing():
                    self.transport.close()

    return HeadTimeoutProtocol
