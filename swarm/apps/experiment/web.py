"""The dashboard: an aiohttp app serving one page (static/, shipped in the package) and the monitor's snapshot.

    GET /                 the page (static/index.html; app.js and style.css under /static/)
    GET /api/state        the current snapshot (JSON)
    GET /api/stream       server-sent events: one `state` event per new snapshot, a comment every 15 s
    GET /api/health       200 while the monitor runs (launch waits for it)

aiohttp: asyncio-native server and streaming responses in one package (already in our dependency tree through
web3), so server-sent events need no extra framework and no separate ASGI server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

STATIC = Path(__file__).parent / "static"
PUSH_CHECK_S = 0.5
KEEPALIVE_S = 15.0


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def dumps(snapshot: dict[str, Any]) -> str:
    return json.dumps(_clean(snapshot), separators=(",", ":"))


def make_app(monitor) -> web.Application:
    """`monitor` has `get() -> (version, snapshot)`."""
    app = web.Application()

    async def index(_request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def state(_request: web.Request) -> web.Response:
        _, snap = monitor.get()
        return web.Response(text=dumps(snap), content_type="application/json")

    async def health(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})  # fmt: skip
        await resp.prepare(request)
        sent, quiet = -1, 0.0
        with contextlib.suppress(ConnectionResetError, asyncio.CancelledError):
            while True:
                version, snap = monitor.get()
                if version != sent:
                    await resp.write(f"event: state\nid: {version}\ndata: {dumps(snap)}\n\n".encode())
                    sent, quiet = version, 0.0
                elif quiet >= KEEPALIVE_S:
                    await resp.write(b": keep-alive\n\n")
                    quiet = 0.0
                await asyncio.sleep(PUSH_CHECK_S)
                quiet += PUSH_CHECK_S
        return resp

    app.router.add_get("/", index)
    app.router.add_get("/api/state", state)
    app.router.add_get("/api/stream", stream)
    app.router.add_get("/api/health", health)
    app.router.add_static("/static/", STATIC)
    return app


async def serve(monitor, host: str, port: int, stop_signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM),
                stop: asyncio.Event | None = None) -> None:
    """Serve the dashboard until one of `stop_signals` arrives (or `stop` is set)."""
    runner = web.AppRunner(make_app(monitor), handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in stop_signals:
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


class DashboardThread:
    """The dashboard served from a thread of this process (tests, benchmarks); `stop()` ends it."""

    def __init__(self, monitor, host: str = "127.0.0.1", port: int = 0) -> None:
        import socket

        if port == 0:
            with socket.socket() as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
        self.url = f"http://{host}:{port}/"
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._loop.run_until_complete, daemon=True, name="dashboard",
                                        args=(serve(monitor, host, port, stop_signals=(), stop=self._stop),))
        self._thread.start()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._loop.close()
