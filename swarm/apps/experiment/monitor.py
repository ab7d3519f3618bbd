"""The experiment's monitor: reads the swarm (DHT records), the chain (escrow events) and the local peers' events,
and keeps one snapshot of it all for the dashboard. It holds no key and sends no transaction.

Sources, each polled every `poll_seconds` in one thread (hivemind and web3 calls block):
- DHT: the experiment record, the signed stage announcements (peers per stage, throughput, load) and the trainers'
  signed loss reports (`records.TrainerReport`: every trainer of the swarm, not only the ones launch started);
- chain: the escrow's events of this experiment (contributions = proofs verified on-chain, finalized rounds,
  audits, slashes, claims) and its pool; every reward figure is the chain's own number;
- <state dir>/events.jsonl: what the peers launch started report (training loss, averaging rounds);
- the checkpoint folder: complete checkpoints, whose test loss the monitor measures itself.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from swarm.apps.events import Left, RoundDone, Settled, Step, parse_event
from swarm.apps.experiment import checkpoint as ckpt
from swarm.apps.experiment.state import HISTORY

logger = logging.getLogger("swarm.experiment.monitor")

TOKEN = 10**18
CHAIN_EVENTS = ("Contributed", "RoundFinalized", "Claimed", "AuditOpened", "AuditAnswered", "Slashed")
MAX_POINTS = 2000  # loss points kept for the page (older ones are thinned)
MAX_ROUNDS = 200


class ChainReader:
    """Read-only view of one experiment in the escrow (a ChainClient without a wallet)."""

    def __init__(self, rpc_url: str, escrow: str, experiment_id: int) -> None:
        from swarm.chain.client import ChainClient

        self.client = ChainClient(rpc_url, escrow=escrow)  # no wallet: it cannot send a transaction
        self.experiment_id = experiment_id
        self.next_block = 0
        self.events: dict[str, list[dict]] = {name: [] for name in CHAIN_EVENTS}
        self.requests = 0

    def poll(self) -> dict[str, Any]:
        head = self.client.w3.eth.block_number
        self.requests += 1
        if head >= self.next_block:
            for name in CHAIN_EVENTS:
                new = self.client.events(name, self.next_block, head)
                self.requests += 1
                self.events[name] += [e for e in new if int(e["experimentId"]) == self.experiment_id]
            self.next_block = head + 1
        state = self.client.experiment(self.experiment_id)
        self.requests += 1
        return self.summary(state.pool, head, state.reward_per_round)

    def summary(self, pool: int, block: int, reward_per_round: int) -> dict[str, Any]:
        ev = self.events
        rewards: dict[str, dict[str, Any]] = {}
        for e in ev["Contributed"]:
            r = rewards.setdefault(e["peer"], {"peer": e["peer"], "claimed_wei": 0, "claims": 0, "contributions": 0})
            r["contributions"] += 1
        for e in ev["Claimed"]:
            r = rewards.setdefault(e["peer"], {"peer": e["peer"], "claimed_wei": 0, "claims": 0, "contributions": 0})
            r["claimed_wei"] += int(e["amount"])
            r["claims"] += 1
        slashed = defaultdict(int)
        for e in ev["Slashed"]:
            slashed[e["peer"]] += int(e["amount"])
        for peer, amount in slashed.items():
            rewards.setdefault(peer, {"peer": peer, "claimed_wei": 0, "claims": 0, "contributions": 0})
            rewards[peer]["slashed_wei"] = amount
        rows = sorted(rewards.values(), key=lambda r: r["peer"])
        for r in rows:  # wei as strings: JavaScript numbers cannot hold them exactly
            r["claimed"] = r["claimed_wei"] / TOKEN
            r["claimed_wei"] = str(r["claimed_wei"])
            r["slashed_wei"] = str(r.get("slashed_wei", 0))
        paid = sum(int(e["amount"]) for e in ev["Claimed"])
        return {
            "block": block, "contributions": len(ev["Contributed"]),
            "proven_rounds": len({e["round"] for e in ev["Contributed"]}),
            "finalized_rounds": len(ev["RoundFinalized"]),
            "audits_opened": len(ev["AuditOpened"]), "audits_answered": len(ev["AuditAnswered"]),
            "slashes": len(ev["Slashed"]), "rewards": rows, "paid_wei": str(paid), "paid": paid / TOKEN,
            "pool_wei": str(pool), "pool": pool / TOKEN, "reward_per_round": reward_per_round / TOKEN,
        }  # fmt: skip


class EventsTail:
    """What the local peers reported, read incrementally from events.jsonl."""

    def __init__(self, path: Path | None) -> None:
        self.path, self.offset = path, 0
        self.losses: list[list[float]] = []  # [wall time, samples (all trainers), loss]
        self.samples: dict[str, int] = {}
        self.rounds: dict[tuple[int, int], dict[str, Any]] = {}
        self.eval_losses: list[list[float]] = []
        self.settled: dict[str, int] = defaultdict(int)
        self.started: float | None = None

    def poll(self) -> None:
        if self.path is None or not self.path.exists():
            return
        with open(self.path) as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind("\n") + 1
        self.offset += len(data[:end].encode())
        for line in data[:end].splitlines():
            self._apply(parse_event(line))

    def _apply(self, e) -> None:
        if e is None:
            return
        if self.started is None:
            self.started = e.time
        match e:
            case Step():
                self.samples[e.peer] = e.samples
                self.losses.append([e.time, float(sum(self.samples.values())), e.loss])
                if len(self.losses) > 2 * MAX_POINTS:
                    self.losses = self.losses[::2]
            case RoundDone():
                r = self.rounds.setdefault((e.round, e.stage), {
                    "round": e.round, "stage": e.stage, "group_size": 0, "peers": 0, "bytes": 0, "seconds": 0.0,
                    "verified": False, "parts_checked": 0, "included": 0, "dropped": {},
                })  # fmt: skip
                r["peers"] += 1
                r["group_size"] = max(r["group_size"], e.group_size)
                r["bytes"] += e.bytes_sent + e.bytes_received
                r["seconds"] = max(r["seconds"], e.seconds)
                r["verified"] = r["verified"] or e.verified
                r["parts_checked"] += e.parts_checked
                r["included"] = max(r["included"], len(e.included))
                r["dropped"].update(e.dropped)
            case Settled():
                self.settled[e.action] += 1
            case Left() if e.eval_loss is not None:
                self.eval_losses.append([e.time, e.eval_loss])


class Monitor:
    """Polls every source and keeps `snapshot` (a JSON-able dict) and `version` (bumped on every poll)."""

    def __init__(self, experiment: str, initial_peers: list[str], *, state_dir: Path | None = None,
                 chain: tuple[str, str, int] | None = None, checkpoint_dir: Path | None = None,
                 poll_seconds: float = 2.0, round_offset: int = 0, lost_after_s: float = 5.0) -> None:  # fmt: skip
        self.experiment, self.initial_peers = experiment, initial_peers
        self.state_dir, self.checkpoint_dir = state_dir, checkpoint_dir
        self.poll_seconds, self.round_offset, self.lost_after_s = poll_seconds, round_offset, lost_after_s
        self.chain_args = chain
        self.chain: ChainReader | None = None
        self.events = EventsTail(state_dir / "events.jsonl" if state_dir else None)
        self.dht = None
        self.dht_requests = 0
        self.started = time.time()
        self.version = 0
        self.snapshot: dict[str, Any] = {"health": {"ok": False, "dht": "starting", "message": "starting"}}
        self._record = None
        self._last_ok: float | None = None
        self._test_losses: dict[int, float] = {}
        self._throughput: dict[int, list[float]] = defaultdict(list)
        self._trainers: dict[str, Any] = {}  # peer id -> its latest TrainerReport (ever seen: samples add up)
        self._live_trainers: list[Any] = []  # the reports on the DHT now
        self.swarm_losses: list[list[float]] = []  # [wall time, samples of all trainers, mean of their losses]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lock = threading.Lock()

    # ---------------------------------------------------------------------------------------- lifecycle

    def start(self) -> Monitor:
        from swarm.network.dht import create_dht

        self.dht = create_dht(self.initial_peers, host="127.0.0.1", client_mode=True)
        if self.chain_args is not None:
            self.chain = ChainReader(*self.chain_args)
        self._thread = threading.Thread(target=self._loop, name="monitor-poll", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        self.save_history()
        if self.dht is not None:
            self.dht.shutdown()
            self.dht = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                self.poll()
            except Exception:  # one bad poll must not end the monitor
                logger.exception("monitor poll failed")
            self._stop.wait(max(0.0, self.poll_seconds - (time.monotonic() - t0)))

    # ------------------------------------------------------------------------------------------ polling

    def poll(self) -> None:
        health: dict[str, Any] = {"dht": "ok", "chain": "off" if self.chain is None else "ok", "message": ""}
        stages, record = self._poll_dht(health)
        chain = self._poll_chain(health)
        self.events.poll()
        checkpoints = self._poll_checkpoints()
        health["ok"] = health["dht"] == "ok" and health["chain"] in ("ok", "off")
        snap = self._build(record, stages, chain, checkpoints, health)
        with self.lock:
            self.snapshot = snap
            self.version += 1
        if self.version % 5 == 1:
            self.save_history()

    def _poll_dht(self, health: dict[str, Any]):
        from swarm.network.records import fetch_experiment, fetch_stage_announcements, fetch_trainer_reports

        connected = 0
        try:
            connected = self.dht.run_coroutine(_connected_peers, return_future=False)
            record = fetch_experiment(self.dht, self.experiment)
            announcements = fetch_stage_announcements(self.dht, self.experiment)
            self._note_trainers(fetch_trainer_reports(self.dht, self.experiment))
            self.dht_requests += 3
        except Exception as exc:  # noqa: BLE001 -- the DHT process died or the network is gone
            record, announcements = None, {}
            health["message"] = f"DHT lookup failed: {type(exc).__name__}: {exc}"
        health["connected_peers"] = connected
        now = time.time()
        if connected and (record is not None or announcements):  # a record cached here is no proof of a swarm
            self._last_ok = now
            self._record = record or self._record
        elif self._last_ok is None or now - self._last_ok > self.lost_after_s:
            health["dht"] = "lost" if self._last_ok is not None else "starting"
            health["message"] = health["message"] or (
                "lost the swarm: no connected DHT peer, or no experiment record and no stage peer, for "
                f"{now - (self._last_ok or self.started):.0f} s")  # fmt: skip
        return announcements, self._record

    def _note_trainers(self, reports: list[Any]) -> None:
        """A point of the swarm's loss when some trainer reported since the last poll: the mean of the live
        trainers' recent losses, at the samples of every trainer seen so far."""
        fresh = [r for r in reports if r.peer_id not in self._trainers or r.time > self._trainers[r.peer_id].time]
        for r in reports:
            self._trainers[r.peer_id] = r
        self._live_trainers = reports
        if fresh and reports:
            samples = sum(r.samples for r in self._trainers.values())
            self.swarm_losses.append([max(r.time for r in reports), float(samples),
                                      sum(r.loss for r in reports) / len(reports)])  # fmt: skip
            if len(self.swarm_losses) > 2 * MAX_POINTS:
                self.swarm_losses = self.swarm_losses[::2]

    def _poll_chain(self, health: dict[str, Any]) -> dict[str, Any] | None:
        if self.chain is None:
            return None
        try:
            return self.chain.poll()
        except Exception as exc:  # noqa: BLE001 -- RPC down: show it, keep the last figures
            health["chain"] = "unreachable"
            health["message"] = (health["message"] + "; " if health["message"] else "") + f"chain unreachable: {exc}"
            return self.snapshot.get("chain")

    def _poll_checkpoints(self) -> list[dict[str, Any]]:
        if self.checkpoint_dir is None:
            return []
        out = []
        for r, folder, complete in ckpt.list_checkpoints(self.checkpoint_dir):
            if complete and r not in self._test_losses:
                try:
                    self._test_losses[r] = ckpt.evaluate(folder)
                except Exception as exc:  # noqa: BLE001 -- a bad checkpoint is shown, not fatal
                    logger.warning("checkpoint %s cannot be evaluated: %s", folder, exc)
                    self._test_losses[r] = float("nan")
            savers = {}
            for meta in folder.glob("stage-*.json"):
                with open(meta) as f:
                    m = json.load(f)
                savers[str(m["stage"])] = m.get("peer_id", "?")
            out.append({"round": r, "complete": complete, "path": str(folder), "saved_by": savers,
                        "test_loss": self._test_losses.get(r)})  # fmt: skip
        return out

    def _build(self, record, announcements, chain, checkpoints, health) -> dict[str, Any]:
        n = record.n_stages if record is not None else (max(announcements, default=-1) + 1)
        stages = []
        for s in range(n):
            anns = announcements.get(s, [])
            thr = sum(a.throughput for a in anns)
            self._throughput[s].append(thr)
            self._throughput[s] = self._throughput[s][-500:]
            stages.append({
                "stage": s, "throughput": thr, "load": sum(a.load for a in anns),
                "peers": [{"peer_id": a.peer_id, "throughput": a.throughput, "load": a.load,
                           "params_version": a.params_version, "wallet": a.wallet} for a in anns],
            })  # fmt: skip
        bottleneck = min(stages, key=lambda st: (len(st["peers"]) > 0, st["throughput"]))["stage"] if stages else None
        for st in stages:
            st["bottleneck"] = st["stage"] == bottleneck
        current = None
        if record is not None:
            current = self.round_offset + int((time.time() - record.start_time) // record.round_duration)
        rounds = sorted(self.events.rounds.values(), key=lambda x: (x["round"], x["stage"]))[-MAX_ROUNDS:]
        for r in rounds:
            r["round_global"] = r["round"] + self.round_offset
        test_loss = [[c["round"], c["test_loss"]] for c in checkpoints
                     if c["test_loss"] is not None and c["test_loss"] == c["test_loss"]]  # fmt: skip
        elapsed = max(time.time() - self.started, 1e-9)
        return {
            "experiment": record.model_dump() if record is not None else {"name": self.experiment},
            "health": health, "round": current, "round_offset": self.round_offset, "stages": stages,
            "bottleneck_stage": bottleneck, "n_peers": sum(len(s["peers"]) for s in stages),
            "rounds": rounds, "loss": self._thin(self.events.losses), "test_loss": test_loss,
            "swarm_loss": self._thin(self.swarm_losses),
            "trainers": [{"peer_id": r.peer_id, "steps": r.steps, "samples": r.samples, "loss": r.loss,
                          "age_s": max(0.0, time.time() - r.time)} for r in self._live_trainers],
            "eval_loss": self.events.eval_losses, "chain": chain, "checkpoints": checkpoints,
            "throughput_history": {str(k): v[-100:] for k, v in self._throughput.items()},
            "bytes_averaged": sum(r["bytes"] for r in self.events.rounds.values()),
            "monitor": {"dht_requests": self.dht_requests, "dht_requests_per_s": self.dht_requests / elapsed,
                        "chain_requests": self.chain.requests if self.chain else 0, "uptime_s": elapsed,
                        "holds_key": False},
            "updated_at": time.time(),
        }  # fmt: skip

    @staticmethod
    def _thin(points: list[list[float]]) -> list[list[float]]:
        if len(points) <= MAX_POINTS:
            return points
        step = len(points) / MAX_POINTS
        return [points[int(i * step)] for i in range(MAX_POINTS)]

    def get(self) -> tuple[int, dict[str, Any]]:
        with self.lock:
            return self.version, self.snapshot

    def save_history(self) -> None:
        """history.json in the state dir: what results and export read after the swarm (and the chain) are gone."""
        if self.state_dir is None:
            return
        _, snap = self.get()
        data = {**snap, "loss_all": self.events.losses, "throughput_all": {str(k): v for k, v in
                self._throughput.items()}, "started_at": self.events.started}  # fmt: skip
        path = self.state_dir / HISTORY
        tmp = path.with_name(f".{HISTORY}.tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)


async def _connected_peers(_dht, node) -> int:
    """Peers our DHT's p2pd is connected to right now (0: we are alone, whatever our local cache still holds)."""
    return len(await node.p2p.list_peers())


def main(argv: list[str] | None = None) -> int:
    import argparse
    import asyncio
    import signal

    from swarm.apps.experiment.web import serve

    p = argparse.ArgumentParser(prog="python -m swarm.apps.experiment.monitor",
                                description="read-only monitor and web dashboard of one experiment")
    p.add_argument("--experiment", required=True)
    p.add_argument("--initial-peers", nargs="+", required=True)
    p.add_argument("--state-dir", type=Path)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8470)
    p.add_argument("--poll-seconds", type=float, default=2.0)
    p.add_argument("--checkpoint-dir", type=Path)
    p.add_argument("--round-offset", type=int, default=0)
    p.add_argument("--chain-rpc")
    p.add_argument("--escrow")
    p.add_argument("--chain-experiment", type=int)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("hivemind").setLevel(logging.WARNING)
    chain = (a.chain_rpc, a.escrow, a.chain_experiment) if a.chain_rpc else None
    monitor = Monitor(a.experiment, a.initial_peers, state_dir=a.state_dir, chain=chain,
                      checkpoint_dir=a.checkpoint_dir, poll_seconds=a.poll_seconds, round_offset=a.round_offset)
    from runtime.procs import start_watchdog

    watchdog = start_watchdog()  # if we are killed, our DHT process and its p2pd go too
    try:
        monitor.start()
        asyncio.run(serve(monitor, a.host, a.port, stop_signals=(signal.SIGINT, signal.SIGTERM)))
    finally:
        monitor.stop()
        watchdog.stop()
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
