"""The background event loop that routers and servers drive their p2pd clients from."""

from __future__ import annotations

import asyncio
import threading

import pytest

from runtime.loops import LoopThread


def test_runs_coroutines_and_returns_their_results():
    loop = LoopThread("test-loop")
    try:
        async def add(a: int, b: int) -> int:
            await asyncio.sleep(0)
            return a + b

        assert loop.run(add(2, 3), timeout=5) == 5
    finally:
        loop.stop()


def test_a_timeout_cancels_the_coroutine():
    loop = LoopThread("test-loop")
    cancelled = threading.Event()
    try:
        async def forever() -> None:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        with pytest.raises(TimeoutError):
            loop.run(forever(), timeout=0.2)
        assert cancelled.wait(5)
    finally:
        loop.stop()


def test_errors_propagate_and_stop_ends_the_thread_even_with_tasks_left():
    loop = LoopThread("test-loop")

    async def fail() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        loop.run(fail(), timeout=5)
    loop.submit(asyncio.sleep(3600))
    loop.stop()
    assert not loop.alive
    loop.stop()  # idempotent
