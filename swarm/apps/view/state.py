"""`PeerState`: what one peer knows about itself, built from its own events and its wallet's chain figures.

It is a pydantic model, so the same object is rendered live, written to the status file and read back by
`swarm-peer status`. Warnings are derived from it, each in plain words with what to do about it.
"""

from __future__ import annotations

import ipaddress
import os
import time

from pydantic import BaseModel, Field

from swarm.apps.earnings import Earnings
from swarm.apps.events import Failed, Left, PeerEvent, Ready, RoundDone, Settled, StageChanged, Step, Synced

RECENT = 10  # rounds of group sizes kept
PROOFS_BEHIND_ROUNDS = 3  # averaged rounds since the last proven contribution before a paid peer is "behind"
ALONE_ROUNDS = 2  # rounds averaged alone in a row before it is worth a warning
TRAINER_STALL_S = 30.0


class Advice(BaseModel):
    """A warning in plain words and what the volunteer can do about it."""

    key: str
    what: str
    fix: str


class ChainInfo(BaseModel):
    """Where this peer is paid (public facts only: no key material)."""

    rpc_url: str
    escrow: str
    experiment: int
    address: str
    key_file: str | None = None  # the path, for the `swarm-peer claim` line; never the key


class PeerState(BaseModel):
    """One peer's own facts. Times are wall-clock seconds (time.time())."""

    name: str = ""
    pid: int = Field(default_factory=os.getpid)
    role: str = "?"
    peer_id: str = ""
    experiment: str = ""
    started: float = Field(default_factory=time.time)
    updated: float = Field(default_factory=time.time)
    status: str = "starting"
    addresses: list[str] = []  # multiaddrs others can dial
    dialback: str = (
        ""  # a peer of the swarm tried to connect back: public | private | unknown ("" not checked)
    )
    dialback_seen_as: str = ""  # the address our connections come from, as that peer saw it
    relayed_through: str = ""  # a stage peer behind a NAT serves through a relay on this peer (multiaddr)
    # stage peers
    stage: int | None = None
    stage_reason: str = ""
    stage_pinned: bool = False
    synced_from_peers: bool | None = None
    stage_peers: int | None = None  # peers announcing this stage on the DHT (this one included)
    rounds: int = 0
    last_round: int | None = None
    group_sizes: list[int] = []  # the last RECENT rounds' group sizes
    bytes_averaged: int = 0
    requests: int = 0  # forward/backward calls served
    requests_per_second: float = 0.0
    updated_round_at: float = 0.0  # event time of the last round
    verified_rounds: int = 0  # rounds whose parts were checked against their commitments
    parts_checked: int = 0
    accusations: int = 0
    dropped_others: int = 0  # peers the honest peers left out of a round, over all rounds
    dropped_self: str = ""  # "round R: why", when a verified round left this peer's update out
    # trainers
    steps: int = 0
    samples: int = 0
    samples_per_second: float = 0.0
    losses: list[float] = []  # the last 200 steps' losses
    first_loss: float | None = None  # mean of the first 20 steps
    eval_loss: float | None = None
    last_step_at: float | None = None
    # proofs and money (what the peer did; money figures come from `earnings`, read from the chain)
    paid: bool = False
    contributions: int = 0  # proofs made and verified on-chain by `contribute`
    audits_answered: int = 0  # audit proofs made and verified on-chain
    last_contributed_round: int | None = None
    settle_failures: int = 0
    rounds_given_up: int = (
        0  # rounds the settler gave up (window closed, contract refused): they earn nothing
    )
    last_given_up: str = ""
    last_failure: str = ""
    claimed_by_peer: int = (
        0  # base units the peer's own claims received (the chain's figure is `earnings.claimed`)
    )
    chain: ChainInfo | None = None
    earnings: Earnings | None = None
    chain_error: str = ""
    left: str = ""  # why the peer left, once it has

    # ------------------------------------------------------------------------------------------ events

    def apply(self, event: PeerEvent) -> None:
        """Fold one of the peer's own events into its state."""
        self.updated = time.time()
        match event:
            case Ready():
                self.role, self.peer_id, self.status = event.role, event.peer_id, "running"
                self.addresses = event.maddrs or self.addresses
                if event.stage is not None:
                    self.stage = event.stage
                    self.status = f"serving stage {event.stage}"
            case Synced():
                self.stage, self.synced_from_peers = event.stage, event.from_peers
                if not self.stage_reason:
                    self.stage_reason = self._chosen_reason()
                self.status = (
                    "synced from peers" if event.from_peers else "fresh parameters (no peer had any)"
                )
            case Step():
                self.steps, self.samples = event.step + 1, event.samples
                self.samples_per_second, self.last_step_at = event.samples_per_second, event.time
                self.losses = [*self.losses[-199:], event.loss]
                if self.steps <= 20:
                    head = self.losses[: self.steps]
                    self.first_loss = sum(head) / len(head)
                self.status = "training"
            case RoundDone():
                self._round(event)
            case Settled():
                self._settled(event)
            case StageChanged():
                self.stage = event.new
                self.stage_reason = (
                    f"moved from stage {event.old}: stage {event.new} was limiting the pipeline"
                )
                self.group_sizes = []
            case Left():
                self.left = event.reason
                self.status = f"left ({event.reason})"
                if event.eval_loss is not None:
                    self.eval_loss = event.eval_loss
            case Failed():
                self.left, self.status = "failed", f"failed: {event.message}"

    def _chosen_reason(self) -> str:
        if self.stage_pinned:
            return "pinned by --stage"
        return "the stage that limited the pipeline when this peer joined (fewest or slowest peers)"

    def _round(self, e: RoundDone) -> None:
        elapsed = e.time - self.updated_round_at if self.updated_round_at else 0.0
        if elapsed >= 1.0 and e.requests >= self.requests:  # a rate over at least a second
            self.requests_per_second = (e.requests - self.requests) / elapsed
        self.updated_round_at = e.time
        self.rounds += 1
        self.last_round, self.stage, self.requests = e.round, e.stage, e.requests
        self.group_sizes = [*self.group_sizes[-(RECENT - 1) :], e.group_size]
        self.bytes_averaged += e.bytes_sent + e.bytes_received
        self.status = f"averaging, group of {e.group_size}" if e.group_size > 1 else "alone in its stage"
        if e.verified:
            self.verified_rounds += 1
            self.parts_checked += e.parts_checked
            self.accusations += e.accusations
            self.dropped_others += sum(1 for p in e.dropped if p != self.peer_id)
            if self.peer_id and self.peer_id in e.dropped:
                self.dropped_self = f"round {e.round}: {e.dropped[self.peer_id]}"

    def _settled(self, e: Settled) -> None:
        if e.action == "contributed":
            self.contributions += 1
            self.last_contributed_round = max(e.round, self.last_contributed_round or 0)
        elif e.action == "audit_answered":
            self.audits_answered += 1
        elif e.action == "claimed":
            self.claimed_by_peer += int(e.detail.get("amount", 0))
        elif e.action == "gave_up":
            self.rounds_given_up += 1
            self.last_given_up = f"round {e.round}: {e.detail.get('why', '')}"[:300]
        elif e.action == "failed":
            self.settle_failures += 1
            self.last_failure = f"{e.detail.get('step', '?')}: {e.detail.get('error', '')}"[:300]

    # ------------------------------------------------------------------------------------------ chain

    def set_earnings(self, earnings: Earnings | None, error: str = "") -> None:
        if earnings is not None:
            self.earnings = earnings
        self.chain_error = error
        self.updated = time.time()

    # ------------------------------------------------------------------------------------------ derived

    @property
    def uptime(self) -> float:
        return max(0.0, self.updated - self.started)

    @property
    def recent_loss(self) -> float | None:
        tail = self.losses[-20:]
        return sum(tail) / len(tail) if tail else None

    @property
    def claimed(self) -> int:
        """Base units the peer's own claims received, as it reported them (swarm-demo waits for these)."""
        return self.claimed_by_peer

    @property
    def proofs_made(self) -> int:
        return self.contributions + self.audits_answered

    @property
    def reach(self) -> str:
        """'public' when a peer connected back to us, 'behind a NAT or firewall' when it could not; otherwise
        'public', 'local network', 'this machine' or 'unknown' from the addresses others can dial."""
        by_address = reach_of(self.addresses)
        if self.dialback == "public":
            return "public (a peer connected back)"
        if self.dialback == "private" and self.relayed_through:
            return "behind a NAT or firewall: served through a relay (slower)"
        if self.dialback == "private" and by_address != "this machine":
            return "behind a NAT or firewall (a peer could not connect back)"
        return by_address

    def warnings(self, now: float | None = None) -> list[Advice]:
        """What is wrong, in plain words, each with what to do."""
        now = time.time() if now is None else now
        out: list[Advice] = []
        reach = self.reach
        if self.role in ("stage", "bootstrap") and reach == "this machine":
            out.append(
                Advice(
                    key="unreachable",
                    what="reachable only from this machine (it listens on loopback)",
                    fix="to serve other machines, start it with --host 0.0.0.0 (the default)",
                )
            )
        elif self.role in ("stage", "bootstrap") and (reach == "local network" or reach.startswith("behind")):
            port = _port_of(self.addresses)
            if self.dialback == "private":
                seen = (
                    f" (your connections come from {self.dialback_seen_as})" if self.dialback_seen_as else ""
                )
                why = f"a peer of the swarm could not connect back{seen}"
                if self.relayed_through:
                    why += "; others reach it through a relay, which is slower"
            else:
                why = "it has only private addresses"
            out.append(
                Advice(
                    key="unreachable",
                    what=f"not reachable from outside: {why}",
                    fix=f"forward TCP port {port or '<--port>'} on your router to this machine and restart with "
                    "--port set to it, or run it on a machine with a public IP, or run this machine as a trainer "
                    "(--role trainer needs no incoming connections)",
                )
            )
        alone = self.group_sizes[-ALONE_ROUNDS:]
        if self.role == "stage" and len(alone) == ALONE_ROUNDS and all(g <= 1 for g in alone):
            others = (
                f" although {self.stage_peers - 1} other peer(s) announce it"
                if (self.stage_peers or 0) > 1
                else ""
            )
            out.append(
                Advice(
                    key="alone",
                    what=f"alone in stage {self.stage}: no peer averaged with it in the last "
                    f"{ALONE_ROUNDS} rounds{others}",
                    fix="nothing to do while the swarm is small (its updates still train the model); "
                    "if others serve this stage, check that this machine is reachable",
                )
            )
        if self.dropped_self:
            out.append(
                Advice(
                    key="dropped",
                    what=f"this peer's update was left out of a verified round's average ({self.dropped_self})",
                    fix="check that this machine's clock is synchronised and that it runs the swarm's version; "
                    "the log says more",
                )
            )
        if self.paid and self.last_round is not None:
            since = self.last_round - (self.last_contributed_round if self.last_contributed_round is not None else
                                       self.last_round - self.rounds)  # fmt: skip
            if since > PROOFS_BEHIND_ROUNDS:
                out.append(
                    Advice(
                        key="proofs_behind",
                        what=f"proofs are {since} rounds behind: rounds not proven earn nothing",
                        fix="leave the prover a free CPU core (close other heavy jobs) or "
                        "run on a faster machine; the peer proves the newest round and skips older ones",
                    )
                )
        if self.chain is not None and self.chain_error:
            out.append(
                Advice(
                    key="rpc_down",
                    what=f"cannot read the L2: {self.chain_error}"[:200],
                    fix="check --chain-rpc and your network; what you earned stays on-chain and "
                    "`swarm-peer claim` collects it later",
                )
            )
        if self.rounds_given_up:
            out.append(
                Advice(
                    key="given_up",
                    what=f"{self.rounds_given_up} round(s) given up, they earn nothing; last: {self.last_given_up}"[
                        :240
                    ],
                    fix="a closed submission window means proving is too slow here (see proofs behind); a contract "
                    "refusal names its reason: the peer's log has the details",
                )
            )
        if self.settle_failures and self.last_failure:
            out.append(
                Advice(
                    key="settlement",
                    what=f"a settlement step failed ({self.settle_failures} so far): {self.last_failure}"[
                        :200
                    ],
                    fix="see the peer's log; it goes on with the next round",
                )
            )
        e = self.earnings
        if e is not None and e.stake < e.min_stake:
            out.append(
                Advice(
                    key="stake",
                    what=f"stake {e.amount(e.stake)} is below the escrow's minimum "
                    f"{e.amount(e.min_stake)}: contributions are refused",
                    fix="stake at least the minimum in the escrow from this wallet (contracts/README.md)",
                )
            )
        if self.role == "stage" and self.chain is None and not self.left:
            out.append(
                Advice(
                    key="unpaid",
                    what="not paid: no wallet and escrow configured",
                    fix="give --chain-rpc, --escrow and --wallet-key-file (chmod 600) to be paid",
                )
            )
        if self.role == "trainer" and not self.left:
            last = self.last_step_at or self.started
            if now - last > TRAINER_STALL_S:
                out.append(
                    Advice(
                        key="stalled",
                        what=f"no training step for {now - last:.0f} s: some stage has no reachable peer",
                        fix="wait (it retries for a minute), or start a stage peer",
                    )
                )
        return out


def reach_of(addresses: list[str]) -> str:
    """How far the multiaddrs reach: 'public' if any is a global IP, else 'local network', else 'this machine'."""
    kinds = set()
    for a in addresses:
        parts = a.split("/")
        if len(parts) < 3 or parts[1] not in ("ip4", "ip6"):
            continue
        try:
            ip = ipaddress.ip_address(parts[2])
        except ValueError:
            continue
        kinds.add("public" if ip.is_global else "this machine" if ip.is_loopback else "local network")
    for kind in ("public", "local network", "this machine"):
        if kind in kinds:
            return kind
    return "unknown"


def _port_of(addresses: list[str]) -> str | None:
    for a in addresses:
        parts = a.split("/")
        if "tcp" in parts and parts.index("tcp") + 1 < len(parts):
            return parts[parts.index("tcp") + 1]
    return None
