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

    sudo .venv/bin/python experiments/soak.py [--quick]      # 10 minutes; --quick: 2 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiments.netlab import Host, Lab, list_namespaces, unavailable_reason

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
ROUND_S = 6.0


class Member:
    """One peer slot: restarted in place after a kill; events of every incarnation, with wall-clock times."""

    def __init__(self, host: Host, name: str, args: list[str], log_dir: Path) -> None:
        self.host, self.name, self.args, self.log_dir = host, name, args, log_dir
        self.events: list[dict] = []
        self.incarnation = 0
        self.up_since: list[tuple[float, float | None]] = []  # (start, end) of each incarnation
        self.child = None
        self.log = None

    def start(self) -> None:
        self.incarnation += 1
        self.log = open(self.log_dir / f"{self.name}.{self.incarnation}.log", "w")  # noqa: SIM115
        gen = self.incarnation

        def on_line(line: str) -> None:
            if line.startswith("{"):
                try:
                    e = json.loads(line)
                except ValueError:
                    return
                e["_t"], e["_gen"] = time.time(), gen
                self.events.append(e)

        self.child = self.host.run([sys.executable, "-m", "swarm.peer", *self.args, "--events"], name=self.name,
                                   env=ENV, on_line=on_line, stderr=self.log)  # fmt: skip
        self.up_since.append((time.time(), None))

    def kill(self) -> None:
        os.killpg(self.child.pid, signal.SIGKILL)  # the peer and everything in its group (DHT, p2pd)
        self.child.stop()
        self.up_since[-1] = (self.up_since[-1][0], time.time())
        self.log.close()

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()
            if self.up_since and self.up_since[-1][1] is None:
                self.up_since[-1] = (self.up_since[-1][0], time.time())
        if self.log is not None:
            self.log.close()

    def came_back(self, gen: int) -> bool:
        want = "step" if "trainer" in self.args else "round"
        return any(
            e["_gen"] == gen and e["kind"] == want and e.get("group_size", 2) >= 2 for e in self.events
        )


def wait_ready(members: list[Member], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for m in members:
        while not any(e["kind"] == "ready" for e in m.events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{m.name} not ready after {timeout:.0f} s (logs in {m.log_dir})")
            time.sleep(0.2)


def soak(duration: float, seed: int, log_dir: Path) -> dict:
    rng = random.Random(seed)
    with Lab() as lab:
        hosts = {n: lab.add_public(n) for n in ("boot", "s1", "s2")}
        hosts.update({n: lab.add_home(n) for n in ("s3", "tr")})
        boot = Member(hosts["boot"], "boot", ["--role", "bootstrap", "--host", hosts["boot"].ip, "--port", "31337",
                                              "--n-stages", "1", "--round-duration", str(ROUND_S)], log_dir)  # fmt: skip
        boot.start()
        wait_ready([boot], 120)
        ready = next(e for e in boot.events if e["kind"] == "ready")
        maddr = next(a for a in ready["maddrs"] if hosts["boot"].ip in a)
        join = ["--join", "--initial-peers", maddr]
        stages = [
            Member(hosts[n], n, [*join, "--stage", "0", "--host", hosts[n].ip], log_dir)
            for n in ("s1", "s2", "s3")
        ]
        trainer = Member(hosts["tr"], "trainer", [*join, "--role", "trainer", "--host", hosts["tr"].ip,
                                                  "--batch-size", "16"], log_dir)  # fmt: skip
        members = [*stages, trainer]
        for m in members:
            m.start()
        wait_ready(members, 300)
        print(f"swarm up: bootstrap, 3 stage peers (s3 at home, relayed), a trainer at home; soaking {duration:.0f} s",
              flush=True)  # fmt: skip
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
        result = summarize(stages, trainer, kills, t_start, t_end)
        for m in [*members, boot]:
            m.stop()
    result["namespaces_left"] = list_namespaces()
    return result


def summarize(stages: list[Member], trainer: Member, kills, t0: float, t1: float) -> dict:
    averaged = possible = 0
    for m in stages:
        others = [o for o in stages if o is not m]
        rounds = [e for e in m.events if e["kind"] == "round" and t0 <= e["_t"] <= t1]
        averaged += sum(1 for e in rounds if e["group_size"] >= 2)
        # rounds that ended while m and at least one other stage peer were up
        for k in range(int(t0 // ROUND_S) + 1, int(t1 // ROUND_S)):
            t = k * ROUND_S
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
    args = p.parse_args()
    reason = unavailable_reason()
    if reason:
        print(f"soak: {reason}\nSUMMARY skipped: no emulated hosts here")
        return 0
    duration = args.duration or (120.0 if args.quick else 600.0)
    log_dir = Path(f"/tmp/soak-{os.getpid()}")
    log_dir.mkdir()
    r = soak(duration, args.seed, log_dir)
    print(f"\nrounds averaged / possible (3 stage peers): {r['averaged']} / {r['possible']}")
    print("trainer samples/s per 30 s: " + " ".join(f"{x:.0f}" for x in r["rate_bins"]))
    print(f"trainer loss: first 20 steps {r['loss_start']:.3f} -> last 20 {r['loss_end']:.3f}")
    print(f"kills -9: {r['kills']}, came back and contributed: {r['survived']}, killed again before they could: "
          f"{r['killed_again']} ({', '.join(r['killed'])})")  # fmt: skip
    print(f"namespaces left: {len(r['namespaces_left'])}; logs in {log_dir}")
    ratio = r["averaged"] / max(r["possible"], 1)
    print(f"SUMMARY {duration:.0f} s soak: rounds averaged/possible {r['averaged']}/{r['possible']} ({ratio:.0%}), "
          f"restarts survived {r['survived']}/{r['kills'] - r['killed_again']} (+{r['killed_again']} killed again first), loss {r['loss_start']:.2f}->{r['loss_end']:.2f}, "
          f"left behind: {len(r['namespaces_left'])} namespaces")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
