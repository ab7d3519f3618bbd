"""What watching a swarm costs: swarm-experiment's monitor (DHT reader + dashboard) vs a stage peer of that swarm.

An 8-peer swarm on loopback (a bootstrap, 6 stage peers over 2 stages, a trainer; each a `python -m swarm.peer`
started the way swarm-demo starts them) and one monitor process with a browser-like client on its event stream.
Over the same window it measures, for the monitor and for one stage peer (each with all its descendants: DHT
process, p2pd, watchdog): CPU seconds per second, memory (PSS), and bytes through its p2pd (/proc/<pid>/io,
which is every DHT message; a stage peer's p2pd also carries its activations and averaging). The monitor's DHT
requests per second are its own count (one per record lookup). Usage: python experiments/bench_monitor.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil

from runtime.procs import ChildSet
from swarm.apps.demo import DemoConfig, DemoSwarm
from swarm.apps.events import Ready, Step


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def cpu_seconds(pid: int) -> float:
    total = 0.0
    for p in tree(pid):
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def pss(pid: int) -> int:
    total = 0
    for p in tree(pid):
        try:
            total += p.memory_full_info().pss
        except psutil.Error:
            pass
    return total


def p2pd_bytes(pid: int) -> int:
    total = 0
    for p in tree(pid):
        try:
            if p.name() == "p2pd":
                io = p.io_counters()
                total += io.read_chars + io.write_chars
        except psutil.Error:
            pass
    return total


def sample(pid: int) -> tuple[float, int]:
    return cpu_seconds(pid), p2pd_bytes(pid)


def follow_stream(url: str, stop: threading.Event) -> None:
    """A dashboard tab: reads the event stream as a browser would."""
    try:
        with urllib.request.urlopen(url + "api/stream", timeout=30) as r:
            while not stop.is_set() and r.readline():
                pass
    except OSError:
        pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a 20 s window instead of 60 s")
    ap.add_argument("--window", type=float, default=None, help="seconds measured")
    args = ap.parse_args()
    window = args.window or (20.0 if args.quick else 60.0)
    run_dir = Path(tempfile.mkdtemp(prefix="bench-monitor-"))
    cfg = DemoConfig(n_stages=2, stage_peers=6, trainers=1, round_duration=5.0, duration=3600)
    t0 = time.monotonic()
    with DemoSwarm(cfg, run_dir) as swarm, ChildSet() as extra:
        swarm.start_peer("bootstrap", ["--role", "bootstrap", "--n-stages", "2", "--round-duration", "5"])
        swarm.bootstrap_maddrs = swarm.wait_for("bootstrap", lambda e: isinstance(e, Ready)).maddrs
        for i in range(6):  # all at once, pinned alternately: starting 6 peers one by one takes minutes here
            swarm.start_peer(f"s{i}", [*swarm.join_args, "--stage", str(i % 2)])
        for i in range(6):
            swarm.wait_for(f"s{i}", lambda e: isinstance(e, Ready) and e.role == "stage", timeout=300)
        swarm.start_peer("trainer", [*swarm.join_args, "--role", "trainer"])
        swarm.wait_for("trainer", lambda e: isinstance(e, Step), timeout=300)  # measure a swarm that trains
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with open(run_dir / "monitor.log", "wb") as log:
            monitor = extra.start([sys.executable, "-m", "swarm.apps.experiment.monitor", "--experiment",
                                   swarm.experiment, "--initial-peers", *swarm.bootstrap_maddrs, "--port", str(port),
                                   "--poll-seconds", "2"], name="monitor", stderr=log)  # fmt: skip
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url + "api/state", timeout=3) as r:
                    if json.loads(r.read()).get("n_peers", 0) >= 6:
                        break
            except OSError:
                pass
            time.sleep(1)
        stop = threading.Event()
        threading.Thread(target=follow_stream, args=(url, stop), daemon=True).start()
        print(f"swarm of 8 peers + monitor up in {time.monotonic() - t0:.0f} s; measuring {window:.0f} s")
        stage_pid = swarm.child("s1").pid
        with urllib.request.urlopen(url + "api/state", timeout=5) as r:
            req0 = json.loads(r.read())["monitor"]["dht_requests"]
        m0, s0, w0 = sample(monitor.pid), sample(stage_pid), time.monotonic()
        time.sleep(window)
        m1, s1, w1 = sample(monitor.pid), sample(stage_pid), time.monotonic()
        mem_m, mem_s = pss(monitor.pid), pss(stage_pid)
        with urllib.request.urlopen(url + "api/state", timeout=5) as r:
            snap = json.loads(r.read())
        stop.set()
        dt = w1 - w0
        cpu_m, cpu_s = (m1[0] - m0[0]) / dt, (s1[0] - s0[0]) / dt
        net_m, net_s = (m1[1] - m0[1]) / dt, (s1[1] - s0[1]) / dt
        req_s = (snap["monitor"]["dht_requests"] - req0) / dt
    print(f"{'':<22}{'monitor':>14}{'stage peer':>14}{'ratio':>10}")
    print(f"{'CPU (cores)':<22}{cpu_m:>14.3f}{cpu_s:>14.3f}{cpu_m / max(cpu_s, 1e-9):>10.2f}")
    print(f"{'memory PSS (MiB)':<22}{mem_m / 2**20:>14.0f}{mem_s / 2**20:>14.0f}{mem_m / max(mem_s, 1):>10.2f}")
    print(f"{'p2pd bytes/s':<22}{net_m:>14.0f}{net_s:>14.0f}{net_m / max(net_s, 1e-9):>10.3f}")
    print(f"{'DHT requests/s':<22}{req_s:>14.2f}{'–':>14}")
    print(f"peers seen by the monitor: {snap['n_peers']} stage peers, round {snap['round']}")
    print(f"summary: monitor/stage-peer cost on an 8-peer swarm: CPU {cpu_m / max(cpu_s, 1e-9):.2f}x, memory "
          f"{mem_m / max(mem_s, 1):.2f}x, p2pd traffic {net_m / max(net_s, 1e-9):.3f}x, {req_s:.1f} DHT requests/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
