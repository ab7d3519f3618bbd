"""What the demo shows: a view of the swarm built from its peers' events, rendered live with rich and summarised.

Each peer is a `PeerState` (swarm/apps/view), the same one `swarm-peer` shows for itself, and its row is
`render.peer_row`: one way to render a peer. The view only reads events, so it can be tested without any process.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from swarm.apps.events import Failed, Left, PeerEvent, Ready, RoundDone, Step
from swarm.apps.view.render import DEMO_COLUMNS, human_bytes, peer_row, sparkline
from swarm.apps.view.state import PeerState

__all__ = ["SwarmView", "human_bytes", "join_lines", "render", "sparkline", "summary_lines"]


@dataclass
class SwarmView:
    """The swarm as its events tell it: peers, the trainers' losses, rounds and bytes averaged."""

    n_stages: int
    started: float = field(default_factory=time.monotonic)
    peers: dict[str, PeerState] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)  # every trainer step, in arrival order
    samples: dict[str, int] = field(default_factory=dict)  # per trainer
    samples_per_second: dict[str, float] = field(default_factory=dict)
    rounds: set[int] = field(default_factory=set)
    eval_losses: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)  # peer id -> demo name
    checks: dict[tuple[int, int], RoundChecks] = field(default_factory=dict)  # (stage, round) -> verified round

    def peer(self, name: str) -> PeerState:
        return self.peers.setdefault(name, PeerState(name=name, pid=0))

    def apply(self, event: PeerEvent) -> None:
        self.peer(event.peer).apply(event)
        match event:
            case Step():
                self.losses.append(event.loss)
                self.samples[event.peer] = event.samples
                self.samples_per_second[event.peer] = event.samples_per_second
            case Ready():
                self.names[event.peer_id] = event.peer
            case RoundDone():
                self.rounds.add(event.round)
                if event.verified:
                    c = self.checks.setdefault((event.stage, event.round), RoundChecks())
                    c.checkers.add(event.peer)
                    c.parts += event.parts_checked
                    c.bytes += event.bytes_received
                    c.accusations += event.accusations
                    c.seconds = max(c.seconds, event.check_seconds)
                    c.dropped.update({self.names.get(p, p[-6:]): why for p, why in event.dropped.items()})
            case Left():
                if event.eval_loss is not None:
                    self.eval_losses[event.peer] = event.eval_loss
            case Failed():
                self.failures.append(f"{event.peer}: {event.message}")

    def verification_lines(self, last: int = 3) -> list[str]:
        """Per verified round (the latest `last`): who checked, who was dropped and why, the evidence sent."""
        out = []
        for (stage, r), c in sorted(self.checks.items())[-last:]:
            dropped = "; ".join(f"{p} dropped: {why}" for p, why in sorted(c.dropped.items())) or "nobody dropped"
            out.append(f"stage {stage} round {r}: checked by {', '.join(sorted(c.checkers))} ({c.parts} parts, "
                       f"{c.seconds:.1f} s); {dropped}; accusations sent: {c.accusations}")
        return out

    def mark_exited(self, name: str, code: int | None) -> None:
        p = self.peer(name)
        if not p.left:
            p.left, p.status = "exited", f"exited ({code})"

    @property
    def bytes_averaged(self) -> int:
        return sum(p.bytes_averaged for p in self.peers.values())

    @property
    def total_samples(self) -> int:
        return sum(self.samples.values())

    def peers_per_stage(self) -> list[int]:
        counts = [0] * self.n_stages
        for p in self.peers.values():
            if p.role == "stage" and p.stage is not None and not p.left and 0 <= p.stage < self.n_stages:
                counts[p.stage] += 1
        return counts

    def recent_loss(self, n: int = 20) -> float | None:
        tail = self.losses[-n:]
        return sum(tail) / len(tail) if tail else None


@dataclass
class RoundChecks:
    """What the stage peers of one (stage, round) reported about their verified exchange."""

    checkers: set[str] = field(default_factory=set)
    parts: int = 0
    bytes: int = 0  # received (and checked) by the peers of the round
    accusations: int = 0
    seconds: float = 0.0
    dropped: dict[str, str] = field(default_factory=dict)


def render(view: SwarmView, title: str = "swarm demo") -> Panel:
    """The live panel: headline figures, the loss sparkline and one row per peer."""
    elapsed = time.monotonic() - view.started
    loss = view.recent_loss()
    sps = sum(view.samples_per_second.values())
    head = Text.assemble(
        ("loss ", "bold"), f"{loss:.4f}" if loss is not None else "-", "   ",
        ("samples/s ", "bold"), f"{sps:.0f}", "   ",
        ("samples ", "bold"), f"{view.total_samples}", "   ",
        ("rounds ", "bold"), f"{len(view.rounds)}", "   ",
        ("averaged ", "bold"), human_bytes(view.bytes_averaged), "   ",
        ("peers/stage ", "bold"), " ".join(str(c) for c in view.peers_per_stage()), "   ",
        (f"{elapsed:.0f} s", "dim"),
    )  # fmt: skip
    table = Table(expand=True, box=None, header_style="bold")
    for col in DEMO_COLUMNS:
        table.add_column(col)
    for name, p in view.peers.items():
        table.add_row(*peer_row(name, p))
    parts = [head, Text(sparkline(view.losses), style="cyan"), table]
    parts += [Text(line, style="yellow" if "dropped:" in line else "dim") for line in view.verification_lines()]
    parts += [Text(f) for f in view.failures[-3:]]
    return Panel(Group(*parts), title=title)


UNFINISHED = "the round did not finish on this peer"  # swarm/rounds/verified.py: stopped or overran, not applied


def summary_lines(view: SwarmView, seconds: float, layout: list[int] | None = None) -> list[str]:
    """The end-of-demo summary as plain lines (`layout`: peers per stage when training ended)."""
    first = sum(view.losses[:20]) / len(view.losses[:20]) if view.losses else None
    last = view.recent_loss()
    lines = [
        f"loss curve ({len(view.losses)} steps): {sparkline(view.losses)}",
        "loss: "
        + (f"{first:.4f} -> {last:.4f} (mean of the first and last 20 steps)" if first else "no steps"),
        f"samples: {view.total_samples} in {seconds:.0f} s = {view.total_samples / max(seconds, 1e-9):.1f} samples/s",
        f"rounds averaged: {len(view.rounds)}; bytes averaged: {human_bytes(view.bytes_averaged)}",
        f"peers per stage at the end of training: {layout if layout is not None else view.peers_per_stage()}",
    ]
    if view.checks:
        checks = view.checks.values()
        cut_short = sum(any(why == UNFINISHED for why in c.dropped.values()) for c in checks)  # peers leaving
        dropped = sorted({f"{p} ({why})" for c in checks for p, why in c.dropped.items() if why != UNFINISHED})
        lines.append(f"verified rounds: {len(view.checks)}; parts checked: {sum(c.parts for c in checks)} "
                     f"({human_bytes(sum(c.bytes for c in checks))}); checking took up to {max(c.seconds for c in checks):.1f} s a round; accusations sent: "
                     f"{sum(c.accusations for c in checks)}; dropped: {', '.join(dropped) or 'nobody'}"
                     + (f"; {cut_short} rounds cut short by peers leaving (not applied)" if cut_short else ""))
    if view.eval_losses:
        lines.append("test loss: " + ", ".join(f"{k} {v:.4f}" for k, v in view.eval_losses.items()))
    lines += [f"failure: {f}" for f in view.failures]
    return lines


def join_lines(maddrs: list[str], experiment: str) -> list[str]:
    """What the demo prints so that a second terminal can join its swarm as a volunteer (loopback only)."""
    script = Path(sys.executable).with_name("swarm-peer")
    peer = str(script) if script.exists() else f"{sys.executable} -m swarm.peer"
    join = f"{peer} --join --host 127.0.0.1 --experiment {experiment} --initial-peers {' '.join(maddrs)}"
    return [
        "join this swarm from a second terminal as a volunteer (a stage peer; unpaid: the demo's wallets are its own):",
        f"  {join}",
        "  (add --role trainer to push batches instead; `swarm-peer status` in a third terminal shows what it does)",
    ]
