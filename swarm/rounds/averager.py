"""Per-stage averaging rounds: peers serving a stage average its parameters once per round over hivemind.

Matchmaking goes through the DHT under the stage's prefix with the round number as group bits, so only peers in
the same round of the same stage meet. Local steps taken while a round runs are kept (we add the averaging's shift,
not overwrite). What crosses the wire is int8 (swarm.rounds.compression) unless compression="none".
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import AbstractContextManager
from typing import Any, Literal, Self

import hivemind
import torch
from hivemind.averaging import DecentralizedAverager
from hivemind.utils import MPFuture, get_dht_time
from pydantic import BaseModel

from swarm.errors import AveragingError
from swarm.rounds.compression import WIRE, compression_for

logger = logging.getLogger(__name__)

Compression = Literal["int8", "none"]
DEFAULT_MATCHMAKING_TIME = 3.0  # seconds peers wait for each other before a round's all-reduce starts
DECLARE_STATE_PERIOD = 10.0  # how often an averager re-announces itself as a source of the stage's state


class RoundResult(BaseModel):
    """What one averaging round did for this peer (group_size 1 and averaged False: the round was skipped)."""

    round: int
    group_size: int
    averaged: bool
    bytes_sent: int
    bytes_received: int
    seconds: float
    update_norm: float  # L2 norm of this peer's local update since its previous round
    shift_norm: float = 0.0  # L2 norm of the change averaging made to this peer's parameters
    verified: bool = False  # a verified round (swarm.rounds.verified): the fields below are filled
    included: list[str] = []  # peers whose checked update entered the average (this peer included)
    dropped: dict[str, str] = {}  # peer -> why every honest peer left it out
    accusations: int = 0  # accusations this peer made (and published) in the round
    parts_checked: int = 0  # parts of other peers' updates this peer verified
    check_seconds: float = 0.0  # exchange + checks + agreement
    commit_seconds: float = 0.0  # quantize + commit + sign this peer's update


def averaging_prefix(experiment: str, stage: int) -> str:
    """The stage's matchmaking prefix; hivemind forbids '.' in it, so the protocol's '.s' is '_s' here."""
    return f"{experiment}_s{stage}"


def round_group_bits(r: int) -> str:
    """The round number as the matchmaking key's group bits: f"{prefix}.0b{r:b}" is one key per round."""
    if r < 0:
        raise ValueError(f"round must be >= 0, got {r}")
    return f"{r:b}"


class _StageAveragerProcess(DecentralizedAverager):
    """hivemind's averager, serving the live parameters to joiners and reporting its process's wire counts."""

    state_provider: Any = None  # set in the host process: () -> (metadata, tensors)

    def get_current_state(self):
        if self.state_provider is None:
            return super().get_current_state()
        metadata, tensors = self.state_provider()
        return metadata, tensors, None

    def wire_counts(self, timeout: float = 5.0) -> tuple[int, int]:
        future = MPFuture()
        self._outer_pipe.send(("_wire_counts", [], {"future": future}))
        return future.result(timeout=timeout)

    async def _wire_counts(self, future: MPFuture) -> None:
        future.set_result(WIRE.snapshot())


class StageAverager:
    """Averages one stage's module with the other peers serving that stage, one all-reduce per round."""

    def __init__(
        self,
        dht: hivemind.DHT,
        experiment: str,
        stage: int,
        module: torch.nn.Module,
        *,
        compression: Compression = "int8",
        target_group_size: int | None = None,
        start: bool = True,
        lock: AbstractContextManager | None = None,
        matchmaking_time: float = DEFAULT_MATCHMAKING_TIME,
        request_timeout: float | None = None,
        next_chunk_timeout: float = 5.0,
        allreduce_timeout: float = 60.0,
    ) -> None:
        self.dht, self.experiment, self.stage, self.module = dht, experiment, stage, module
        self.prefix = averaging_prefix(experiment, stage)
        self.lock = lock if lock is not None else threading.Lock()
        self.matchmaking_time = matchmaking_time
        if request_timeout is None:  # hivemind: above the matchmaking time, matchmaking may deadlock
            request_timeout = min(3.0, matchmaking_time / 2)
        params = self._params()
        if not params:
            raise AveragingError(f"stage {stage}'s module has no parameters to average")
        self._anchor = [p.detach().clone() for p in params]  # previous round's snapshot + its averaging shift
        self.last_round: int | None = None
        self.last_delta: torch.Tensor | None = None  # the round's update Δ: snapshot - anchor (flat fp32)
        self.last_commitment = None  # this averager commits nothing (checks off): the settler commits Δ itself
        # one flat buffer, not a tensor per parameter: hivemind re-declares the averager on the DHT after every
        # averaged tensor, and a burst of such stores backs up the DHT process's request pipe
        self._averager = _StageAveragerProcess(
            [torch.zeros(sum(p.numel() for p in params), dtype=torch.float32)],
            dht,
            start=False,
            prefix=self.prefix,
            target_group_size=target_group_size,
            min_group_size=2,
            min_matchmaking_time=matchmaking_time,
            request_timeout=request_timeout,
            next_chunk_timeout=next_chunk_timeout,  # a peer silent this long is dropped from the all-reduce
            allreduce_timeout=allreduce_timeout,
            compression=compression_for(compression),
            declare_state_period=DECLARE_STATE_PERIOD,
        )
        self._averager.state_provider = self._current_state
        self._started = False
        if start:
            self.start()

    def start(self, timeout: float = 60.0) -> None:
        """Start the averager's process (it joins the DHT's p2pd); raises AveragingError if it does not come up."""
        if self._started:
            return
        self._started = True
        try:
            self._averager.run_in_background(await_ready=True, timeout=timeout)
        except Exception as exc:
            self.shutdown()
            raise AveragingError(f"stage {self.stage}'s averager did not start: {exc}") from exc
        self._await_own_declaration(timeout=min(timeout, 10.0))

    def _await_own_declaration(self, timeout: float) -> None:
        """Return once this averager is visible to the stage's others (else a peer stepping at once thinks it alone)."""
        deadline = time.monotonic() + timeout
        me = self.dht.peer_id.to_bytes()
        while time.monotonic() < deadline:
            if me in self._declared_averagers():
                return
            time.sleep(0.1)
        logger.warning("stage %d: averager not yet visible on the DHT after %.0f s", self.stage, timeout)

    @property
    def peer_id(self) -> str:
        return self.dht.peer_id.to_base58()

    def _params(self) -> list[torch.Tensor]:
        return [p for p in self.module.parameters()]

    def _current_state(self) -> tuple[dict, list[torch.Tensor]]:
        with self.lock, torch.no_grad():
            tensors = [p.detach().clone() for p in self._params()]
        return {"stage": self.stage, "round": self.last_round}, tensors

    def other_peers(self) -> int:
        """How many other averagers of this stage have declared themselves on the DHT (live within ~10 s)."""
        return len(self._declared_averagers() - {self.dht.peer_id.to_bytes()})

    def _declared_averagers(self) -> set[bytes]:
        found = self.dht.get(f"{self.prefix}.all_averagers", latest=True)
        if found is None or not isinstance(found.value, dict):
            return set()
        now = get_dht_time()
        return {
            subkey
            for subkey, item in found.value.items()
            if isinstance(subkey, bytes) and item.value is not None and item.expiration_time >= now
        }

    def step(self, round: int, timeout: float, stop: threading.Event | None = None) -> RoundResult:
        """Average this stage's parameters with the stage's other peers in `round`; never raises on a failed round.

        Returns after the all-reduce (or once `timeout` seconds pass without a group: the round is skipped and the
        local parameters are kept). `stop` is accepted for the verified averager's interface and not used: hivemind's
        step ends by its own timeout.
        """
        if not self._started:
            raise AveragingError("this StageAverager is shut down (or was never started); make a new one")
        round_group_bits(round)  # a negative round is the caller's error: raise before touching anything
        started = time.monotonic()
        sent0, received0 = self._wire_counts()
        with self.lock, torch.no_grad():
            snapshot = [p.detach().clone() for p in self._params()]
        self.last_delta = _flatten([s - a for s, a in zip(snapshot, self._anchor)])
        update_norm = float(self.last_delta.norm())
        group_size, shift = 1, [torch.zeros_like(s) for s in snapshot]
        if self.other_peers() == 0:
            logger.info(
                "stage %d round %d: no other peer serves this stage; skipping averaging", self.stage, round
            )
        else:
            group_size, shift = self._all_reduce(round, snapshot, timeout)
        shift_norm = _norm(shift)
        # Δ of the next round starts here, so the local steps taken while this round averaged belong to it
        self._anchor = [s + d for s, d in zip(snapshot, shift)]
        self.last_round = round
        self._set_sharing_priority()
        seconds = time.monotonic() - started
        sent1, received1 = self._settled_wire_counts() if group_size > 1 else (sent0, received0)
        return RoundResult(
            round=round,
            group_size=group_size,
            averaged=group_size > 1,
            bytes_sent=sent1 - sent0,
            bytes_received=received1 - received0,
            seconds=seconds,
            update_norm=update_norm,
            shift_norm=shift_norm,
        )

    def _all_reduce(self, r: int, snapshot: list[torch.Tensor], timeout: float) -> tuple[int, list[torch.Tensor]]:
        none = [torch.zeros_like(s) for s in snapshot]
        self._averager.set_group_bits(round_group_bits(r))
        with self._averager.get_tensors() as (buffer,):
            buffer.copy_(_flatten(snapshot))
        timeout = max(timeout, self.matchmaking_time + 1.0)
        try:
            gathered = self._averager.step(gather={"round": r}, timeout=timeout, allow_retries=True)
        except Exception as exc:  # noqa: BLE001 - hivemind raises many types; a failed round only skips it
            logger.warning(
                "stage %d round %d: averaging failed (%s); keeping local parameters", self.stage, r, exc
            )
            return 1, none
        if not gathered:
            logger.warning(
                "stage %d round %d: no averaging group formed; keeping local parameters", self.stage, r
            )
            return 1, none
        rounds = {v.get("round") if isinstance(v, dict) else None for v in gathered.values()}
        if rounds != {r}:
            logger.warning(
                "stage %d round %d: group reported rounds %s", self.stage, r, sorted(map(str, rounds))
            )
        with self._averager.get_tensors() as (buffer,):
            averaged = _unflatten(buffer.clone(), snapshot)
        shift = [a - s for a, s in zip(averaged, snapshot)]
        with self.lock, torch.no_grad():
            for p, d in zip(self._params(), shift):
                p.add_(d.to(p.dtype))
        return len(gathered), shift

    def load_state_from_peers(self, timeout: float = 30.0) -> bool:
        """Download this stage's current parameters from a peer serving it; False if none answered in time."""
        try:
            loaded = self._averager.load_state_from_peers(timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - a timeout, or a peer's broken stream
            logger.warning("stage %d: could not download parameters from peers: %s", self.stage, exc)
            return False
        if loaded is None:
            return False
        metadata, tensors = loaded
        params = self._params()
        if len(tensors) != len(params) or any(t.shape != p.shape for t, p in zip(tensors, params)):
            logger.warning("stage %d: a peer sent parameters of another shape; ignoring them", self.stage)
            return False
        with self.lock, torch.no_grad():
            for p, t in zip(params, tensors):
                p.copy_(t.to(p.dtype))
            self._anchor = [p.detach().clone() for p in params]
        if isinstance(metadata, dict) and isinstance(metadata.get("round"), int):
            self.last_round = metadata["round"]
        self._set_sharing_priority()
        logger.info("stage %d: downloaded parameters (round %s) from a peer", self.stage, self.last_round)
        return True

    def _set_sharing_priority(self) -> None:
        """Joiners download from the peer whose parameters saw the latest round; a fresh averager (0) comes last."""
        self._averager.state_sharing_priority = (
            float(self.last_round + 1) if self.last_round is not None else 0.5
        )

    def _settled_wire_counts(self, settle: float = 0.05, limit: float = 1.0) -> tuple[int, int]:
        """Counts once they stop moving: as a reducer this peer may still be sending others their averaged parts."""
        deadline = time.monotonic() + limit
        counts = self._wire_counts()
        while time.monotonic() < deadline:
            time.sleep(settle)
            latest = self._wire_counts()
            if latest == counts:
                break
            counts = latest
        return counts

    def _wire_counts(self) -> tuple[int, int]:
        try:
            return self._averager.wire_counts()
        except Exception:  # noqa: BLE001 - a dead averager process: counts unknown, not fatal
            return 0, 0

    def shutdown(self) -> None:
        """Stop the averager's process (idempotent); the module keeps its current parameters."""
        if self._started and self._averager.is_alive():
            self._averager.shutdown()
            self._averager.join(timeout=10.0)
            if self._averager.is_alive():
                logger.warning("stage %d: averager process did not stop; killing it", self.stage)
                self._averager.kill()
                self._averager.join(timeout=5.0)
        self._started = False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def _norm(tensors: list[torch.Tensor]) -> float:
    return float(torch.sqrt(sum((t.double() ** 2).sum() for t in tensors))) if tensors else 0.0


def _flatten(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1).float() for t in tensors])


def _unflatten(flat: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
    out, offset = [], 0
    for t in like:
        out.append(flat[offset : offset + t.numel()].reshape(t.shape).to(t.dtype))
        offset += t.numel()
    return out
