"""Background proving: a peer hands the last round's commitment over and keeps training while it is proved.

One thread owns the ZoKrates worker (started from that thread, so PR_SET_PDEATHSIG follows it) and works
through a queue of jobs; each job's result is a `concurrent.futures.Future` (awaitable with `prove_async`).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from swarm.contribution import Contribution
from zk.chunk_prover import ChunkProver
from zk.circuit import DEFAULT_PARAMS, CircuitParams
from zk.commit import Commitment
from zk.keys import KEYS_ROOT
from zk.prover import DEFAULT_TIMEOUT, ProofError, ZkWorker

logger = logging.getLogger(__name__)

READY_TIMEOUT = 1800.0  # the first start may compile and set up the circuit


@dataclass
class ProofJob:
    """Prove `chunks` of `commitment` for one (experiment, round, stage, peer) claim."""

    commitment: Commitment
    experiment: int
    round: int
    stage: int
    peer: str
    chunks: list[int]
    norm_bound: int
    future: Future[list[Contribution]] = field(default_factory=Future)


class BackgroundProver:
    """Proves jobs one after another in a thread of its own; `shutdown()` stops it on every path."""

    def __init__(self, params: CircuitParams = DEFAULT_PARAMS, keys_root: Path = KEYS_ROOT,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self.params, self.keys_root, self.timeout = params, keys_root, timeout
        self._jobs: queue.Queue[ProofJob | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._worker: ZkWorker | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._stopping = False

    def start(self) -> Self:
        """Start the thread and wait until the worker runs and the keys are loaded (or raise ProofError)."""
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._run, name="zk-background-prover", daemon=True)
        self._thread.start()
        if not self._ready.wait(READY_TIMEOUT):
            self.shutdown()
            raise ProofError(f"the background prover was not ready within {READY_TIMEOUT:.0f} s")
        if self._startup_error is not None:
            err = self._startup_error
            self.shutdown()
            raise ProofError(f"the background prover could not start: {err}") from err
        return self

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def submit(self, commitment: Commitment, *, experiment: int, round: int, stage: int, peer: str,
               chunks: list[int], norm_bound: int) -> Future[list[Contribution]]:
        """Queue a job and return at once; the future holds one Contribution per distinct chunk."""
        if self._thread is None or self._stopping:
            raise ProofError("the background prover is not running; start() it first")
        job = ProofJob(commitment, experiment, round, stage, peer, list(chunks), norm_bound)
        self._jobs.put(job)
        return job.future

    async def prove_async(self, commitment: Commitment, **job: object) -> list[Contribution]:
        """`submit` for asyncio code: awaits the proofs without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(commitment, **job))  # type: ignore[arg-type]

    @property
    def pending(self) -> int:
        return self._jobs.qsize()

    def shutdown(self) -> None:
        """Cancel queued jobs, stop the worker (a proof in progress fails with ProofError), join the thread."""
        self._stopping = True
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.future.cancel()
        self._jobs.put(None)
        if self._worker is not None:
            self._worker.shutdown()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        worker = ZkWorker(timeout=self.timeout)
        try:
            self._worker = worker.start()
            prover = ChunkProver(worker, self.params, self.keys_root)
        except Exception as exc:  # noqa: BLE001 (reported to start())
            self._startup_error = exc
            worker.shutdown()
            self._ready.set()
            return
        self._ready.set()
        try:
            while (job := self._jobs.get()) is not None:
                if self._stopping:
                    job.future.cancel()
                    continue
                if not job.future.set_running_or_notify_cancel():
                    continue
                try:
                    result = prover.prove_chunks(job.commitment, job.chunks, experiment=job.experiment,
                                                 round=job.round, stage=job.stage, peer=job.peer,
                                                 norm_bound=job.norm_bound)
                except Exception as exc:  # noqa: BLE001 (the future carries any failure)
                    logger.warning("proof of round %d stage %d failed: %s", job.round, job.stage, exc)
                    job.future.set_exception(exc)
                else:
                    job.future.set_result(result)
        finally:
            worker.shutdown()
