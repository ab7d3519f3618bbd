"""What the demo shows: a view of the swarm built from its peers' events, rendered live with rich and summarised.

The view only reads events (swarm.apps.events), so it can be tested without any process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from swarm.apps.events import Failed, Left, PeerEvent, Ready, RoundDone, Settled, StageChanged, Step, Synced

SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int = 60) -> str:
    """`values` as a line of block characters (bucketed means when longer than `width`)."""
    if not values:
        return ""
    if len(values) > width:
        size = len(values) / width
        values = [
            sum(chunk) / len(chunk)
            for i in range(width)
            if (chunk := values[int(i * size) : max(int((i + 1) * size), int(i * size) + 1)])
        ]
    lo, hi = min(values), max(values)
    span = hi - lo or 1.0
    return "".join(SPARK[min(len(SPARK) - 1, int((v - lo) / span * len(SPARK)))] for v in values)


@dataclass
class PeerView:
    name: str
    role: str = "?"
    stage: int | None = None
    status: str = "starting"
    peer_id: str = ""
    rounds: int = 0
    bytes_averaged: int = 0
    last_round: int | None = None
    group_size: int = 0
    contributions: int = 0
    claimed: float = 0.0  # reward tokens claimed


@dataclass
class SwarmView:
    """The swarm as its events tell it: peers, the trainers' losses, rounds and bytes averaged."""

    n_stages: int
    started: float = field(default_factory=time.monotonic)
    peers: dict[str, PeerView] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)  # every trainer step, in arrival order
    samples: dict[str, int] = field(default_factory=dict)  # per trainer
    samples_per_second: dict[str, float] = field(default_factory=dict)
    rounds: set[int] = field(default_factory=set)
    eval_losses: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def peer(self, name: str) -> PeerView:
        return self.peers.setdefault(name, PeerView(name))

    def apply(self, event: PeerEvent) -> None:
        p = self.peer(event.peer)
        match event:
            case Ready():
                p.role, p.peer_id, p.status = event.role, event.peer_id, "running"
                if event.stage is not None:
                    p.stage = event.stage
            case Synced():
                p.stage = event.stage
                p.status = "synced from peers" if event.from_peers else "fresh parameters"
            case Step():
                self.losses.append(event.loss)
                self.samples[event.peer] = event.samples
                self.samples_per_second[event.peer] = event.samples_per_second
                p.status = f"step {event.step}"
            case RoundDone():
                p.rounds += 1
                p.last_round, p.group_size, p.stage = event.round, event.group_size, event.stage
                p.bytes_averaged += event.bytes_sent + event.bytes_received
                self.rounds.add(event.round)
                p.status = "averaging" if event.group_size > 1 else "alone in its stage"
            case Settled():
                if event.action == "contributed":
                    p.contributions += 1
                elif event.action == "claimed":
                    p.claimed += int(event.detail.get("amount", 0)) / 1e18
                elif event.action == "failed":
                    p.status = f"settlement failed (round {event.round})"
            case StageChanged():
                p.stage, p.status = event.new, f"moved from stage {event.old}"
            case Left():
                p.status = f"left ({event.reason})"
                if event.eval_loss is not None:
                    self.eval_losses[event.peer] = event.eval_loss
            case Failed():
                p.status = "failed"
                self.failures.append(f"{event.peer}: {event.message}")

    def mark_exited(self, name: str, code: int | None) -> None:
        p = self.peer(name)
        if not p.status.startswith(("left", "failed")):
            p.status = f"exited ({code})"

    @property
    def bytes_averaged(self) -> int:
        return sum(p.bytes_averaged for p in self.peers.values())

    @property
    def total_samples(self) -> int:
        return sum(self.samples.values())

    def peers_per_stage(self) -> list[int]:
        counts = [0] * self.n_stages
        for p in self.peers.values():
            gone = p.status.split()[0] in ("left", "exited", "failed")
            if p.role == "stage" and p.stage is not None and not gone and 0 <= p.stage < self.n_stages:
                counts[p.stage] += 1
        return counts

    def recent_loss(self, n: int = 20) -> float | None:
        tail = self.losses[-n:]
        return sum(tail) / len(tail) if tail else None


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
    for col in ("peer", "role", "stage", "rounds", "group", "averaged", "proofs", "earned", "status"):
        table.add_column(col)
    for p in view.peers.values():
        table.add_row(
            p.name, p.role, "-" if p.stage is None else str(p.stage), str(p.rounds), str(p.group_size or "-"),
            human_bytes(p.bytes_averaged), str(p.contributions or "-"), f"{p.claimed:.1f}" if p.claimed else "-",
            p.status,
        )  # fmt: skip
    parts = [head, Text(sparkline(view.losses), style="cyan"), table]
    parts += [Text(f) for f in view.failures[-3:]]
    return Panel(Group(*parts), title=title)


def summary_lines(view: SwarmView, seconds: float, layout: list[int] | None = None) -> list[str]:
    """The end-of-demo summary as plain lines (`layout`: peers per stage when training ended)."""
    first = sum(view.losses[:20]) / len(view.losses[:20]) if view.losses else None
    last = view.recent_loss()
    lines = [
        f"loss curve ({len(view.losses)} steps): {sparkline(view.losses)}",
        "loss: " + (f"{first:.4f} -> {last:.4f} (mean of the first and last 20 steps)" if first else "no steps"),
        f"samples: {view.total_samples} in {seconds:.0f} s = {view.total_samples / max(seconds, 1e-9):.1f} samples/s",
        f"rounds averaged: {len(view.rounds)}; bytes averaged: {human_bytes(view.bytes_averaged)}",
        f"peers per stage at the end of training: {layout if layout is not None else view.peers_per_stage()}",
    ]
    if view.eval_losses:
        lines.append("test loss: " + ", ".join(f"{k} {v:.4f}" for k, v in view.eval_losses.items()))
    lines += [f"failure: {f}" for f in view.failures]
    return lines


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
