"""Helpers of the settler's failure tests: event recorder, the chain's own account of what a peer did, a TCP proxy
that plays a dying RPC, and a read-only look into a settlement journal."""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from swarm.chain.client import ChainClient

DEADLINE_S = 120.0
# anvil's `finalized` block is head - 2 x slots per epoch: 8 blocks here, so tests can reorganize up to 7 blocks
# of not-yet-final transactions, and a few mined blocks make everything final
SLOTS_PER_EPOCH = 4
FINALITY_BLOCKS = 2 * SLOTS_PER_EPOCH


class Recorder:
    """Collects SettlementEvents (or their JSON form) and waits for one that matches."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.cond = threading.Condition()

    def __call__(self, e: Any) -> None:
        with self.cond:
            self.events.append(e)
            self.cond.notify_all()

    def wait(self, pred: Callable[[Any], bool], what: str, timeout: float = DEADLINE_S) -> Any:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                hit = next((e for e in self.events if pred(e)), None)
                if hit is not None:
                    return hit
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"no {what} within {timeout:.0f} s; got {[describe(e) for e in self.events]}")
                self.cond.wait(left)


def describe(e: Any) -> tuple:
    if isinstance(e, dict):
        return e.get("kind"), e.get("round"), e.get("detail")
    return e.kind, e.round, e.detail


def wait_until(cond: Callable[[], bool], what: str, timeout: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.2)


def count_signed(client: ChainClient, field: str = "tx_hash") -> list[Any]:
    """`field` (tx_hash, what, ...) of every transaction `client` signs from now on (wrapping the settler's journal
    hook)."""
    signed: list[Any] = []
    journal = client._sender.on_signed

    def hook(p) -> None:
        signed.append(getattr(p, field))
        journal(p)

    client.on_signed(hook)
    return signed


def report(round: int, root: int, stage: int = 0) -> Any:
    """A settler's round report whose commitment is enough for the stand-in prover."""
    from types import SimpleNamespace

    return SimpleNamespace(round=round, stage=stage, commitment=SimpleNamespace(root=root, norm_sq=100, num_chunks=5))


def chain_record(client: ChainClient, experiment: int, peer: str) -> dict[str, Counter]:
    """How many times the canonical chain shows each of `peer`'s Contributed / AuditAnswered / Claimed events,
    keyed by (round, stage[, j]); plus the hashes of the transactions that emitted them."""
    where = {"experimentId": experiment, "peer": peer}
    out: dict[str, Counter] = {}
    txs: set[str] = set()
    for name in ("Contributed", "AuditAnswered", "Claimed"):
        events = client.events(name, 0, where=where)
        out[name] = Counter((int(e["round"]), int(e["stage"]), *([int(e["j"])] if name == "AuditAnswered" else []))
                            for e in events)  # fmt: skip
        txs |= {e["tx"] for e in events}
    out["txs"] = Counter(txs)
    return out


def journal_file(data_dir: Path) -> Path:
    (path,) = (data_dir / "settlement").glob("*.sqlite")
    return path


def journal_rows(data_dir: Path) -> tuple[list[tuple], list[tuple]]:
    """(rounds as (round, stage, state), txs as (hash, nonce, kind, target, state, resent)), read without writing."""
    db = sqlite3.connect(f"file:{journal_file(data_dir)}?mode=ro", uri=True, timeout=10.0)
    try:
        rounds = db.execute("SELECT round, stage, state FROM rounds ORDER BY round, stage").fetchall()
        txs = db.execute("SELECT hash, nonce, kind, target, state, resent FROM txs ORDER BY nonce").fetchall()
    finally:
        db.close()
    return rounds, txs


class TcpProxy:
    """127.0.0.1:<port> -> `target`, that can be killed (listener and every connection closed at once: the client
    sees connection refused / reset) and started again on the same port."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        self._spawn(self._accept, listener)
        return self

    def kill(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, []
        for s in [listener, *conns]:
            if s is not None:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
        for t in self._threads:
            t.join(5.0)
        self._threads = []

    def _spawn(self, fn: Callable[..., None], *args: Any) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True, name="rpc-proxy")
        t.start()
        self._threads.append(t)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5.0)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # killed meanwhile
                    client.close()
                    upstream.close()
                    return
                self._conns += [client, upstream]
            self._spawn(self._pipe, client, upstream)
            self._spawn(self._pipe, upstream, client)

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            src.settimeout(None)
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
