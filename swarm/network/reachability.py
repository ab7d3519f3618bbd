"""Can other peers connect to us? Ask a peer of the swarm to dial us back, and say what the answer means.

Behind a home NAT or a firewall a peer can connect out but nobody can connect in. A trainer does not mind (it only
connects out), but a stage peer must be dialled by trainers and by its stage's other peers, and without a way in
it would only time out. The check follows Petals' (`petals/server/reachability.py`: a server asks peers of the
swarm to open a fresh connection back to it before it announces itself): we ask an initial peer, over the
connection we already have, to open a *new* TCP connection to the address it sees our connection come from, on
each port we listen on (what a port forward on a home router would expose). It dials nothing else, so nobody can
use the check to make a peer probe other machines.

Every peer started by `swarm-peer` answers these checks (`serve_reachability_checks`); the answer is one of
`Reachability.status`: "public" (some address was dialled back), "private" (none was), "unknown" (no peer
answered the question). `explain()` turns it into what the volunteer should know and do.

Also here: `start_with_retry`, the join loop of `swarm-peer`: when no initial peer answers, the peer says so,
waits (5 s, doubling up to 60 s) and tries again, forever, until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import msgpack

logger = logging.getLogger(__name__)

HANDLER = "swarm.reachability.check"
DIAL_TIMEOUT_S = 3.0  # per address the checker dials back
CHECK_TIMEOUT_S = 20.0
RETRY_FIRST_S, RETRY_MAX_S = 5.0, 60.0
NO_INITIAL_PEER = (
    "none of the initial peers answered"  # swarm.network.dht's JoinError for an unreachable swarm
)

T = TypeVar("T")


@dataclass
class Reachability:
    """What a peer of the swarm saw when it tried to connect to us."""

    status: Literal["public", "private", "unknown"]
    checker: str = ""  # peer id of the peer that dialled back
    dialled: dict[str, bool] = field(default_factory=dict)  # "ip:port" -> connected
    seen_as: str = ""  # the address our connection came from, as the checker saw it
    detail: str = ""

    @property
    def reachable(self) -> bool | None:
        return {"public": True, "private": False}.get(self.status)


# ---------------------------------------------------------------------------------------------- checker side


def serve_reachability_checks(dht) -> None:
    """Answer other peers' reachability checks from this peer's DHT process (its p2pd), for the DHT's lifetime."""
    dht.run_coroutine(_register)


async def _register(_dht, node) -> None:
    from hivemind.proto import runtime_pb2

    await node.p2p.add_protobuf_handler(
        HANDLER, functools.partial(_answer, node.p2p), runtime_pb2.ExpertRequest
    )


async def _answer(p2p, request, context):
    """Dial every address the asker names, and the address its connection comes from with its listening port."""
    from hivemind.proto import runtime_pb2

    try:
        asked = msgpack.unpackb(request.metadata)
        ports = [int(p) for p in asked.get("ports", [])][:8]
        hosts = [str(h) for h in asked.get("hosts", [])][:8]
    except (ValueError, TypeError, AttributeError, msgpack.UnpackException):
        return runtime_pb2.ExpertResponse(metadata=msgpack.packb({"error": "malformed request"}))
    seen = ""
    for info in await p2p.list_peers():
        if info.peer_id == context.remote_id:
            for addr in info.addrs:
                ip = _ip_of(str(addr))
                if ip and "/p2p-circuit" not in str(addr):
                    seen = ip
                    break
    # only the address the asker's connection comes from: dialling whatever hosts a remote peer names would let
    # anyone use us to probe other machines (the asker's own list is kept for the log, not dialled)
    del hosts
    targets = [(seen, p) for p in ports] if seen else []
    results = await asyncio.gather(*(_dial(h, p) for h, p in targets))
    dialled = {f"{h}:{p}": ok for (h, p), ok in zip(targets, results, strict=True)}
    return runtime_pb2.ExpertResponse(metadata=msgpack.packb({"dialled": dialled, "seen_as": seen}))


async def _dial(host: str, port: int) -> bool:
    """A fresh TCP connection that gets the libp2p listener's multistream greeting (not just any open port)."""
    if host in ("0.0.0.0", "::"):
        return False
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), DIAL_TIMEOUT_S)
    except (TimeoutError, OSError):
        return False
    try:
        writer.write(b"\x13/multistream/1.0.0\n")
        greeting = await asyncio.wait_for(reader.read(64), DIAL_TIMEOUT_S)
        return b"/multistream/" in greeting
    except (TimeoutError, OSError):
        return False
    finally:
        writer.close()


def _ip_of(maddr: str) -> str | None:
    parts = maddr.split("/")
    if len(parts) > 2 and parts[1] in ("ip4", "ip6"):
        return parts[2]
    return None


# ---------------------------------------------------------------------------------------------- asker side


def check_reachability(dht, checkers: Sequence[str], timeout: float = CHECK_TIMEOUT_S) -> Reachability:
    """Ask the first of `checkers` (peer ids, e.g. the initial peers) that answers to dial us back."""
    if not checkers:
        return Reachability("unknown", detail="no peer to ask (this is the first peer of the swarm)")
    try:
        return dht.run_coroutine(functools.partial(_ask, checkers=list(checkers), timeout=timeout))
    except Exception as exc:  # noqa: BLE001 -- a check that cannot run is "unknown", never a failure to join
        return Reachability("unknown", detail=f"the check could not run: {exc}")


async def _ask(_dht, node, checkers: list[str], timeout: float) -> Reachability:
    from hivemind.p2p import PeerID
    from hivemind.proto import runtime_pb2

    listen = [str(a) for a in await node.p2p.get_visible_maddrs(latest=True)]
    hosts = sorted({ip for a in listen if (ip := _ip_of(a)) and "/tcp/" in a and "/p2p-circuit" not in a})
    ports = sorted(
        {int(a.split("/tcp/")[1].split("/")[0]) for a in listen if "/tcp/" in a and "p2p-circuit" not in a}
    )
    request = runtime_pb2.ExpertRequest(uid=HANDLER, metadata=msgpack.packb({"hosts": hosts, "ports": ports}))
    errors = []
    for checker in checkers:
        try:
            reply = await asyncio.wait_for(
                node.p2p.call_protobuf_handler(PeerID.from_base58(checker), HANDLER, request,
                                               runtime_pb2.ExpertResponse), timeout)  # fmt: skip
            answer = msgpack.unpackb(reply.metadata)
        except Exception as exc:  # noqa: BLE001 -- an old peer without the handler, a peer that left
            errors.append(f"{checker[-8:]}: {type(exc).__name__}: {exc}".strip())
            continue
        dialled = {str(k): bool(v) for k, v in answer.get("dialled", {}).items()}
        status = "public" if any(dialled.values()) else "private"
        return Reachability(status, checker, dialled, str(answer.get("seen_as", "")))
    return Reachability("unknown", detail="; ".join(errors) or "no peer answered")


def explain(result: Reachability, role: str) -> tuple[int, str]:
    """(logging level, one paragraph): what the check found, what it means for `role`, what to do."""
    tried = ", ".join(f"{a} {'ok' if ok else 'no'}" for a, ok in result.dialled.items()) or "nothing"
    if result.status == "public":
        ok = [a for a, v in result.dialled.items() if v]
        return (
            logging.INFO,
            f"reachability: peers can connect to this peer directly (dialled back at {', '.join(ok)})",
        )
    if result.status == "unknown":
        return logging.INFO, f"reachability: unknown ({result.detail}); carrying on"
    seen = (
        f" (your connections come from {result.seen_as}, a NAT or firewall in front of you)"
        if result.seen_as
        else ""
    )
    if role == "trainer":
        return logging.INFO, (
            f"reachability: this peer cannot be reached from outside{seen}. That is fine for a trainer: it only "
            "connects out (it runs as a DHT client and serves nothing). Tried: " + tried
        )
    return logging.WARNING, (
        f"reachability: this peer cannot be reached from outside{seen}; tried {tried}. A {role} peer must accept "
        "connections (trainers and its stage's other peers dial it), so it will be served through a relay if the "
        "swarm has one, which is slower. To be reached directly: forward a TCP port on your router to this machine "
        "and start with --port <that port>; or run this machine as a trainer (--role trainer), which needs no incoming connections."
    )


def report_reachability(dht, role: str, initial_peers: Sequence[str]) -> Reachability:
    """At join: serve others' checks, ask an initial peer to dial us back, and log what that means for `role`."""
    try:
        serve_reachability_checks(dht)
    except Exception as exc:  # noqa: BLE001 -- answering others is a courtesy
        logger.debug("cannot answer reachability checks: %r", exc)
    if role == "bootstrap" and not initial_peers:
        return Reachability("unknown", detail="first peer of the swarm")
    checkers = [p.rsplit("/p2p/", 1)[1] for p in initial_peers]
    result = check_reachability(dht, list(dict.fromkeys(checkers)))
    level, text = explain(result, role)
    logger.log(level, text)
    return result


# ---------------------------------------------------------------------------------------------- join loop


def start_with_retry(
    start: Callable[[], T],
    stop: threading.Event,
    *,
    first: float = RETRY_FIRST_S,
    most: float = RETRY_MAX_S,
    log: logging.Logger = logger,
) -> T | None:
    """`start()` (e.g. create_dht) until it joins; while no initial peer answers, say so and retry with backoff.

    Retries forever (waiting `first` s, doubling up to `most`) until `stop` is set (Ctrl-C): then None. Errors that
    a retry cannot fix (a malformed address, a port in use) are raised at once.
    """
    from swarm.errors import JoinError

    wait, attempt, since = first, 0, time.monotonic()
    while not stop.is_set():
        attempt += 1
        try:
            return start()
        except JoinError as exc:
            if NO_INITIAL_PEER not in str(exc):
                raise
            if stop.is_set():
                break
            log.warning(
                "cannot reach the swarm (attempt %d, %.0f s so far): %s. Retrying in %.0f s, and again with growing "
                "pauses (up to %.0f s) until one answers; Ctrl-C to stop.",
                attempt, time.monotonic() - since, exc, wait, most,
            )  # fmt: skip
            stop.wait(wait)
            wait = min(wait * 2, most)
    return None


# ---------------------------------------------------------------------------------------------- joining


def join_swarm(
    start: Callable[..., T], stop: threading.Event, role: str, initial_peers: Sequence[str], *,
    relay: str = "auto", log: logging.Logger = logger,
) -> tuple[T | None, Reachability]:  # fmt: skip
    """Start the DHT (`start(**options)`, retried while no initial peer answers), check reachability, and behind a
    NAT serve a stage through a relay: the DHT is restarted with a reservation on the initial peer that answered.

    Returns (dht, reachability), or (None, ...) when stopped first. `relay` (swarm-peer --relay): "auto", a
    bootstrap peer starts as a relay (it is reachable by definition); "serve", any peer does; "off", none does and
    a stage peer behind a NAT does not serve through one. Every peer dials relayed peers it finds on the DHT
    (swarm.network.relay).
    """
    from swarm.network import relay as relaying

    if relay not in ("auto", "serve", "off"):
        raise ValueError(f"relay must be 'auto', 'serve' or 'off', got {relay!r}")
    serves = relay == "serve" or (relay == "auto" and role == "bootstrap")
    options = relaying.relay_service_options() if serves else {}
    dht = start_with_retry(lambda: start(**options), stop, log=log)
    if dht is None:
        return None, Reachability("unknown", detail="stopped")
    try:
        result = report_reachability(dht, role, initial_peers)
        if relay == "off" and role == "stage" and result.status == "private":
            log.warning("--relay off: this stage peer is not reachable and serves through no relay; trainers and "
                        "its stage's other peers cannot call it (drop --relay off, or forward a port)")
        if relay != "off" and role == "stage" and result.status == "private":
            relays = [p for p in initial_peers if p.endswith(f"/p2p/{result.checker}")] or list(initial_peers)
            log.warning(
                "serving through a relay: restarting the DHT with a relay reservation on %s", relays[0]
            )
            dht.shutdown()
            dht = None
            dht = start_with_retry(lambda: start(**relaying.relayed_options(relays)), stop, log=log)
            if dht is None:
                return None, result
            serve_reachability_checks(dht)
            relaying.publish_relayed(dht, relays)
            result = Reachability("private", result.checker, result.dialled, result.seen_as,
                                  detail=f"relayed through {relays[0]}")  # fmt: skip
        relaying.start_relay_dialer(dht)
        if initial_peers:
            from swarm.network.liveness import Liveness

            Liveness(dht, initial_peers, log=log).start()  # frozen / offline: notice, re-bootstrap, say so
    except BaseException:
        if dht is not None:
            dht.shutdown()
        raise
    return dht, result
