"""What the server knows about its app while it runs: how many pictures are in hand, and whether it was asked to stop
(``cli/serve.py`` tells it from uvicorn's signal handler), so that Ctrl+C answers the pictures waiting for the model at
once instead of segmenting every one of them first."""

from __future__ import annotations

import asyncio

__all__ = ["ServingState"]


class ServingState:
    """What the server knows about the app: ``busy`` uploads arriving or pictures not yet answered (waiting or running);
    ``stopping`` once it was asked to stop (``stop``): the pictures waiting for the model are then answered 503."""

    def __init__(self) -> None:
        self.busy = 0
        self.segmenting = False  # a picture is in the model (in a worker thread, which nothing can stop)
        self.stopping = False
        self._stopped = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def stop(self) -> None:
        """Answer the waiting pictures now (callable from a signal handler or another thread)."""
        self.stopping = True
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)

    async def take_turn(self, turn: asyncio.Lock) -> bool:
        """Acquire ``turn`` (the model), or False when the server is stopping first (``turn`` not held then)."""
        if self.stopping:
            return False
        self._loop = asyncio.get_running_loop()
        acquire = asyncio.ensure_future(turn.acquire())
        stopped = asyncio.ensure_future(self._stopped.wait())
        await asyncio.wait({acquire, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not acquire.done():
            acquire.cancel()  # (asyncio.Lock passes the turn on to the next waiter)
            return False
        if self.stopping:
            turn.release()
            return False
        return True
