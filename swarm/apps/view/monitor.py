"""`PeerMonitor`: the running peer's side of the view. It receives the peer's events, keeps its `PeerState`, shows
the live panel (a terminal) or plain log lines (no terminal), keeps the status file, and reads the wallet's
earnings from the chain every few seconds. `shutdown()` reads the chain one last time and removes the file.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self, TextIO

from rich.console import Console
from rich.live import Live

from swarm.apps.events import EventWriter, Failed, Left, _Event
from swarm.apps.view.render import advice_lines, event_line, panel, status_line, summary_lines
from swarm.apps.view.state import ChainInfo, PeerState
from swarm.apps.view.status_file import remove_status, write_status

logger = logging.getLogger(__name__)

REFRESH_S = 1.0  # panel and status file
CHAIN_POLL_S = 5.0
STAGE_POLL_S = 15.0
STATUS_LINE_S = 30.0  # plain mode: a status line this often


class MonitoredEventWriter(EventWriter):
    """An EventWriter that also hands every event to the monitor (whether or not JSON lines are written)."""

    def __init__(self, monitor: PeerMonitor, enabled: bool, stream: TextIO | None = None) -> None:
        super().__init__(peer="", stream=stream, enabled=enabled)
        self.monitor = monitor

    def emit(self, event: _Event) -> None:
        super().emit(event)
        self.monitor(event)


class NoView:
    """What `view_of` gives when the peer runs without a monitor (in tests, or embedded): every call is a no-op."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


def view_of(events: EventWriter) -> PeerMonitor | NoView:
    """The monitor behind `events` (a MonitoredEventWriter), or a no-op stand-in."""
    return getattr(events, "monitor", None) or NoView()


def start_view(config: Any) -> tuple[PeerMonitor, MonitoredEventWriter]:
    """The monitor `swarm-peer` runs with `config` (live panel, plain lines or quiet) and its event writer."""
    from swarm.apps.view.status_file import StatusDirError, prepare_status_dir, status_path

    path: Path | None = status_path()
    try:
        prepare_status_dir(path.parent)
    except (StatusDirError, OSError) as exc:  # `swarm-peer status` will not see this peer; it still runs
        logger.warning("%s", exc)
        path = None
    monitor = PeerMonitor(PeerState(), mode=PeerMonitor.choose_mode(config.events), status_file=path)
    return monitor, monitor.writer(enabled=config.events)


class PeerMonitor:
    """Owns the view of one running peer: `mode` is 'live' (rich panel), 'lines' (plain) or 'quiet' (--events)."""

    def __init__(
        self,
        state: PeerState,
        *,
        mode: str = "lines",
        stream: TextIO | None = None,
        status_file: Path | None = None,
        refresh_s: float = REFRESH_S,
        chain_poll_s: float = CHAIN_POLL_S,
    ) -> None:
        if mode not in ("live", "lines", "quiet"):
            raise ValueError(f"unknown view mode {mode!r}")
        self.state, self.mode, self.status_file = state, mode, status_file
        self.stream = stream or sys.stdout
        self.refresh_s, self.chain_poll_s = refresh_s, chain_poll_s
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live: Live | None = None
        self._handlers: list[tuple[logging.StreamHandler, Any]] = []
        self._earnings_reader: Any = None
        self._chain_client: Any = None
        self._stage_peers: Callable[[], int | None] | None = None
        self._warned: set[str] = set()
        self._next_chain = self._next_stage = 0.0
        self._next_line = time.monotonic() + STATUS_LINE_S
        self.claim_command: str | None = None
        self._config: Any = None
        self._wallet: str | None = None

    @classmethod
    def choose_mode(cls, events_json: bool, stream: TextIO | None = None) -> str:
        """'quiet' with --events (stdout is JSON), 'live' on a terminal, else 'lines'."""
        if events_json:
            return "quiet"
        return "live" if (stream or sys.stdout).isatty() else "lines"

    def writer(self, enabled: bool, stream: TextIO | None = None) -> MonitoredEventWriter:
        return MonitoredEventWriter(self, enabled, stream)

    # ------------------------------------------------------------------------------------------ inputs

    def __call__(self, event: _Event) -> None:
        if isinstance(event, (Left, Failed)):
            self._stage_peers = None  # the DHT is about to shut down: no more reads of it
        try:
            with self._lock:
                self.state.apply(event)  # type: ignore[arg-type]
                line = event_line(self.state, event) if self.mode == "lines" else None  # type: ignore[arg-type]
                if line:
                    self._print(line)
        except Exception:  # the view must never take the peer down (emit runs in the peer's own threads)
            logger.exception("the peer's view could not take event %s", type(event).__name__)

    def watch_chain(self, info: ChainInfo, client: Any = None) -> None:
        """Read `info.address`'s earnings from now on, through `client` (a ChainClient; no wallet needed) or a
        read-only client made on first use (an RPC that is down then is a warning, never a crash)."""
        from swarm.apps.claim import claim_command

        with self._lock:
            self.state.chain, self.state.paid = info, True
            self._chain_client = client
            self._earnings_reader = None
            self.claim_command = claim_command(info.rpc_url, info.escrow, info.experiment,
                                               Path(info.key_file) if info.key_file else None)  # fmt: skip
            self._next_chain = 0.0

    def joined(self, dht: Any, config: Any, reach: Any = None, wallet: Any = None) -> None:
        """The peer is on the DHT (`config`: its PeerConfig; `reach`: swarm.network.reachability's result)."""
        from swarm.network.dht import visible_multiaddrs

        self._config = config
        self._wallet = getattr(
            wallet, "address", wallet
        )  # a Wallet or its address; its key is never kept here
        with self._lock:
            s = self.state
            s.role, s.peer_id, s.stage_pinned = config.role, dht.peer_id.to_base58(), config.stage is not None
            s.experiment = config.experiment
            try:
                s.addresses = visible_multiaddrs(dht)
            except Exception as exc:  # noqa: BLE001 -- the view must not stop the peer
                logger.debug("no visible addresses: %s", exc)
            if reach is not None:  # swarm.network.reachability.Reachability
                s.dialback, s.dialback_seen_as = getattr(reach, "status", ""), getattr(reach, "seen_as", "")
                detail = str(getattr(reach, "detail", ""))
                s.relayed_through = (
                    detail.removeprefix("relayed through ") if detail.startswith("relayed") else ""
                )
        if config.role == "stage":
            self.watch_stage_peers(lambda: self._count_stage_peers(dht, config.experiment))

    def found_experiment(self, record: Any) -> None:
        """The experiment record is known: a paid stage peer's wallet is followed on the chain from now on."""
        config = getattr(self, "_config", None)
        with self._lock:
            self.state.experiment = record.name
        paid = config is not None and config.role == "stage" and config.chain_rpc and self._wallet
        if not paid or record.chain_experiment_id is None:
            return
        key_file = str(config.wallet_key_file) if config.wallet_key_file else None
        info = ChainInfo(rpc_url=config.chain_rpc, escrow=config.escrow, experiment=record.chain_experiment_id,
                         address=self._wallet, key_file=key_file)  # fmt: skip
        self.watch_chain(info)

    def _count_stage_peers(self, dht: Any, experiment: str) -> int | None:
        from swarm.network.records import fetch_stage_announcements

        stage = self.state.stage
        if stage is None:
            return None
        return len({a.peer_id for a in fetch_stage_announcements(dht, experiment).get(stage, ())})

    def watch_stage_peers(self, count: Callable[[], int | None]) -> None:
        """`count()` says how many peers announce this peer's stage (a DHT read; called every few seconds)."""
        self._stage_peers = count

    # ------------------------------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        if self.mode == "live":
            console = Console(file=self.stream, force_terminal=True)
            logs_here = sys.stderr.isatty()  # `swarm-peer 2>peer.log` keeps its log in the file
            self._live = Live(panel(self.state), console=console, refresh_per_second=4, transient=False,
                              redirect_stdout=True, redirect_stderr=logs_here)  # fmt: skip
            self._live.start()
            if logs_here:
                self._point_logs_at(sys.stderr)  # the Live's proxy: log lines scroll above the panel
        self._thread = threading.Thread(target=self._run, name="peer-view", daemon=True)
        self._thread.start()
        return self

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        forced = exc_type is not None and issubclass(exc_type, KeyboardInterrupt)  # a second Ctrl-C: be quick
        self.shutdown(final_chain_read=not forced)

    def shutdown(self, final_chain_read: bool = True) -> None:
        """Stop refreshing; read the chain one last time; remove the status file; print the summary."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)  # a tick stuck on a dead RPC must not hold the exit (it is a daemon)
            self._thread = None
        if final_chain_read:
            self._poll_chain(force=True)
        with self._lock:
            if self._live is not None:
                self._live.update(panel(self.state))
                self._live.stop()
                self._live = None
                self._restore_logs()
            if self.status_file is not None:
                remove_status(self.status_file)
            lines = summary_lines(self.state, self.claim_command) if self.state.peer_id else []
        if lines:
            out = self.stream if self.mode != "quiet" else sys.stderr
            print("\n".join(lines), file=out, flush=True)

    # ------------------------------------------------------------------------------------------ thread

    def _run(self) -> None:
        while not self._stop.wait(self.refresh_s):
            try:
                self._tick()
            except Exception:  # the view must never take the peer down
                logger.exception("the peer's view failed to refresh")

    def _tick(self) -> None:
        now = time.monotonic()
        self._poll_chain()
        if self._stage_peers is not None and now >= self._next_stage:
            self._next_stage = now + STAGE_POLL_S
            try:
                count = self._stage_peers()
            except Exception as exc:  # noqa: BLE001 -- a DHT read failing is not worth stopping for
                logger.debug("could not count the peers of this stage: %s", exc)
                count = None
            with self._lock:
                self.state.stage_peers = count if count is not None else self.state.stage_peers
        with self._lock:
            self.state.updated = time.time()
            if self.status_file is not None:
                write_status(self.status_file, self.state)
            if self._live is not None:
                self._live.update(panel(self.state))
            elif self.mode == "lines":
                self._new_warnings()
                if now >= self._next_line:
                    self._next_line = now + STATUS_LINE_S
                    self._print(status_line(self.state))

    def _poll_chain(self, force: bool = False) -> None:
        info = self.state.chain
        if info is None or (not force and time.monotonic() < self._next_chain):
            return
        self._next_chain = time.monotonic() + self.chain_poll_s
        from swarm.apps.earnings import EarningsReader
        from swarm.chain.client import ChainClient
        from swarm.chain.errors import ChainError

        try:
            if self._earnings_reader is None:
                client = self._chain_client or ChainClient(info.rpc_url, escrow=info.escrow)
                self._earnings_reader = EarningsReader(client, info.experiment, info.address)
            earnings, error = self._earnings_reader.read(), ""
        except ChainError as exc:
            earnings, error = None, str(exc)
        with self._lock:
            self.state.set_earnings(earnings, error)

    def _new_warnings(self) -> None:
        current = self.state.warnings()
        fresh = [w for w in current if w.key not in self._warned]
        self._warned = {w.key for w in current}
        for line in advice_lines(fresh):
            self._print(line)

    def _print(self, line: str) -> None:
        try:
            print(line, file=self.stream, flush=True)
        except (BrokenPipeError, ValueError):  # the reader is gone: keep running
            self.mode = "quiet"

    # ------------------------------------------------------------------------------------------ logging

    def _point_logs_at(self, stream: TextIO) -> None:
        for h in logging.getLogger().handlers:
            if isinstance(h, logging.StreamHandler) and h.stream in (sys.__stderr__, sys.__stdout__):
                self._handlers.append((h, h.stream))
                h.setStream(stream)

    def _restore_logs(self) -> None:
        for h, stream in self._handlers:
            h.setStream(stream)
        self._handlers.clear()
