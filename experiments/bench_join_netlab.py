"""Time to first contribution on emulated hosts (experiments/netlab.py; needs root): public and NATed peers.

Same run, one after another, each a fresh `python -m swarm.peer` process in its own network namespace, joining
a swarm of a bootstrap and one stage peer on the public segment (digits, 1 stage, 6 s rounds):

- baseline: a bare DHT join (`create_dht` with the bootstrap as initial peer) from a public host, and from a home
  host behind NAT;
- a public stage peer: process start -> its first averaging round with the existing stage peer;
- a NATed trainer (`--join --role trainer`): process start -> its first training step through the stage;
- a NATed stage peer: process start -> its first averaging round, served through the bootstrap's relay (it is
  found unreachable at join and restarts its DHT with a relay reservation first).

    sudo .venv/bin/python experiments/bench_join_netlab.py [--quick] [--repeat N]

Last line: a one-line summary with the ratios to the bare DHT join of the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiments.netlab import Host, Lab, list_namespaces, unavailable_reason

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
ROUND_S = 6.0
BARE_JOIN = (
    "import sys, time; t = time.monotonic(); from swarm.network.dht import create_dht; "
    "d = create_dht(sys.argv[2:], host=sys.argv[1]); print(time.monotonic() - t, flush=True); d.shutdown()"
)


class Peer:
    """A swarm.peer process on a lab host; events with the time since its start."""

    def __init__(self, host: Host, name: str, args: list[str], log_dir: Path) -> None:
        self.events: list[tuple[float, dict]] = []
        self.t0 = time.monotonic()
        self.log = open(log_dir / f"{name}.log", "w")  # noqa: SIM115 -- closed in stop()
        self.child = host.run([sys.executable, "-m", "swarm.peer", *args, "--events"], name=name, env=ENV,
                              on_line=self._line, stderr=self.log)  # fmt: skip

    def _line(self, line: str) -> None:
        if line.startswith("{"):
            try:
                self.events.append((time.monotonic() - self.t0, json.loads(line)))
            except ValueError:
                pass

    def first(self, test, timeout: float, what: str) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, e in list(self.events):
                if test(e):
                    return t
            if not self.child.alive:
                break
            time.sleep(0.1)
        raise TimeoutError(f"no {what} within {timeout:.0f} s (log: {self.log.name})")

    def stop(self) -> None:
        self.child.stop()
        self.log.close()


def averaged(e: dict) -> bool:
    return e.get("kind") == "round" and e.get("group_size", 0) >= 2


def bare_join(host: Host, maddr: str) -> float:
    out = host.exec(sys.executable, "-c", BARE_JOIN, host.ip, maddr)
    return float(out.stdout.strip().splitlines()[-1])


def run(repeat: int, log_dir: Path) -> dict[str, list[float]]:
    figures: dict[str, list[float]] = {k: [] for k in ("bare public", "bare NAT", "public stage: ready",
                                                       "public stage: 1st round", "NAT trainer: 1st step",
                                                       "NAT stage (relay): ready", "NAT stage (relay): 1st round")}  # fmt: skip
    with Lab() as lab:
        boot_host, desk_host = lab.add_public("boot"), lab.add_public("desk")
        pub, home = lab.add_public("pub"), lab.add_home("home")
        boot = Peer(boot_host, "boot", ["--role", "bootstrap", "--host", boot_host.ip, "--port", "31337",
                                        "--n-stages", "1", "--round-duration", str(ROUND_S)], log_dir)  # fmt: skip
        boot.first(lambda e: e.get("kind") == "ready", 120, "bootstrap ready")
        maddr = next(
            a for a in next(e for _, e in boot.events if e["kind"] == "ready")["maddrs"] if boot_host.ip in a
        )
        join = ["--join", "--initial-peers", maddr]
        desk = Peer(desk_host, "desk", [*join, "--stage", "0", "--host", desk_host.ip], log_dir)
        desk.first(lambda e: e.get("kind") == "ready", 180, "the desk stage peer ready")
        for i in range(repeat):
            figures["bare public"].append(bare_join(pub, maddr))
            figures["bare NAT"].append(bare_join(home, maddr))
            p = Peer(pub, f"pub{i}", [*join, "--stage", "0", "--host", pub.ip], log_dir)
            figures["public stage: ready"].append(p.first(lambda e: e.get("kind") == "ready", 180, "ready"))
            figures["public stage: 1st round"].append(p.first(averaged, 180, "an averaged round"))
            p.stop()
            t = Peer(home, f"trainer{i}", [*join, "--role", "trainer", "--host", home.ip, "--batch-size", "16"],
                     log_dir)  # fmt: skip
            figures["NAT trainer: 1st step"].append(t.first(lambda e: e.get("kind") == "step", 180, "a step"))
            t.stop()
            n = Peer(home, f"nat{i}", [*join, "--stage", "0", "--host", home.ip], log_dir)
            figures["NAT stage (relay): ready"].append(
                n.first(lambda e: e.get("kind") == "ready", 240, "ready")
            )
            figures["NAT stage (relay): 1st round"].append(n.first(averaged, 240, "an averaged round"))
            n.stop()
            for name, values in figures.items():
                print(f"  run {i + 1}: {name:30s} {values[-1]:6.1f} s", flush=True)
        desk.stop()
        boot.stop()
    return figures


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one run of each (default: 3)")
    p.add_argument("--repeat", type=int, default=None)
    args = p.parse_args()
    reason = unavailable_reason()
    if reason:
        print(f"bench_join_netlab: {reason}\nSUMMARY skipped: no emulated hosts here")
        return 0
    repeat = args.repeat or (1 if args.quick else 3)
    log_dir = Path(
        subprocess.check_output(["mktemp", "-d", "/tmp/bench-join-netlab.XXXX"], text=True).strip()
    )
    started = time.monotonic()
    figures = run(repeat, log_dir)
    base = statistics.median(figures["bare public"])
    print(f"\nmedian of {repeat} (time from process start; logs in {log_dir}):")
    for name, values in figures.items():
        med = statistics.median(values)
        print(f"  {name:30s} {med:6.1f} s  = {med / base:4.2f}x bare public DHT join")
    left = list_namespaces()
    print(f"namespaces left: {len(left)}; wall {time.monotonic() - started:.0f} s")
    m = {k: statistics.median(v) / base for k, v in figures.items()}
    print(f"SUMMARY bare join {base:.1f} s; to 1st contribution: public stage {m['public stage: 1st round']:.1f}x, "
          f"NAT trainer {m['NAT trainer: 1st step']:.1f}x, NAT stage via relay {m['NAT stage (relay): 1st round']:.1f}x")  # fmt: skip
    return 0 if not left else 1


if __name__ == "__main__":
    sys.exit(main())
