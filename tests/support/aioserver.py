"""An aiohttp app served on a free 127.0.0.1 port from its own thread and event loop (the platform stand-ins)."""

from __future__ import annotations

import asyncio
import threading

from aiohttp import web

__all__ = ["ThreadedServer"]


class ThreadedServer:
    """Subclasses add their routes in `routes()`; websockets they accept go in `_sockets` to be closed at stop."""

    thread_name = "standin"

    def __init__(self) -> None:
        self.base = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._sockets: list[web.WebSocketResponse] = []
        self._ready = threading.Event()

    def routes(self, app: web.Application) -> None:
        """Add the stand-in's routes."""
        raise NotImplementedError

    def start(self) -> ThreadedServer:
        """Serve from a daemon thread; return once the port is open."""
        threading.Thread(target=self._serve, name=self.thread_name, daemon=True).start()
        if not self._ready.wait(15):
            raise RuntimeError(f"{type(self).__name__} did not start")
        return self

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        app = web.Application(client_max_size=64 << 20)
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"http://127.0.0.1:{port}"
        self._ready.set()
        self._loop.run_forever()

    def stop(self) -> None:
        """Close open websockets and stop serving."""
        loop = self._loop
        if loop is None:
            return

        async def close() -> None:
            for ws in list(self._sockets):
                await ws.close()
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        self._loop = None

    def __enter__(self):  # noqa: ANN204 - the subclass
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
