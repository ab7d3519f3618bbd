"""One way to show a peer: the live panel, plain log lines (no terminal), the exit summary, and the demo's row.

Everything reads a `PeerState`; money figures come from its `earnings` (read from the chain), never from the
peer's own bookkeeping.
"""

from __future__ import annotations

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from swarm.apps.earnings import Earnings, format_amount
from swarm.apps.events import Failed, Left, PeerEvent, Ready, RoundDone, Settled, StageChanged, Step, Synced
from swarm.apps.view.state import Advice, PeerState

STEP_LINE_EVERY = 10  # plain mode: one line per this many trainer steps
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


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def human_time(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def short_id(peer_id: str) -> str:
    return f"…{peer_id[-8:]}" if len(peer_id) > 8 else peer_id or "?"


# ---------------------------------------------------------------------------------------------- facts


def facts(state: PeerState) -> list[tuple[str, str]]:
    """(label, value) pairs of what the peer is doing: the panel's body and `swarm-peer status`'s lines."""
    s = state
    rows = [("peer", f"{s.role} {s.peer_id or '?'} (pid {s.pid}), up {human_time(s.uptime)}, {s.status}")]
    if s.experiment:
        rows.append(("experiment", s.experiment))
    if s.addresses or s.role != "trainer":
        rows.append(("reachable", f"{s.reach}" + (f" ({s.addresses[0]})" if s.addresses else "")))
    if s.stage is not None:
        rows.append(("stage", f"{s.stage}: {s.stage_reason or 'chosen'}"))
        peers = "?" if s.stage_peers is None else str(s.stage_peers)
        groups = " ".join(map(str, s.group_sizes)) or "-"
        rows.append(("peers of stage", f"{peers} announce it; averaging groups of the last rounds: {groups}"))
        rows.append(("rounds averaged", f"{s.rounds}" + (f" (last: round {s.last_round})" if s.rounds else "")
                     + f", {human_bytes(s.bytes_averaged)} averaged"))  # fmt: skip
        if s.verified_rounds:
            checks = (f"{s.verified_rounds} verified rounds, {s.parts_checked} parts of others checked, "
                      f"{s.dropped_others} updates dropped, {s.accusations} accusations sent")  # fmt: skip
            rows.append(("checks", checks))
        rows.append(("served", f"{s.requests} forward/backward requests ({s.requests_per_second:.1f}/s)"))
    if s.role == "trainer" or s.steps:
        loss = s.recent_loss
        rows.append(
            ("trained", f"{s.steps} steps, {s.samples} samples, {s.samples_per_second:.1f} samples/s")
        )
        rows.append(("loss", "-" if loss is None else f"{loss:.4f} (mean of the last 20 steps)"
                     + (f", started at {s.first_loss:.4f}" if s.first_loss is not None else "")
                     + (f"; evaluation {s.eval_loss:.4f}" if s.eval_loss is not None else "")))  # fmt: skip
    if s.paid or s.contributions or s.audits_answered:
        onchain = f"; {s.earnings.contributions} on-chain records" if s.earnings is not None else ""
        proofs = (f"{s.proofs_made} made and verified on-chain ({s.contributions} contributions, "
                  f"{s.audits_answered} audits answered){onchain}")  # fmt: skip
        rows.append(("proofs", proofs))
    if s.chain is not None:
        wallet = f"{s.chain.address} in experiment {s.chain.experiment} of escrow {s.chain.escrow}"
        rows += [("rewards", money_text(s.earnings)), ("wallet", wallet)]
    return rows


def money_text(e: Earnings | None) -> str:
    """Earned, claimable, waiting and stake, exactly as the chain says (block number included)."""
    if e is None:
        return "not read from the chain yet"
    parts = [f"claimed {e.amount(e.claimed)}", f"claimable {e.amount(e.claimable)}"]
    if e.to_finalize:
        parts.append(f"{len(e.to_finalize)} round(s) ready to finalize")
    if e.waiting:
        parts.append(f"{e.waiting} round(s) in their windows")
    if e.blocked or e.slashed:
        parts.append(f"{e.blocked + e.slashed} round(s) lost (unanswered audit or slashed)")
    parts.append(f"stake {e.amount(e.stake)}")
    return ", ".join(parts) + f" (chain block {e.block})"


def advice_lines(warnings: list[Advice]) -> list[str]:
    return [f"warning: {w.what} -- what to do: {w.fix}" for w in warnings]


# ---------------------------------------------------------------------------------------------- panel


def panel(state: PeerState, now: float | None = None) -> Panel:
    """The live panel of one peer: its facts, then its warnings, each with what to do."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    for label, value in facts(state):
        grid.add_row(label, value)
    parts: list = [grid]
    if state.losses:
        parts.append(Text(sparkline(state.losses, width=60), style="cyan"))
    for w in state.warnings(now):
        parts.append(Text.assemble(("⚠ " + w.what, "yellow"), "\n   → ", (w.fix, "dim")))
    title = f"swarm-peer · {state.role}" + (f" · stage {state.stage}" if state.stage is not None else "")
    return Panel(Group(*parts), title=title, subtitle="Ctrl-C leaves cleanly", subtitle_align="right")


# ---------------------------------------------------------------------------------------------- plain lines


def event_line(state: PeerState, event: PeerEvent) -> str | None:
    """A plain log line for an event (after `state.apply(event)`), or None for events not worth a line."""
    e = state.earnings
    amount = (lambda u: e.amount(u)) if e is not None else (lambda u: format_amount(u, 18, "tokens"))
    match event:
        case Ready():
            where = f" serving stage {event.stage} ({state.stage_reason})" if event.stage is not None else ""
            return f"ready: {event.role} peer {event.peer_id}{where}"
        case Synced():
            how = (
                "synced from the peers serving it"
                if event.from_peers
                else "no peer had it: starting from the seed"
            )
            return f"stage {event.stage}: parameters {how} ({event.seconds:.1f} s)"
        case Step():
            if event.step % STEP_LINE_EVERY:
                return None
            loss = state.recent_loss
            return (f"step {event.step}: loss {event.loss:.4f} (mean of the last 20: {loss:.4f}), "
                    f"{event.samples} samples, {event.samples_per_second:.1f} samples/s")  # fmt: skip
        case RoundDone():
            who = f"averaged with {event.group_size - 1} other peer(s)" if event.group_size > 1 else "alone"
            return (f"round {event.round} stage {event.stage}: {who}, "
                    f"{human_bytes(event.bytes_sent + event.bytes_received)} in {event.seconds:.1f} s")  # fmt: skip
        case Settled():
            if event.action == "contributed":
                return f"round {event.round}: proof verified on-chain, contribution recorded (stage {event.stage})"
            if event.action == "audit_answered":
                return f"round {event.round}: audit answered with a proof (chunk {event.detail.get('chunk')})"
            if event.action == "claimed":
                return f"round {event.round}: claimed {amount(int(event.detail.get('amount', 0)))}"
            if event.action == "gave_up":
                return f"round {event.round}: given up, earns nothing: {event.detail.get('why', '')}"
            if event.action == "audit_opened":  # this peer's watcher (swarm/settlement/watcher.py)
                why = "our accusation" if event.detail.get("targeted") else "its proof never came"
                return (f"round {event.round}: watcher opened audit {event.detail.get('j')} of "
                        f"{event.detail.get('peer')}, chunk {event.detail.get('chunk')} ({why})")
            if event.action == "slashed":
                return (f"round {event.round}: watcher slashed {event.detail.get('peer')}; reporter "
                        f"{event.detail.get('reporter')} paid {amount(int(event.detail.get('reward', 0)))}")
            if event.action == "failed":
                return f"round {event.round}: settlement step failed: {state.last_failure}"
            return None
        case StageChanged():
            return f"moved from stage {event.old} to stage {event.new} (it was limiting the pipeline)"
        case Left():
            return f"left ({event.reason})"
        case Failed():
            return f"failed: {event.message}"
    return None


def status_line(state: PeerState) -> str:
    """One line of headline figures (plain mode prints it every so often)."""
    s = state
    parts = [f"{s.role}", f"up {human_time(s.uptime)}"]
    if s.stage is not None:
        parts += [f"stage {s.stage}", f"rounds {s.rounds}", f"group {s.group_sizes[-1] if s.group_sizes else '-'}",
                  f"averaged {human_bytes(s.bytes_averaged)}"]  # fmt: skip
    if s.steps:
        parts += [f"steps {s.steps}", f"loss {s.recent_loss:.4f}", f"{s.samples_per_second:.1f} samples/s"]
    if s.paid:
        parts.append(f"proofs {s.proofs_made}")
    if s.earnings is not None:
        parts += [f"claimed {s.earnings.amount(s.earnings.claimed)}",
                  f"claimable {s.earnings.amount(s.earnings.claimable)}"]  # fmt: skip
    return "status: " + ", ".join(parts)


# ---------------------------------------------------------------------------------------------- summary


def summary_lines(state: PeerState, claim_command: str | None = None) -> list[str]:
    """What the peer did, printed when it leaves; money as the chain says, with the command to claim the rest."""
    s = state
    lines = [f"swarm-peer summary: {s.role} peer {s.peer_id or '?'}, {human_time(s.uptime)}"
             + (f", {s.left}" if s.left else "")]  # fmt: skip
    if s.role == "stage" or s.rounds:
        groups = (
            f" (groups of {min(s.group_sizes)}-{max(s.group_sizes)} in the last rounds)"
            if s.group_sizes
            else ""
        )
        lines.append(f"  rounds averaged: {s.rounds}{groups}; {human_bytes(s.bytes_averaged)} averaged; "
                     f"{s.requests} requests served; stage {s.stage}")  # fmt: skip
    if s.role == "trainer" or s.steps:
        rate = s.samples / max(s.uptime, 1e-9)
        loss = s.recent_loss
        trend = f"{s.first_loss:.4f} -> {loss:.4f}" if loss is not None and s.first_loss is not None else "-"
        ev = f"{s.eval_loss:.4f}" if s.eval_loss is not None else "not evaluated"
        lines.append(f"  samples: {s.samples} in {s.steps} steps ({s.samples_per_second:.1f} samples/s while "
                     f"training, {rate:.1f} overall); loss {trend} (means of the first and last 20 steps); "
                     f"evaluation loss {ev}")  # fmt: skip
    if s.paid or s.contributions:
        lines.append(
            f"  proofs: {s.contributions} contributions and {s.audits_answered} audit answers verified "
            f"on-chain"
            + (f"; {s.settle_failures} settlement steps failed" if s.settle_failures else "")
            + (f"; {s.rounds_given_up} rounds given up" if s.rounds_given_up else "")
        )
    if s.chain is not None:
        lines.append(f"  rewards (as the chain says): {money_text(s.earnings)}")
        if s.chain_error:
            lines.append(f"  could not read the chain at the end: {s.chain_error}")
        e = s.earnings
        owed = e is None or e.claimable or e.to_finalize or e.waiting
        if owed and claim_command:
            lines.append(f"  claim what is owed (now or later) with: {claim_command}")
    lines += [
        "  " + line for line in advice_lines([w for w in s.warnings() if w.key in ("rpc_down", "stake")])
    ]
    return lines


# ---------------------------------------------------------------------------------------------- demo


def peer_row(name: str, state: PeerState) -> list[str]:
    """The demo's table row of one peer (columns: DEMO_COLUMNS)."""
    if state.earnings is not None:
        earned = state.earnings.amount(state.earnings.claimed)
    else:
        earned = format_amount(state.claimed_by_peer, 18) if state.claimed_by_peer else "-"
    return [
        name, state.role, "-" if state.stage is None else str(state.stage), str(state.rounds),
        str(state.group_sizes[-1]) if state.group_sizes else "-", human_bytes(state.bytes_averaged),
        str(state.proofs_made or "-"), earned, state.status,
    ]  # fmt: skip


DEMO_COLUMNS = ("peer", "role", "stage", "rounds", "group", "averaged", "proofs", "earned", "status")
