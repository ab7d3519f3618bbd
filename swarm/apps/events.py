"""What a peer reports about itself as it runs: typed events, one JSON line each on stdout (read by swarm-demo).

Lines that are not events (a library printing on stdout) are ignored by the reader, never fatal.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Annotated, Literal, TextIO

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

EVENT_PREFIX = '{"kind":'


class _Event(BaseModel):
    peer: str = ""  # the peer's name in the demo, or its PeerID
    time: float = Field(default_factory=time.time)


class Ready(_Event):
    kind: Literal["ready"] = "ready"
    role: str
    peer_id: str
    maddrs: list[str] = []
    stage: int | None = None


class Synced(_Event):
    """A stage peer downloaded its stage's current parameters from the peers that serve it (or found none)."""

    kind: Literal["synced"] = "synced"
    stage: int
    from_peers: bool
    seconds: float
    distance_from_seed: float = 0.0  # L2 distance of the parameters it now holds from the seed's initial ones


class Step(_Event):
    kind: Literal["step"] = "step"
    step: int
    loss: float
    samples: int
    samples_per_second: float


class RoundDone(_Event):
    kind: Literal["round"] = "round"
    round: int
    stage: int
    group_size: int
    bytes_sent: int
    bytes_received: int
    seconds: float
    update_norm: float
    requests: int = 0  # forward/backward calls served so far
    verified: bool = False  # a verified round (swarm/rounds/verified.py): the fields below say what was checked
    included: list[str] = []  # peer ids whose checked update entered the average
    dropped: dict[str, str] = {}  # peer id -> why the honest peers left it out of this round
    accusations: int = 0  # accusations this peer made (the evidence it published)
    parts_checked: int = 0  # parts of others' updates this peer verified
    check_seconds: float = 0.0  # exchange, checks and agreement


class StageChanged(_Event):
    kind: Literal["stage_changed"] = "stage_changed"
    old: int
    new: int


class Settled(_Event):
    """The stage peer's round settlement did something on-chain (swarm/settlement/settler.py)."""

    kind: Literal["settled"] = "settled"
    action: str  # contributed | audit_answered | claimed | failed
    round: int
    stage: int
    detail: dict = {}


class Left(_Event):
    kind: Literal["left"] = "left"
    reason: str = "done"
    eval_loss: float | None = None


class Failed(_Event):
    kind: Literal["failed"] = "failed"
    message: str


PeerEvent = Annotated[
    Ready | Synced | Step | RoundDone | StageChanged | Settled | Left | Failed, Field(discriminator="kind")
]
_ADAPTER: TypeAdapter[PeerEvent] = TypeAdapter(PeerEvent)


def parse_event(line: str) -> PeerEvent | None:
    """The event on `line`, or None if the line is not one (other output, a torn or malformed line)."""
    if not line.startswith(EVENT_PREFIX):
        return None
    try:
        return _ADAPTER.validate_json(line)
    except ValidationError:
        return None


class EventWriter:
    """Writes events as JSON lines (thread-safe); a disabled writer drops them."""

    def __init__(self, peer: str, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.peer, self.enabled = peer, enabled
        self._stream = stream
        self._lock = threading.Lock()

    def emit(self, event: _Event) -> None:
        if not self.enabled:
            return
        if not event.peer:
            event.peer = self.peer
        data = event.model_dump(mode="json")
        line = json.dumps({"kind": data.pop("kind"), **data}, separators=(",", ":"))
        stream = self._stream or sys.stdout
        with self._lock:
            try:
                stream.write(line + "\n")
                stream.flush()
            except (BrokenPipeError, ValueError):  # the reader is gone: keep running, stop reporting
                self.enabled = False
