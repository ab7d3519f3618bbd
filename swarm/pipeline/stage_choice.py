"""Stage choice without a scheduler (SWARM-style): join the stage that limits the pipeline, move when that shifts.

The pipeline runs as fast as its slowest stage, so a stage's capacity is the total throughput its peers announce.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from swarm.network.records import StageAnnouncement

Announcements = Mapping[int, Sequence[StageAnnouncement]]
DEFAULT_HYSTERESIS = 0.2


def stage_totals(announcements: Announcements, n_stages: int) -> list[float]:
    """Total announced throughput per stage 0..n_stages-1 (stages beyond n_stages are ignored)."""
    if n_stages < 1:
        raise ValueError(f"an experiment has at least one stage, got n_stages={n_stages}")
    return [sum(a.throughput for a in announcements.get(s, ())) for s in range(n_stages)]


def choose_stage(announcements: Announcements, n_stages: int) -> int:
    """The stage with the lowest total throughput; ties go to the stage with fewest peers, then the lowest index."""
    totals = stage_totals(announcements, n_stages)
    return min(range(n_stages), key=lambda s: (totals[s], len(announcements.get(s, ())), s))


def rebalance_target(
    my_stage: int,
    announcements: Announcements,
    n_stages: int,
    *,
    hysteresis: float = DEFAULT_HYSTERESIS,
    my_peer_id: str | None = None,
    my_throughput: float | None = None,
) -> int | None:
    """The stage to move to, or None to stay.

    Move only if my stage keeps another peer and moving raises the pipeline's minimum stage throughput by more
    than `hysteresis` (a fraction). With `my_peer_id`, only one peer per stage (the same one on every peer's view
    of the records) may move at a time, so that a whole stage does not leave at once.
    """
    if not 0 <= my_stage < n_stages:
        return None
    mine = list(announcements.get(my_stage, ()))
    if len(mine) < 2:
        return None
    if my_peer_id is not None and _designated_mover(mine) != my_peer_id:
        return None
    x = my_throughput if my_throughput is not None else _own_throughput(mine, my_peer_id)
    totals = stage_totals(announcements, n_stages)
    rest = [s for s in range(n_stages) if s != my_stage]
    if not rest:
        return None
    target = min(rest, key=lambda s: (totals[s], len(announcements.get(s, ())), s))
    if not announcements.get(target):
        return target  # an empty stage stops the whole pipeline: fill it whatever the numbers say
    after = list(totals)
    after[my_stage] -= x
    after[target] += x
    return target if min(after) > min(totals) * (1.0 + hysteresis) else None


def _designated_mover(peers: Sequence[StageAnnouncement]) -> str:
    """The one peer of a stage allowed to move now: the lowest hash of its id (stable, not biased to old ids)."""
    return min(peers, key=lambda a: hashlib.sha256(a.peer_id.encode()).digest()).peer_id


def _own_throughput(peers: Sequence[StageAnnouncement], my_peer_id: str | None) -> float:
    """My announced throughput if I am among `peers`, else the stage's mean (my record may not be stored yet)."""
    for a in peers:
        if a.peer_id == my_peer_id:
            return a.throughput
    return sum(a.throughput for a in peers) / len(peers)
