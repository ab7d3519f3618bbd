"""Serve one pipeline stage over hivemind's P2P: forward/backward RPCs, local optimizer steps, DHT announcements.

Calls are unary protobuf RPCs (hivemind's `ExpertRequest`/`ExpertResponse`, see `swarm.pipeline.wire`) on the
DHT's own p2pd, named `"{experiment}.s{stage}.forward"` and `".backward"`. A handler answers every request it can
read with a status (ok, rejected, busy, wrong_stage, missing, error) instead of raising, so the router can tell
a bad input from a failing peer. A stage peer re-announces itself on the DHT every few seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import hivemind
import torch
from hivemind.p2p import P2PContext
from hivemind.proto import runtime_pb2
from torch import nn

from runtime.loops import StartStop
from swarm.errors import SwarmError
from swarm.models import Workload
from swarm.network.p2p import P2PClient
from swarm.network.records import StageAnnouncement, announce_stage
from swarm.pipeline import wire
from swarm.pipeline.stage_worker import InvalidInput, MissingActivations, OverMemoryCap, StageWorker
from swarm.pipeline.wire import Status

logger = logging.getLogger(__name__)

CALL_TIMEOUT = 30.0
MAX_QUEUE = 64  # requests queued or computing beyond which a peer answers "busy"


class ServingError(SwarmError):
    """The stage server could not start or switch stages."""


class _StageSwitched(Exception):
    """The request was accepted for a stage this peer no longer serves."""


def handler_name(experiment: str, stage: int, kind: Literal["forward", "backward"]) -> str:
    return f"{experiment}.s{stage}.{kind}"


class StageServer(StartStop):
    """Serves `module` as stage `stage` of `experiment` to any trainer; use as a context manager or start/shutdown."""

    def __init__(
        self,
        dht: hivemind.DHT,
        experiment: str,
        workload: Workload,
        stage: int,
        module: nn.Module,
        *,
        lr: float,
        wallet: str | None = None,
        optimizer: str = "adam",
        announce_period: float = 5.0,
        device: str = "cpu",
        max_queue: int = MAX_QUEUE,
    ) -> None:
        self.dht, self.experiment, self.workload, self.stage = dht, experiment, workload, stage
        self.wallet = wallet
        self.worker = StageWorker(module, lr=lr, optimizer=optimizer, device=device)
        self.announce_period, self.max_queue = announce_period, max_queue
        self.params_version = 0  # set by the averager: the round whose parameters this peer serves
        self.bytes_received = self.bytes_sent = self.requests = self.errors = 0
        self.answers: dict[Status, int] = dict.fromkeys(Status, 0)  # how requests were answered, by status
        self.compute_seconds = 0.0  # time spent computing answered requests
        self.in_flight = 0  # requests received and not yet answered (queued or computing): the announced load
        self._client: P2PClient | None = None
        self._compute = ThreadPoolExecutor(1, thread_name_prefix=f"stage{stage}-compute")
        self._announcer = None

    @property
    def module(self) -> nn.Module:
        return self.worker.module

    @property
    def params_lock(self):
        """Hold this while reading or writing the parameters outside the server (the averager does)."""
        return self.worker.params_lock

    @property
    def peer_id(self) -> str:
        return self.dht.peer_id.to_base58()

    @property
    def ttl(self) -> float:
        return 3 * self.announce_period

    def start(self) -> None:
        """Register the RPC handlers on the DHT's p2pd and announce this stage (returns once announced)."""
        if self._client is not None:
            return
        self._client = P2PClient(self.dht, f"stage{self.stage}-server", CALL_TIMEOUT)
        try:
            self._client.run(self._register(self.stage), CALL_TIMEOUT)
            if not self.announce():
                logger.warning("stage %d: first announcement was not stored; will retry", self.stage)
            self._announcer = self._client.loop.submit(self._announce_forever())
        except BaseException:
            self.shutdown()
            raise
        logger.info("serving stage %d of %s as %s", self.stage, self.experiment, self.peer_id)

    def announcement(self) -> StageAnnouncement:
        return StageAnnouncement(
            peer_id=self.peer_id,
            stage=self.stage,
            throughput=self.worker.throughput,
            load=self.in_flight,
            params_version=self.params_version,
            wallet=self.wallet,
            max_batch=self.worker.max_batch,
        )

    def announce(self) -> bool:
        """Store this peer's stage record on the DHT now (also done every `announce_period` seconds)."""
        return announce_stage(self.dht, self.experiment, self.announcement(), ttl=self.ttl)

    def switch_stage(self, stage: int, module: nn.Module) -> None:
        """Serve another stage (rebalancing): swap handlers and module, announce the new stage."""
        if self._client is None:
            raise ServingError("start the server before switching stages")
        old = self.stage
        self._client.run(self._unregister(old), CALL_TIMEOUT)
        with (
            self.params_lock
        ):  # a request accepted for the old stage and not yet computed answers wrong_stage
            self.worker.replace_module(module)
            self.stage = stage
        self._client.run(self._register(stage), CALL_TIMEOUT)
        self.announce()
        logger.info("switched from stage %d to stage %d", old, stage)

    def shutdown(self) -> None:
        """Stop answering, stop announcing, release the p2pd client (the record expires after `ttl`)."""
        client, self._client = self._client, None
        if client is not None:
            client.close(before=self._unregister(self.stage, client))
        self._compute.shutdown(wait=True, cancel_futures=True)

    async def _register(self, stage: int) -> None:
        for kind, handler in (("forward", self._forward), ("backward", self._backward)):
            await self._client.p2p.add_protobuf_handler(
                handler_name(self.experiment, stage, kind), handler, runtime_pb2.ExpertRequest
            )

    async def _unregister(self, stage: int, client: P2PClient | None = None) -> None:
        """Remove the stage's handlers (`client`: the one being closed, when `self._client` is already cleared)."""
        p2p = (client or self._client).p2p
        for kind in ("forward", "backward"):
            await p2p.remove_protobuf_handler(handler_name(self.experiment, stage, kind))

    async def _announce_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.announce_period)
            try:
                await loop.run_in_executor(None, self.announce)
            except Exception as exc:  # noqa: BLE001 - a failed store is retried next period
                logger.warning("stage %d: announcing failed: %r", self.stage, exc)

    async def _forward(
        self, request: runtime_pb2.ExpertRequest, context: P2PContext
    ) -> runtime_pb2.ExpertResponse:
        return await self._serve(request, "forward")

    async def _backward(
        self, request: runtime_pb2.ExpertRequest, context: P2PContext
    ) -> runtime_pb2.ExpertResponse:
        return await self._serve(request, "backward")

    async def _serve(self, request: runtime_pb2.ExpertRequest, kind: str) -> runtime_pb2.ExpertResponse:
        """Answer one request with its outputs or a status; never raises for a request it could read."""
        self.in_flight += 1
        self.requests += 1
        self.bytes_received += request.ByteSize()
        try:
            stage = self.stage
            expected = handler_name(self.experiment, stage, kind)
            if request.uid != expected:  # this peer switched stages while the request travelled
                return self._status(
                    Status.WRONG_STAGE, f"{request.uid!r} reached the handler of {expected!r}"
                )
            if self.in_flight > self.max_queue:
                return self._status(Status.BUSY, f"{self.in_flight - 1} requests queued")
            arrived = time.perf_counter()
            try:
                meta = wire.metadata(request)
                tensors = wire.unpack(request, None, f"a {kind} request")
                call = self._parse(kind, tensors, meta)
            except (wire.WireError, InvalidInput) as exc:
                return self._status(Status.REJECTED, str(exc))
            submitted = time.perf_counter()
            try:
                outputs, started, ended, cpu = await asyncio.get_running_loop().run_in_executor(
                    self._compute, self._compute_for, stage, *call
                )
            except OverMemoryCap as exc:  # another peer of the stage may have the memory: the router tries it
                return self._status(Status.BUSY, str(exc))
            except InvalidInput as exc:
                return self._status(Status.REJECTED, str(exc))
            except MissingActivations as exc:
                return self._status(Status.MISSING, str(exc.args[0]))
            except _StageSwitched:
                return self._status(
                    Status.WRONG_STAGE, f"this peer switched from stage {stage} to {self.stage}"
                )
            except Exception as exc:  # noqa: BLE001 - a compute failure is this peer's fault: the router bans it
                logger.warning("stage %d: %s failed: %r", stage, kind, exc)
                return self._status(
                    Status.ERROR, f"stage {stage} failed to compute: {type(exc).__name__}: {exc}"
                )
            try:
                response = wire.pack(
                    runtime_pb2.ExpertResponse, outputs, codec=str(meta.get("codec", "none"))
                )
            except wire.WireError as exc:
                return self._status(Status.ERROR, str(exc))
            timing = {
                "queue_s": started - submitted,
                "compute_s": ended - started,
                "cpu_s": cpu,  # CPU time of the compute thread: compute_s minus this = waiting for a core
                "codec_s": (submitted - arrived) + (time.perf_counter() - ended),  # decode + encode
            }
            response.metadata = wire.msgpack.packb({"status": str(Status.OK), **timing})
            self.compute_seconds += timing["compute_s"]
            self.answers[Status.OK] += 1
            self.bytes_sent += response.ByteSize()
            return response
        finally:
            self.in_flight -= 1

    def _parse(self, kind: str, tensors: list[torch.Tensor], meta: dict) -> tuple:
        """What to compute for a request: (function, args, kwargs)."""
        mb = meta.get("mb")
        if kind == "forward" and meta.get(
            "loss"
        ):  # the last stage's whole step, against the targets sent along
            if len(tensors) != 2:
                raise InvalidInput(
                    f"a forward-with-loss request must carry (input, targets), got {len(tensors)}"
                )
            return self.worker.forward_loss, tensors, {"loss_fn": self.workload.loss}
        if kind == "forward":
            if len(tensors) != 1:
                raise InvalidInput(f"a forward request must carry 1 tensor, got {len(tensors)}")
            return self.worker.forward, tensors, {"keep": mb if meta.get("keep") else None}
        if len(tensors) == 1 and mb is not None:  # the gradient only: the peer kept the activations
            return self.worker.backward, [None, tensors[0]], {"key": mb}
        if len(tensors) != 2:
            raise InvalidInput(
                f"a backward request must carry (input, gradient), got {len(tensors)} tensor(s)"
            )
        return self.worker.backward, tensors, {"key": mb}

    def _compute_for(
        self, stage: int, fn, args: list, kwargs: dict
    ) -> tuple[list[torch.Tensor], float, float, float]:
        """(outputs, start, end, CPU seconds) of the compute on this thread (times from `time.perf_counter`; the
        CPU time from `time.thread_time`, so a stage that waited for a core shows compute above its CPU time)."""
        started, cpu_started = time.perf_counter(), time.thread_time()
        with self.params_lock:
            if self.stage != stage:
                raise _StageSwitched
            out = fn(*args, **kwargs)
        outputs = list(out) if isinstance(out, tuple) else [out]  # forward_loss answers (loss, grad)
        return [t for t in outputs if t is not None], started, time.perf_counter(), time.thread_time() - cpu_started

    def _status(self, status: Status, detail: str) -> runtime_pb2.ExpertResponse:
        self.errors += 1
        self.answers[status] += 1
        logger.info("stage %d: answered %s: %s", self.stage, status, detail)
        response = wire.status_reply(status, detail)
        self.bytes_sent += response.ByteSize()
        return response
