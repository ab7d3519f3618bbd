"""Emulated hosts for swarm tests and hand runs: Linux network namespaces joined by veth links (needs root and `ip`).

Topology: one "public" segment (a bridge in a switch namespace, 10.77.0.0/24) where bootstrap and server peers
live, and "home" hosts, each behind its own NAT router (iptables MASQUERADE; inbound connections are dropped, as
a home router does without port forwarding). Every home LAN is 192.168.1.0/24, as at home: two NATed hosts have
the same private address and no route to each other. Nothing touches the machine's own network namespace: veth
pairs are created directly inside the lab's namespaces, so traffic stays inside the namespaces the lab made. The
one exception is asked for: `Lab.add_gateway()` plugs the machine itself into the public segment (at 10.77.0.1),
for a service the lab's hosts must reach and the owner runs outside them (the soak's dev chain); the link goes
with the switch namespace.

Clean-up on every path: `Lab.close()` (and leaving its `with` block) kills every process left in the lab's
namespaces and deletes them; a reaper process started with the lab does the same if the owner dies without
closing it (kill -9 included); and a new lab first sweeps namespaces left by owners that are gone.

Hand run (prints the hosts, starts a bootstrap on the public segment and a NATed trainer, until Ctrl-C):
    sudo .venv/bin/python experiments/netlab.py demo
    sudo .venv/bin/python experiments/netlab.py sweep      # delete namespaces of dead labs
    sudo .venv/bin/python experiments/netlab.py list
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: the repository's packages (runtime, swarm) are importable
    sys.path.insert(0, str(ROOT))

from runtime.procs import ChildProcess

logger = logging.getLogger("netlab")

NS_PREFIX = "swl"  # every namespace of every lab: swl<owner pid>-<lab>-<host>
PUBLIC_NET = "10.77.0"
HOME_NET = "192.168.1"
_lab_numbers = itertools.count()


class NetlabUnavailable(RuntimeError):
    """This machine cannot build a lab (not root, no `ip`, no iptables); the message says what is missing."""


def unavailable_reason(nat: bool = True) -> str | None:
    """Why a lab cannot be built here, or None when it can (tests skip with this reason)."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs as root); run the netlab tests as root"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is missing: apt-get install -y iproute2"
    if nat and shutil.which("iptables") is None:
        return "iptables is missing (NAT routers): apt-get install -y iptables (./dev.sh test installs it as root)"
    return None


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise NetlabUnavailable(f"`{' '.join(argv)}` failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def list_namespaces(prefix: str = NS_PREFIX) -> list[str]:
    """Names of the network namespaces that start with `prefix` (all labs' by default)."""
    out = _run("ip", "netns", "list", check=False).stdout
    return [
        line.split()[0] for line in out.splitlines() if line.split() and line.split()[0].startswith(prefix)
    ]


def namespace_pids(ns: str) -> list[int]:
    out = _run("ip", "netns", "pids", ns, check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def destroy_namespaces(names: Sequence[str]) -> None:
    """Kill every process inside the namespaces (SIGKILL; they are a lab's, nobody else's) and delete them."""
    for _ in range(50):
        pids = [p for ns in names for p in namespace_pids(ns)]
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    for ns in names:  # deleting a namespace deletes its veth ends, and their peers with them
        _run("ip", "netns", "del", ns, check=False)


def _owner_alive(ns: str) -> bool:
    owner = ns[len(NS_PREFIX) :].split("-", 1)[0]
    if not owner.isdigit():
        return True  # not ours to judge
    try:
        os.kill(int(owner), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale() -> list[str]:
    """Delete the namespaces of labs whose owner process is gone; returns their names."""
    stale = [ns for ns in list_namespaces() if not _owner_alive(ns)]
    destroy_namespaces(stale)
    return stale


@dataclass
class Host:
    """One emulated machine: a network namespace with one interface `eth0` at `ip`."""

    lab: Lab
    name: str
    ns: str
    ip: str
    gateway: str | None = None  # default route (home hosts: their router)
    router: Host | None = None  # home hosts: the NAT router in front of them
    public_ip: str = ""  # the address the public segment sees this host's connections come from

    def run(
        self, argv: Sequence[str], *, name: str | None = None, env: Mapping[str, str] | None = None, **kwargs
    ) -> ChildProcess:
        """Start `argv` inside this host's namespace (own process group, dies with us, stopped with the lab)."""
        child = ChildProcess(
            ["ip", "netns", "exec", self.ns, *argv],
            name=name or f"{self.name}:{Path(argv[0]).name}",
            env=dict(os.environ if env is None else env),
            **kwargs,
        )
        self.lab.children.append(child)
        return child.start()

    def exec(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a short command inside the namespace and wait for it."""
        return _run("ip", "netns", "exec", self.ns, *argv, check=check)

    def link_down(self) -> None:
        """Pull the cable / lose Wi-Fi: the host's only interface goes down (its routes go with it)."""
        _run("ip", "-n", self.ns, "link", "set", "eth0", "down")

    def link_up(self) -> None:
        """Plug it back in: interface up, default route restored."""
        _run("ip", "-n", self.ns, "link", "set", "eth0", "up")
        if self.gateway:
            _run("ip", "-n", self.ns, "route", "replace", "default", "via", self.gateway)

    def can_connect(self, ip: str, port: int, timeout: float = 2.0) -> bool:
        """Whether a TCP connection from this host to ip:port succeeds (ping is not installed; TCP is what we use)."""
        code = (
            f"import socket,sys\ntry:\n socket.create_connection(({ip!r},{port}),{timeout}).close()\n"
            "except OSError:\n sys.exit(1)"
        )
        return self.exec(sys.executable, "-c", code, check=False).returncode == 0


@dataclass
class Lab:
    """A set of emulated hosts; `with Lab() as lab:` removes every namespace, link and process on the way out."""

    hosts: dict[str, Host] = field(default_factory=dict)
    children: list[ChildProcess] = field(default_factory=list)

    def __post_init__(self) -> None:
        reason = unavailable_reason(nat=True)
        if reason:
            raise NetlabUnavailable(reason)
        self.prefix = f"{NS_PREFIX}{os.getpid()}-{next(_lab_numbers)}-"
        self._namespaces: list[str] = []
        self._ports = 0
        self._gateway: str | None = None  # the veth end in this machine's namespace (add_gateway)
        self._reaper: subprocess.Popen | None = None
        self._closed = False

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> Self:
        swept = sweep_stale()
        if swept:
            logger.warning("deleted %d namespaces left by dead labs: %s", len(swept), " ".join(swept))
        # the reaper outlives us only to clean up: it waits for its stdin (our pipe) to close, then destroys
        # whatever namespaces with our prefix are left (none when close() ran first)
        self._reaper = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "reap", self.prefix], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            self.switch = self._namespace("switch")
            _run("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
            _run("ip", "-n", self.switch, "link", "set", "br0", "up")
        except BaseException:
            self.close()
            raise
        return self

    def _namespace(self, name: str) -> str:
        ns = self.prefix + name
        _run("ip", "netns", "add", ns)
        self._namespaces.append(ns)
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        return ns

    def _plug(self, ns: str, ifname: str, ip: str) -> None:
        """A veth from `ns` (named `ifname`) to a new port of the public switch."""
        self._ports += 1
        port = f"p{self._ports}"
        _run(
            "ip",
            "link",
            "add",
            ifname,
            "netns",
            ns,
            "type",
            "veth",
            "peer",
            "name",
            port,
            "netns",
            self.switch,
        )
        _run("ip", "-n", self.switch, "link", "set", port, "master", "br0")
        _run("ip", "-n", self.switch, "link", "set", port, "up")
        _run("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", ifname)
        _run("ip", "-n", ns, "link", "set", ifname, "up")

    def add_public(self, name: str) -> Host:
        """A host on the public segment: every other host can connect to it."""
        ip = f"{PUBLIC_NET}.{10 + len(self.hosts)}"
        ns = self._namespace(name)
        self._plug(ns, "eth0", ip)
        host = self.hosts[name] = Host(self, name, ns, ip, public_ip=ip)
        return host

    def add_gateway(self) -> str:
        """Plug this machine's own network namespace into the public segment; returns its address there (10.77.0.1).

        A service listening on that address (e.g. anvil with `--host 10.77.0.1`) is reachable from every host of the
        lab, home hosts through their NAT. One gateway per machine at a time (the subnet must be free here). The
        link is a veth whose other end is in the switch namespace: it is deleted with it, on every path."""
        ip = f"{PUBLIC_NET}.1"
        if _run("ip", "-4", "route", "show", f"{PUBLIC_NET}.0/24", check=False).stdout.strip():
            raise NetlabUnavailable(f"{PUBLIC_NET}.0/24 is routed here already (another lab's gateway?)")
        self._ports += 1
        port, here = f"p{self._ports}", f"swg{os.getpid()}-{self.prefix.split('-')[1]}"[:15]
        _run("ip", "link", "add", here, "type", "veth", "peer", "name", port, "netns", self.switch)
        self._gateway = here
        _run("ip", "-n", self.switch, "link", "set", port, "master", "br0")
        _run("ip", "-n", self.switch, "link", "set", port, "up")
        _run("ip", "addr", "add", f"{ip}/24", "dev", here)
        _run("ip", "link", "set", here, "up")
        return ip

    def add_home(self, name: str) -> Host:
        """A host behind its own NAT router: it can connect out, nobody can connect in."""
        wan_ip = f"{PUBLIC_NET}.{100 + len(self.hosts)}"
        router = self._namespace(f"{name}-rt")
        self._plug(router, "wan", wan_ip)
        ns = self._namespace(name)
        lan_gw, ip = f"{HOME_NET}.1", f"{HOME_NET}.2"
        _run("ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", "lan", "netns", router)
        _run("ip", "-n", router, "addr", "add", f"{lan_gw}/24", "dev", "lan")
        _run("ip", "-n", router, "link", "set", "lan", "up")
        _run("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
        _run("ip", "-n", ns, "link", "set", "eth0", "up")
        _run("ip", "-n", ns, "route", "add", "default", "via", lan_gw)
        nat = ("ip", "netns", "exec", router)
        _run(*nat, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        _run(*nat, "iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE")
        _run(*nat, "iptables", "-A", "FORWARD", "-i", "lan", "-o", "wan", "-j", "ACCEPT")
        _run(
            *nat,
            "iptables",
            "-A",
            "FORWARD",
            "-i",
            "wan",
            "-o",
            "lan",
            "-m",
            "conntrack",
            "--ctstate",
            "ESTABLISHED,RELATED",
            "-j",
            "ACCEPT",
        )
        _run(*nat, "iptables", "-P", "FORWARD", "DROP")
        _run(
            *nat,
            "iptables",
            "-A",
            "INPUT",
            "-i",
            "wan",
            "-m",
            "conntrack",
            "--ctstate",
            "ESTABLISHED,RELATED",
            "-j",
            "ACCEPT",
        )
        _run(*nat, "iptables", "-A", "INPUT", "-i", "wan", "-j", "DROP")  # the router itself serves nothing
        rt = Host(self, f"{name}-rt", router, wan_ip, public_ip=wan_ip)
        host = self.hosts[name] = Host(self, name, ns, ip, gateway=lan_gw, router=rt, public_ip=wan_ip)
        return host

    def namespaces(self) -> list[str]:
        return list(self._namespaces)

    def close(self) -> None:
        """Stop every process started through the lab, kill anything else left inside, delete every namespace."""
        if self._closed:
            return
        self._closed = True
        from runtime.procs import stop_children

        with contextlib.suppress(Exception):
            stop_children([c for c in self.children], 5.0, 2.0)
        destroy_namespaces(
            self._namespaces + [ns for ns in list_namespaces(self.prefix) if ns not in self._namespaces]
        )
        if self._gateway is not None:  # gone with the switch's end already; made sure of
            _run("ip", "link", "del", self._gateway, check=False)
        if self._reaper is not None:
            with contextlib.suppress(OSError):
                self._reaper.stdin.close()
            try:
                self._reaper.wait(10)
            except subprocess.TimeoutExpired:
                self._reaper.kill()
                self._reaper.wait()
        left = list_namespaces(self.prefix)
        if left:
            raise RuntimeError(f"netlab: namespaces still there after close: {left}")


def wait_for(condition: Callable[[], object], timeout: float, what: str, period: float = 0.2) -> object:
    """Poll `condition` until it returns something truthy (returned) or `timeout` s pass (TimeoutError naming `what`)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(period)


def _reap(prefix: str) -> int:
    """Reaper: wait until the owner closes our stdin (or dies), then destroy what is left of its lab."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the owner; we follow its pipe
    with contextlib.suppress(OSError):
        while sys.stdin.buffer.read(4096):
            pass
    destroy_namespaces(list_namespaces(prefix))
    return 0


def _demo(args: argparse.Namespace) -> int:
    """A bootstrap on the public segment and a NATed trainer + stage peer; logs go to the terminal."""
    py = [sys.executable, "-m", "swarm.peer"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    with Lab() as built:
        boot = built.add_public("boot")
        stage = built.add_public("stage0")
        home = built.add_home("home1")
        print(f"hosts: boot {boot.ip}, stage0 {stage.ip}, home1 {home.ip} behind NAT {home.public_ip}")
        addr = []

        def on_boot(line: str) -> None:
            if '"ready"' in line and not addr:
                import json

                addr.extend(json.loads(line)["maddrs"])

        boot.run(
            [
                *py,
                "--role",
                "bootstrap",
                "--host",
                boot.ip,
                "--port",
                "31337",
                "--n-stages",
                "1",
                "--round-duration",
                "6",
                "--events",
            ],
            on_line=on_boot,
            env=env,
        )
        wait_for(lambda: addr, 60, "the bootstrap's address")
        joined = [a for a in addr if boot.ip in a][:1]
        stage.run([*py, "--join", "--initial-peers", *joined, "--host", stage.ip], env=env)
        home.run([*py, "--join", "--role", "trainer", "--initial-peers", *joined, "--host", home.ip], env=env)
        print(f"joined through {joined[0]}; Ctrl-C to stop (everything is removed)")
        deadline = None if args.duration is None else time.monotonic() + args.duration
        with contextlib.suppress(KeyboardInterrupt):
            while deadline is None or time.monotonic() < deadline:
                time.sleep(0.5)
    print("lab removed:", "no namespace left" if not list_namespaces() else list_namespaces())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="bootstrap + stage on the public segment, a NATed trainer")
    d.add_argument("--duration", type=float, default=None)
    sub.add_parser("sweep", help="delete namespaces of labs whose owner is gone")
    sub.add_parser("list", help="list every lab namespace")
    r = sub.add_parser("reap")
    r.add_argument("prefix")
    args = p.parse_args(argv)
    if args.cmd == "reap":
        return _reap(args.prefix)
    if args.cmd == "list":
        print("\n".join(list_namespaces()) or "no lab namespaces")
        return 0
    if args.cmd == "sweep":
        print("deleted:", " ".join(sweep_stale()) or "nothing")
        return 0
    reason = unavailable_reason()
    if reason:
        print(f"netlab: {reason}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    return _demo(args)


if __name__ == "__main__":
    sys.exit(main())
