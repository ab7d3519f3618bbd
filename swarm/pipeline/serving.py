"""Serve one pipeline stage over hivemind's P2P: forward/backward RPCs, local optimizer steps, DHT announcements.

Calls are unary protobuf RPCs (hivemind's `ExpertRequest`/`ExpertResponse`) on the DHT's own p2pd, named
`"{experiment}.s{stage}.forward"` and `".backward"`; backward carries the stage input again (stateless, so any
peer of the stage can answer it). A stage peer re-announces itself on the DHT every few seconds.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import hivemind
import torch
from hivemind.compression import deserialize_torch_tensor, serialize_torch_tensor
from hivemind.p2p import P2PContext
from hivemind.p2p.p2p_daemon_bindings.control import DEFAULT_MAX_MSG_SIZE
from hivemind.proto import runtime_pb2
from torch import nn

from runtime.loops import StartStop
from swarm.models import Workload
from swarm.network.p2p import P2PClient
from swarm.network.records import StageAnnouncement, announce_stage
from swarm.pipeline.stage_worker import StageWorker

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = DEFAULT_MAX_MSG_SIZE - 64 * 1024  # p2pd's unary limit, minus room for the envelope
CALL_TIMEOUT = 30.0


class ServingError(RuntimeError):
    """The stage server could not start, or a request it got is malformed."""


class RequestRejected(ServingError):
    """The peer is fine but the request is not (wrong shape, wrong stage's input): retrying elsewhere won't help."""


def handler_name(experiment: str, stage: int, kind: Literal["forward", "backward"]) -> str:
    return f"{experiment}.s{stage}.{kind}"


def pack_tensors(uid: str, tensors: list[torch.Tensor], cls=runtime_pb2.ExpertRequest):
    """A request/response carrying `tensors` uncompressed; too large a message is a clear error, not a hang."""
    msg = cls(tensors=[serialize_torch_tensor(t.detach()) for t in tensors])
    if cls is runtime_pb2.ExpertRequest:
        msg.uid = uid
    size = msg.ByteSize()
    if size > MAX_MESSAGE_BYTES:
        raise RequestRejected(
            f"a {uid} message of {size / 2**20:.1f} MiB exceeds p2pd's {MAX_MESSAGE_BYTES / 2**20:.1f} MiB limit: "
            "use a smaller micro-batch"
        )
    return msg


def unpack_tensors(msg, expected: int, what: str) -> list[torch.Tensor]:
    if len(msg.tensors) != expected:
        raise ServingError(f"{what} must carry {expected} tensor(s), got {len(msg.tensors)}")
    try:
        return [deserialize_torch_tensor(t) for t in msg.tensors]
    except Exception as exc:  # protobuf/numpy errors on garbage
        raise ServingError(f"{what} carries a tensor that cannot be decoded: {exc}") from exc


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
    ) -> None:
        self.dht, self.experiment, self.workload, self.stage = dht, experiment, workload, stage
        self.wallet = wallet
        self.worker = StageWorker(module, lr=lr, optimizer=optimizer, device=device)
        self.announce_period = announce_period
        self.params_version = 0  # set by the averager: the round whose parameters this peer serves
        self.bytes_received = self.bytes_sent = self.requests = self.errors = 0
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
        self.worker.replace_module(module)
        self.stage = stage
        self._client.run(self._register(stage), CALL_TIMEOUT)
        self.announce()
        logger.info("switched from stage %d to stage %d", old, stage)

    def shutdown(self) -> None:
        """Stop answering, stop announcing, release the p2pd client (the record expires after `ttl`)."""
        client, self._client = self._client, None
        if client is not None:
            client.close(before=self._unregister(self.stage))
        self._compute.shutdown(wait=True, cancel_futures=True)

    async def _register(self, stage: int) -> None:
        for kind, handler in (("forward", self._forward), ("backward", self._backward)):
            await self._client.p2p.add_protobuf_handler(
                handler_name(self.experiment, stage, kind), handler, runtime_pb2.ExpertRequest
            )

    async def _unregister(self, stage: int) -> None:
        for kind in ("forward", "backward"):
            await self._client.p2p.remove_protobuf_handler(handler_name(self.experiment, stage, kind))

    async def _announce_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.announce_period)
            try:
                await loop.run_in_executor(None, self.announce)
            except Exception as exc:  # noqa: BLE001 - a failed store is retried next period
                logger.warning("stage %d: announcing failed: %r", self.stage, exc)

    async def _forward(self, request: runtime_pb2.ExpertRequest, context: P2PContext) -> runtime_pb2.ExpertResponse:
        self.in_flight += 1
        try:
            (x,) = self._accept(request, 1, "forward")
            y = await self._run(self.worker.forward, x)
            return self._reply(request.uid, [y])
        finally:
            self.in_flight -= 1

    async def _backward(
        self, request: runtime_pb2.ExpertRequest, context: P2PContext
    ) -> runtime_pb2.ExpertResponse:
        self.in_flight += 1
        try:
            x, grad_output = self._accept(request, 2, "backward")
            grad_input = await self._run(self.worker.backward, x, grad_output)
            return self._reply(request.uid, [] if grad_input is None else [grad_input])
        finally:
            self.in_flight -= 1

    def _accept(self, request: runtime_pb2.ExpertRequest, n: int, kind: str) -> list[torch.Tensor]:
        self.requests += 1
        self.bytes_received += request.ByteSize()
        expected = handler_name(self.experiment, self.stage, kind)
        if request.uid != expected:  # e.g. this peer switched stages: the caller should try another peer
            self.errors += 1
            raise ServingError(f"request for {request.uid!r} reached the handler of {expected!r}")
        try:
            return unpack_tensors(request, n, f"a {kind} request")
        except ServingError as exc:
            self.errors += 1
            raise RequestRejected(str(exc)) from exc

    async def _run(self, fn, *args):
        try:
            return await asyncio.get_running_loop().run_in_executor(self._compute, fn, *args)
        except Exception as exc:
            self.errors += 1
            logger.info("stage %d: rejected a request: %s", self.stage, exc)
            raise RequestRejected(f"stage {self.stage} could not process the request: {exc}") from exc

    def _reply(self, uid: str, tensors: list[torch.Tensor]) -> runtime_pb2.ExpertResponse:
        response = pack_tensors(uid, tensors, runtime_pb2.ExpertResponse)
        self.bytes_sent += response.ByteSize()
        return response

