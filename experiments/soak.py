"""Churn soak on emulated hosts (experiments/netlab.py; needs root): kill -9 and restart peers at random, cut hosts off.

A bootstrap, three stage peers of a 1-stage digits swarm (two public, one at home behind NAT, served through the
bootstrap's relay) and a trainer at home, each a `python -m swarm.peer` in its own namespace. Every ~20 s one
stage peer or the trainer, at random, is killed with SIGKILL and started again; once per run one host (not the
bootstrap) loses its link for 30 s. At the end:

- rounds averaged / rounds possible: per stage peer, the rounds in which it averaged with at least one other peer,
  over the rounds that ended while it and another stage peer were up (counted from its events);
- the trainer's samples/s over time (30 s bins) and its loss at the start and at the end;
- restarts survived: killed peers that came back and contributed again (a stage peer: an averaged round; the
  trainer: a step);
- nothing left behind: no process of ours and no namespace.

With --chain the stage peers are paid: a dev chain (anvil --network optimism, swarm.chain.devchain) runs in this
machine's namespace and listens on the lab's gateway (netlab `Lab.add_gateway`, 10.77.0.1), which every host
reaches (the home ones through their NAT); the demo escrow is deployed with 10 s rounds, k = 1 audit, a 30 s
submission and a 180 s audit window (longer than a peer is down here: see CHAIN_ROUND_S). Each stage peer proves
with groth16py and has its own dev account, through a 0600 key file, and its own --data-dir (its settlement
journal), both kept across its kill -9 and restart. After the churn the trainer is stopped and nothing is killed
any more (the drain) until every contribution's audit window is over and each one was claimed or slashed (or a
deadline). Then the escrow's events (Contributed, RoundFinalized, Claimed, AuditOpened, AuditAnswered, Slashed) are
reconciled per stage peer: contributions, rounds claimed, contributions finalized and never claimed (must be 0),
slashed (must be 0: every peer is honest), audits answered, tokens earned.

    sudo .venv/bin/python experiments/soak.py [--quick] [--chain]     # 10 minutes; --quick: 2 minutes
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiments.netlab import NS_PREFIX, Host, Lab, list_namespaces, unavailable_reason
from runtime.procs import ShutdownRequested, raise_on_termination_signals

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
ROUND_S = 6.0
# --chain: longer rounds (each stage peer proves c0 and its audited chunk every round: ~1.3 CPU-s a proof with
# groth16py, BENCHMARKS "zk", 5-10 s of wall time at load 10 on 2 cores) and an audit window longer than a peer is
# down here. Watchers open an audit 0.4 window after the submissions close (4/5 into the opening half), and the
# peer must answer before the window ends: 0.6 window must hold a kill -9 and restart (40-60 s to serve again under
# load) and a proof rebuilt from the journal (~40 s), or the 30 s cut. Shorter windows slashed honest peers: 6 s
# rounds with 20 s / 30 s windows, 7 of 30 contributions; 10 s rounds with 30 s / 120 s, a restart that answered
# too late. The stake covers the collateral of every contribution in flight: (10 + 30 + 180) / 10 rounds.
CHAIN_ROUND_S, SUBMIT_WINDOW_S, AUDIT_WINDOW_S, AUDITS, STAKE = 10, 30, 180, 1, 400
DRAIN_DEADLINE_S = 180  # after the last round's audit window: claims still missing then are reported
ESCROW_EVENTS = ("Contributed", "RoundFinalized", "Claimed", "AuditOpened", "AuditAnswered", "Slashed")


class Member:
    """One peer slot: restarted in place after a kill; events of every incarnation, with wall-clock times."""

    def __init__(self, host: Host, name: str, args: list[str], log_dir: Path) -> None:
        self.host, self.name, self.args, self.log_dir = host, name, args, log_dir
        self.events: list[dict] = []
        self.incarnation = 0
        self.up_since: list[tuple[float, float | None]] = []  # (start, end) of each incarnation
        self.child = None
        self.log = self.event_log = None

    def start(self) -> None:
        self.incarnation += 1
        self.log = open(self.log_dir / f"{self.name}.{self.incarnation}.log", "w")  # noqa: SIM115
        # its JSON events, one a line, with our wall-clock time: what the logs miss (e.g. the settler's steps)
        self.event_log = open(self.log_dir / f"{self.name}.{self.incarnation}.events", "w", buffering=1)  # noqa: SIM115
        gen, event_log = self.incarnation, self.event_log

        def on_line(line: str) -> None:
            if line.startswith("{"):
                try:
                    e = json.loads(line)
                except ValueError:
                    return
                e["_t"], e["_gen"] = time.time(), gen
                self.events.append(e)
                with contextlib.suppress(ValueError):  # closed: the incarnation is over
                    event_log.write(json.dumps(e) + "\n")

        self.child = self.host.run([sys.executable, "-m", "swarm.peer", *self.args, "--events"], name=self.name,
                                   env=ENV, on_line=on_line, stderr=self.log)  # fmt: skip
        self.up_since.append((time.time(), None))

    def kill(self) -> None:
        os.killpg(self.child.pid, signal.SIGKILL)  # the peer and everything in its group (DHT, p2pd)
        self.child.stop()
        self.up_since[-1] = (self.up_since[-1][0], time.time())
        self.log.close()
        self.event_log.close()

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()
            if self.up_since and self.up_since[-1][1] is None:
                self.up_since[-1] = (self.up_since[-1][0], time.time())
        if self.log is not None:
            self.log.close()
            self.event_log.close()

    def came_back(self, gen: int) -> bool:
        want = "step" if "trainer" in self.args else "round"
        return any(
            e["_gen"] == gen and e["kind"] == want and e.get("group_size", 2) >= 2 for e in self.events
        )


@dataclass
class Ledger:
    """One stage peer's settlement as the escrow's events tell it (keys: (round, stage))."""

    contributed: set = field(default_factory=set)
    claimed: dict = field(default_factory=dict)  # -> amount
    slashed: set = field(default_factory=set)
    audits: set = field(default_factory=set)  # (round, stage, j) opened against it
    answered: set = field(default_factory=set)
    finalized_unclaimed: list = field(default_factory=list)  # audit window over, round finalized, not claimed
    unfinalized: list = field(default_factory=list)  # audit window over, round never finalized, not claimed
    in_windows: list = field(default_factory=list)  # audit window not over yet: not claimable yet

    @property
    def unsettled(self) -> list:
        return self.finalized_unclaimed + self.unfinalized


@dataclass
class SoakChain:
    """--chain: the dev chain, the demo deployment, and each stage peer's key file and data folder (start_chain)."""

    chain: Any  # swarm.chain.devchain.DevChain
    deployment: Any  # swarm.chain.deploy.DemoDeployment
    rpc_url: str  # where the lab's hosts reach the chain
    prover_key_dir: Path
    run_dir: Path
    names: list[str]
    key_files: dict[str, Path]

    def address(self, name: str) -> str:
        return self.chain.accounts[self.names.index(name) + 1].address.lower()

    def bootstrap_args(self) -> list[str]:
        d = self.deployment
        return ["--chain-rpc", self.rpc_url, "--escrow", d.escrow, "--chain-experiment", str(d.experiment_id)]

    def peer_args(self, name: str) -> list[str]:
        """A paid stage peer's flags: the same key file and --data-dir (its journal) in every incarnation."""
        return ["--chain-rpc", self.rpc_url, "--escrow", self.deployment.escrow, "--wallet-key-file",
                str(self.key_files[name]), "--data-dir", str(self.run_dir / "data" / name), "--prover-backend",
                "groth16py", "--prover-key-dir", str(self.prover_key_dir)]  # fmt: skip

    def client(self):
        from swarm.chain.client import ChainClient

        return ChainClient(self.chain.rpc_url, escrow=self.deployment.escrow)

    def state(self):
        return self.client().experiment(self.deployment.experiment_id)

    def reconcile(self) -> tuple[dict[str, Ledger], int]:
        """Every stage peer's Ledger from the escrow's events, and the chain's time they were read at."""
        client = self.client()
        now, state = client.block_timestamp(), client.experiment(self.deployment.experiment_id)
        where = {"experimentId": self.deployment.experiment_id}
        ev = {n: client.events(n, where=where) for n in ESCROW_EVENTS}
        finalized = {int(e["round"]) for e in ev["RoundFinalized"]}
        ledgers = {}
        for name in self.names:
            me = self.address(name)

            def mine(n: str, me: str = me) -> list[dict]:
                return [e for e in ev[n] if e["peer"].lower() == me]

            led = Ledger(
                contributed={(int(e["round"]), int(e["stage"])) for e in mine("Contributed")},
                claimed={(int(e["round"]), int(e["stage"])): int(e["amount"]) for e in mine("Claimed")},
                slashed={(int(e["round"]), int(e["stage"])) for e in mine("Slashed")},
                audits={(int(e["round"]), int(e["stage"]), int(e["j"])) for e in mine("AuditOpened")},
                answered={(int(e["round"]), int(e["stage"]), int(e["j"])) for e in mine("AuditAnswered")},
            )  # fmt: skip
            for key in sorted(led.contributed - set(led.claimed) - led.slashed):
                if state.audit_end(key[0]) > now:
                    led.in_windows.append(key)
                elif key[0] in finalized:
                    led.finalized_unclaimed.append(key)
                else:
                    led.unfinalized.append(key)
            ledgers[name] = led
        return ledgers, now

    def drain(self, stop_round: int) -> tuple[dict[str, Ledger], int]:
        """Wait until the audit windows of every round up to `stop_round` + 1 are over and every contribution whose
        window is over was claimed (or slashed); DRAIN_DEADLINE_S after that window at most."""
        state = self.state()
        last_end = state.audit_end(stop_round + 1)
        deadline = time.monotonic() + max(0, last_end - time.time()) + DRAIN_DEADLINE_S
        while True:
            ledgers, now = self.reconcile()
            settled = not any(led.unsettled or led.in_windows for led in ledgers.values())
            if (now >= last_end and settled) or time.monotonic() > deadline:
                return ledgers, now
            time.sleep(3)


def start_chain(stack: ExitStack, lab: Lab, run_dir: Path, names: list[str]) -> SoakChain:
    """anvil in this machine's namespace, listening on the lab's gateway too (stopped by `stack`, on every path); the
    demo escrow; one 0600 key file per stage peer (account 0 is the researcher's)."""
    from swarm.apps.demo.economy import ensure_circuit_keys, stage_sizes
    from swarm.chain.deploy import TOKEN, DemoConfig, deploy_demo
    from swarm.chain.devchain import DevChain
    from swarm.chain.wallet import create_key_file

    gateway = lab.add_gateway()
    prover_key_dir, verifier = ensure_circuit_keys("groth16py")
    # a block a second, as an L2 makes them
    chain = stack.enter_context(
        DevChain(accounts=len(names) + 1, extra_args=["--block-time", "1", "--host", gateway])
    )
    config = DemoConfig(stage_params=stage_sizes("digits", 1), round_duration=CHAIN_ROUND_S,
                        submit_window=SUBMIT_WINDOW_S, audit_window=AUDIT_WINDOW_S, audits_per_peer=AUDITS,
                        stake=STAKE * TOKEN)  # fmt: skip
    deployment = deploy_demo(chain, config, verifier_artifact=verifier)
    keys = run_dir / "keys"
    keys.mkdir(mode=0o700)
    key_files = {name: keys / f"{name}.key" for name in names}
    for i, name in enumerate(names):
        create_key_file(key_files[name], chain.accounts[i + 1].private_key)
    return SoakChain(
        chain, deployment, f"http://{gateway}:{chain.port}", prover_key_dir, run_dir, names, key_files
    )


def wait_ready(members: list[Member], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for m in members:
        while not any(e["kind"] == "ready" for e in m.events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{m.name} not ready after {timeout:.0f} s (logs in {m.log_dir})")
            time.sleep(0.2)


def soak(duration: float, seed: int, log_dir: Path, chain: bool = False, result: dict | None = None) -> dict:
    """Run the soak; its figures go into `result` (also on Ctrl-C: what is left behind is filled in on every path)."""
    rng = random.Random(seed)
    started: list[int] = []  # pids of every process we started: the peers' incarnations, anvil
    result = {} if result is None else result
    try:
        with ExitStack() as stack:
            lab = stack.enter_context(Lab())
            stack.callback(lambda: started.extend(c.pid for c in lab.children if c.pid))
            economy = start_chain(stack, lab, log_dir, ["s1", "s2", "s3"]) if chain else None
            if economy is not None:
                started.append(economy.chain.pid)
                d = economy.deployment
                print(f"dev chain at {economy.rpc_url} (the lab's gateway), escrow {d.escrow}, experiment "
                      f"{d.experiment_id}, verifier {d.verifier_name}", flush=True)  # fmt: skip
            result.update(_soak(lab, economy, duration, rng, log_dir))
    finally:
        # ours only: another lab (e.g. the test suite's) may be running
        result["namespaces_left"] = list_namespaces(f"{NS_PREFIX}{os.getpid()}-")
        result["processes_left"] = [pid for pid in started if _alive(pid)]
    return result


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _soak(lab: Lab, economy: SoakChain | None, duration: float, rng: random.Random, log_dir: Path) -> dict:
    hosts = {n: lab.add_public(n) for n in ("boot", "s1", "s2")}
    hosts.update({n: lab.add_home(n) for n in ("s3", "tr")})
    paid, round_s = (economy.bootstrap_args(), CHAIN_ROUND_S) if economy else ([], ROUND_S)
    boot = Member(hosts["boot"], "boot", ["--role", "bootstrap", "--host", hosts["boot"].ip, "--port", "31337",
                                          "--n-stages", "1", "--round-duration", str(round_s), *paid], log_dir)  # fmt: skip
    boot.start()
    wait_ready([boot], 120)
    ready = next(e for e in boot.events if e["kind"] == "ready")
    maddr = next(a for a in ready["maddrs"] if hosts["boot"].ip in a)
    join = ["--join", "--initial-peers", maddr]
    pay = economy.peer_args if economy else lambda name: []
    stages = [
        Member(hosts[n], n, [*join, "--stage", "0", "--host", hosts[n].ip, *pay(n)], log_dir)
        for n in ("s1", "s2", "s3")
    ]
    trainer = Member(hosts["tr"], "trainer", [*join, "--role", "trainer", "--host", hosts["tr"].ip,
                                              "--batch-size", "16"], log_dir)  # fmt: skip
    members = [*stages, trainer]
    for m in members:
        m.start()
    wait_ready(members, 300)
    paid_note = ", each stage peer paid on the dev chain" if economy else ""
    print(f"swarm up: bootstrap, 3 stage peers (s3 at home, relayed), a trainer at home{paid_note}; soaking "
          f"{duration:.0f} s", flush=True)  # fmt: skip
    t_start = time.time()
    kills: list[tuple[Member, int]] = []
    cut_done, next_kill = False, time.monotonic() + rng.uniform(15, 25)
    end = time.monotonic() + duration
    while time.monotonic() < end:
        now = time.monotonic()
        if now >= next_kill:
            victim = rng.choice(members)
            print(f"  +{time.time() - t_start:5.0f} s kill -9 {victim.name}; restarting it", flush=True)
            victim.kill()
            victim.start()
            kills.append((victim, victim.incarnation))
            next_kill = now + rng.uniform(15, 25)
        if not cut_done and time.time() - t_start > duration / 3:
            host = rng.choice([hosts[n] for n in ("s1", "s2", "s3", "tr")])
            print(f"  +{time.time() - t_start:5.0f} s cutting {host.name} off for 30 s", flush=True)
            host.link_down()
            time.sleep(30)  # the scenario: 30 s without a link (kills wait meanwhile)
            host.link_up()
            print(f"  +{time.time() - t_start:5.0f} s {host.name} back", flush=True)
            cut_done = True
        time.sleep(0.5)
    grace_end = time.monotonic() + 60  # let the last restarted peers come back before counting
    while time.monotonic() < grace_end and not all(m.came_back(g) for m, g in kills):
        time.sleep(1)
    t_end = time.time()
    result = summarize(stages, trainer, kills, t_start, t_end, round_s)
    if economy is not None:  # the drain: no new updates, nothing killed, until every contribution is settled
        trainer.stop()
        stop_round = economy.state().round_at(int(time.time()))
        print(f"  +{time.time() - t_start:5.0f} s trainer stopped (round {stop_round}); draining: nothing is killed "
              "until the last audit windows are over and the claims are in", flush=True)  # fmt: skip
        result["ledgers"], result["chain_now"] = economy.drain(stop_round)
        result["drain_s"] = time.time() - t_end
        result["peer_said"] = {m.name: _settled(m) for m in stages}
        result["carried"] = {m.name: _claimed_after_restart(m) for m in stages}
    for m in [*members, boot]:
        m.stop()
    return result


def _claimed_after_restart(m: Member) -> int:
    """Rounds a later incarnation claimed than the one that contributed them: carried across kill -9 by the journal."""
    contributed, claimed = {}, {}
    for e in m.events:
        if e["kind"] == "settled" and e["action"] in ("contributed", "claimed"):
            (contributed if e["action"] == "contributed" else claimed)[(e["round"], e["stage"])] = e["_gen"]
    return sum(1 for key, gen in claimed.items() if key in contributed and gen > contributed[key])


def _settled(m: Member) -> dict[str, int]:
    """What the stage peer's settler said it did, over all its incarnations (Settled events by action)."""
    out: dict[str, int] = {}
    for e in m.events:
        if e["kind"] == "settled":
            out[e["action"]] = out.get(e["action"], 0) + 1
    return out


def summarize(stages: list[Member], trainer: Member, kills, t0: float, t1: float, round_s: float) -> dict:
    averaged = possible = 0
    for m in stages:
        others = [o for o in stages if o is not m]
        rounds = [e for e in m.events if e["kind"] == "round" and t0 <= e["_t"] <= t1]
        averaged += sum(1 for e in rounds if e["group_size"] >= 2)
        # rounds that ended while m and at least one other stage peer were up
        for k in range(int(t0 // round_s) + 1, int(t1 // round_s)):
            t = k * round_s
            if _up(m, t) and any(_up(o, t) for o in others):
                possible += 1
    steps = [e for e in trainer.events if e["kind"] == "step" and t0 <= e["_t"] <= t1]
    bins: dict[int, int] = {}
    for e in steps:
        b = int((e["_t"] - t0) // 30)
        bins[b] = bins.get(b, 0) + 16
    losses = [e["loss"] for e in steps]
    return {
        "averaged": averaged, "possible": possible, "rate_bins": [bins.get(b, 0) / 30 for b in range(int((t1 - t0) // 30) + 1)],
        "loss_start": sum(losses[:20]) / max(len(losses[:20]), 1), "loss_end": sum(losses[-20:]) / max(len(losses[-20:]), 1),
        "kills": len(kills), "survived": sum(1 for m, g in kills if m.came_back(g)),
        "killed_again": sum(1 for m, g in kills if not m.came_back(g) and g < m.incarnation),
        "killed": [f"{m.name}#{g}{'' if m.came_back(g) else _why_not(m, g)}" for m, g in kills],
    }  # fmt: skip


def _why_not(m: Member, gen: int) -> str:
    start, end = m.up_since[gen - 1]
    if gen < m.incarnation:
        return f" (killed again {end - start:.0f} s after its restart, before it could contribute)"
    return " (did not come back)"


def _up(m: Member, t: float) -> bool:
    """Whether an incarnation of m was up (and past its join, ~30 s) at wall time t."""
    return any(start + 30 <= t and (end is None or t <= end) for start, end in m.up_since)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2 minutes instead of 10")
    p.add_argument("--duration", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chain", action="store_true", help="paid stage peers on a dev chain, reconciled with it")
    args = p.parse_args()
    reason = unavailable_reason()
    if reason:
        print(f"soak: {reason}\nSUMMARY skipped: no emulated hosts here")
        return 0
    duration = args.duration or (120.0 if args.quick else 600.0)
    log_dir = Path(f"/tmp/soak-{os.getpid()}")
    log_dir.mkdir()
    ENV["SWARM_STATUS_DIR"] = str(log_dir / "status")  # the peers' status files: in the run's folder
    signal.signal(signal.SIGINT, signal.default_int_handler)
    raise_on_termination_signals()  # SIGTERM, SIGHUP: cleaned up as on Ctrl-C
    r: dict = {}
    try:
        soak(duration, args.seed, log_dir, args.chain, r)
    except KeyboardInterrupt as exc:
        what = "interrupted" if not isinstance(exc, ShutdownRequested) else str(exc)
        print(f"soak: {what}; left behind: {len(r.get('namespaces_left', []))} namespaces, "
              f"{len(r.get('processes_left', []))} processes; logs in {log_dir}")  # fmt: skip
        return 130
    print(f"\nrounds averaged / possible (3 stage peers): {r['averaged']} / {r['possible']}")
    print("trainer samples/s per 30 s: " + " ".join(f"{x:.0f}" for x in r["rate_bins"]))
    print(f"trainer loss: first 20 steps {r['loss_start']:.3f} -> last 20 {r['loss_end']:.3f}")
    print(f"kills -9: {r['kills']}, came back and contributed: {r['survived']}, killed again before they could: "
          f"{r['killed_again']} ({', '.join(r['killed'])})")  # fmt: skip
    chain = print_ledgers(r) if "ledgers" in r else ""
    print(f"left behind: {len(r['namespaces_left'])} namespaces, {len(r['processes_left'])} processes; logs in "
          f"{log_dir}")  # fmt: skip
    ratio = r["averaged"] / max(r["possible"], 1)
    print(f"SUMMARY {duration:.0f} s soak: rounds averaged/possible {r['averaged']}/{r['possible']} ({ratio:.0%}), "
          f"restarts survived {r['survived']}/{r['kills'] - r['killed_again']} (+{r['killed_again']} killed again first), loss {r['loss_start']:.2f}->{r['loss_end']:.2f}, "
          f"{chain}left behind: {len(r['namespaces_left'])} namespaces, {len(r['processes_left'])} processes")  # fmt: skip
    return 0


def print_ledgers(r: dict) -> str:
    """The on-chain reconciliation, one line per stage peer; returns the summary's chain part."""
    from swarm.chain.deploy import TOKEN

    ledgers: dict[str, Ledger] = r["ledgers"]
    print(f"\non-chain, from the escrow's events ({r['drain_s']:.0f} s of drain after the churn):")
    print(f"{'peer':5} {'contributed':>11} {'claimed':>7} {'finalized, unclaimed':>20} {'never finalized':>15} "
          f"{'in windows':>10} {'slashed':>7} {'audits answered':>15} {'earned SWT':>10} {'claimed after a restart':>23}"
          "   the peer's settler said")  # fmt: skip
    for name, led in ledgers.items():
        said = ", ".join(f"{k} {v}" for k, v in sorted(r["peer_said"].get(name, {}).items())) or "nothing"
        print(f"{name:5} {len(led.contributed):>11} {len(led.claimed):>7} {len(led.finalized_unclaimed):>20} "
              f"{len(led.unfinalized):>15} {len(led.in_windows):>10} {len(led.slashed):>7} "
              f"{f'{len(led.answered)}/{len(led.audits)}':>15} {sum(led.claimed.values()) / TOKEN:>10.2f} "
              f"{r['carried'].get(name, 0):>23}   {said}")  # fmt: skip
        for what, keys in (("finalized, never claimed", led.finalized_unclaimed),
                           ("never finalized", led.unfinalized), ("slashed", sorted(led.slashed))):  # fmt: skip
            if keys:
                print(f"      {what}: rounds {', '.join(str(k[0]) for k in keys)}")
    total = {k: sum(len(getattr(led, k)) for led in ledgers.values())
             for k in ("contributed", "claimed", "finalized_unclaimed", "unfinalized", "in_windows", "slashed")}  # fmt: skip
    earned = sum(sum(led.claimed.values()) for led in ledgers.values()) / TOKEN
    return (f"chain: {total['contributed']} contributions, {total['claimed']} claimed, {total['finalized_unclaimed']} "
            f"finalized never claimed, {total['unfinalized']} never finalized, {total['in_windows']} still in windows, "
            f"{total['slashed']} slashed, {earned:.0f} SWT earned, {sum(r['carried'].values())} claimed after a restart; ")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
