"""Background proving: a peer hands the last round's commitment over and keeps training while it is proved.

Each of `workers` threads owns one ZoKrates worker (started from that thread, so PR_SET_PDEATHSIG follows
it) and takes chunk proofs from a shared queue; a job's result is a `concurrent.futures.Future` (awaitable
with `prove_async`) that resolves when all its chunks are proved. With `backend="groth16py"` the worker only
computes witnesses and each thread proves natively in-process (GIL released; the proving key is loaded once
and shared), ~5x fewer CPU-seconds per chunk than zokrates-js (BENCHMARKS.md, zk); one thread per core.

Strict mode (`strict=True`, a stage peer's `--strict-proofs`): the first job of each (round, stage, root) also
queues proofs of every other chunk of that commitment, at a lower priority than any plain job, so the
contribution's chunk c0 and the audited chunks are never kept waiting by them; a later job for a chunk the strict
pass has proven is answered from it. When the next round's commitment arrives, what is left of the previous
round's strict pass is dropped (the backlog stays bounded) and `on_strict` hears how far it got (`StrictReport`:
whether strict proving keeps up with the rounds).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from protocol.contribution import Contribution
from zk.backends import DEFAULT_BACKEND, check_backend
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
    deadline: float = float("inf")  # unix time after which the proofs are useless (a window closed)
    future: Future[list[Contribution]] = field(default_factory=Future)
    _results: dict[int, Contribution] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, chunk: int, proof: Contribution) -> None:
        with self._lock:
            self._results[chunk] = proof
            if len(self._results) == len(self.chunks) and not self.future.done():
                self.future.set_result([self._results[c] for c in self.chunks])

    def fail(self, exc: BaseException) -> None:
        with self._lock:
            if not self.future.done():
                self.future.set_exception(exc)


Task = tuple[ProofJob, int]  # one chunk of one job
URGENT, STRICT = 0, 1  # queue priorities: plain jobs (c0, audits) before strict-mode proofs
# Within a priority, the earliest deadline first: an audit answer due before the next round's c0 goes first, so a
# backlog of contributions cannot make an honest peer miss an audit window (and be slashed); a job whose deadline
# has passed is failed instead of proved (its window is closed, the proof would be wasted CPU).
KEPT_PASSES = 4  # strict passes whose proofs still answer later jobs (audits come rounds after c0)


def _key(job: ProofJob) -> tuple:
    return job.round, job.stage, job.commitment.root, job.peer


@dataclass(frozen=True)
class StrictReport:
    """How far one round's strict pass got: `proven` of `chunks` in `seconds`; `complete` False if the next
    round's commitment came first (the rest was dropped) or a proof failed."""

    round: int
    stage: int
    chunks: int
    proven: int
    seconds: float
    complete: bool


def log_strict(report: StrictReport) -> None:
    if report.complete:
        logger.info("strict proofs, round %d stage %d: all %d chunks proven in %.1f s", report.round, report.stage,
                    report.chunks, report.seconds)
    else:
        logger.warning("strict proofs, round %d stage %d: %d of %d chunks proven in %.1f s, the rest dropped (the "
                       "prover does not keep up)", report.round, report.stage, report.proven, report.chunks,
                       report.seconds)


class BackgroundProver:
    """Proves queued jobs in `workers` threads, one ZoKrates worker each; `shutdown()` stops all on every path."""

    def __init__(self, params: CircuitParams = DEFAULT_PARAMS, keys_root: Path = KEYS_ROOT,
                 timeout: float = DEFAULT_TIMEOUT, workers: int = 1, backend: str = DEFAULT_BACKEND,
                 key_dir: Path | None = None, strict: bool = False,
                 on_strict: Callable[[StrictReport], None] = log_strict) -> None:
        if workers < 1:
            raise ProofError(f"a background prover needs at least one worker, got {workers}")
        self.params, self.keys_root, self.timeout, self.workers = params, keys_root, timeout, workers
        self.backend, self.key_dir = check_backend(backend), key_dir
        self.strict, self.on_strict = strict, on_strict
        self._strict_job: ProofJob | None = None  # the newest round's strict pass: the one whose tasks are queued
        self._passes: dict[tuple, ProofJob] = {}  # the last KEPT_PASSES passes by _key, to answer audits from
        self._seq = itertools.count()  # FIFO within a priority and deadline
        self._tasks: queue.PriorityQueue[tuple[int, float, int, Task | None]] = queue.PriorityQueue()
        self._threads: list[threading.Thread] = []
        self._zk_workers: list[ZkWorker] = []
        self._lock = threading.Lock()
        self._stopping = False

    def start(self) -> Self:
        """Start the threads, the first one alone (it may set the circuit up); raises ProofError if one fails."""
        if self._threads:
            return self
        for i in range(self.workers):
            ready, failure = threading.Event(), []
            thread = threading.Thread(target=self._run, args=(ready, failure), daemon=True,
                                      name=f"zk-background-prover-{i}")
            self._threads.append(thread)
            thread.start()
            if not ready.wait(READY_TIMEOUT) or failure:
                self.shutdown()
                why = failure[0] if failure else f"not ready within {READY_TIMEOUT:.0f} s"
                raise ProofError(f"the background prover could not start: {why}")
        return self

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def submit(self, commitment: Commitment, *, experiment: int, round: int, stage: int, peer: str,
               chunks: list[int], norm_bound: int, deadline: float | None = None) -> Future[list[Contribution]]:
        """Queue a job and return at once; the future holds one Contribution per distinct chunk, in order.

        `deadline` (unix time): jobs are proved earliest deadline first, and fail with ProofError once it passed.
        """
        if not self._threads or self._stopping:
            raise ProofError("the background prover is not running; start() it first")
        job = ProofJob(commitment, experiment, round, stage, peer, list(dict.fromkeys(chunks)), norm_bound,
                       float("inf") if deadline is None else float(deadline))
        job.future.set_running_or_notify_cancel()  # a queued proof cannot be cancelled, only shut down
        if not job.chunks:
            job.future.set_result([])
        strict = self._strict_for(job) if self.strict else None
        for chunk in job.chunks:
            done = strict._results.get(chunk) if strict is not None else None
            if done is not None:
                job.record(chunk, done)
            else:
                self._put(URGENT, (job, chunk))
        return job.future

    def _put(self, priority: int, task: Task | None) -> None:
        deadline = task[0].deadline if task is not None else float("-inf")
        self._tasks.put((priority, deadline, next(self._seq), task))

    def _strict_for(self, job: ProofJob) -> ProofJob | None:
        """The strict pass of this job's (round, stage, root, peer). The first job of a newer round starts one
        and drops what is left of the previous pass; a job of an older round (an audit) starts none, but is
        answered from its round's pass where that proved the chunk."""
        key = _key(job)
        with self._lock:
            if key in self._passes:
                return self._passes[key]
            current = self._strict_job
            if current is not None and job.round <= current.round:
                return None
            strict = ProofJob(job.commitment, job.experiment, job.round, job.stage, job.peer,
                              list(range(job.commitment.num_chunks)), job.norm_bound)
            strict.future.set_running_or_notify_cancel()
            self._strict_job, now = strict, time.perf_counter()
            self._passes[key] = strict
            while len(self._passes) > KEPT_PASSES:
                del self._passes[next(iter(self._passes))]
        if current is not None:  # reported by its own callback; its proofs still answer audits
            current.fail(ProofError("dropped: the next round's strict proofs started"))
        strict.future.add_done_callback(lambda f: self._report(strict, now, time.perf_counter()))
        for chunk in strict.chunks:  # a chunk some plain job proves first is skipped when its turn comes
            self._put(STRICT, (strict, chunk))
        return strict

    def _share(self, job: ProofJob, chunk: int, proof: Contribution) -> None:
        """A plain job's proof also counts for the strict pass of the same commitment."""
        strict = self._passes.get(_key(job))
        if strict is not None and strict is not job:
            strict.record(chunk, proof)

    def _report(self, strict: ProofJob, started: float, ended: float) -> None:
        if self._stopping:
            return
        proven = len(strict._results)  # no lock: this may run inside strict.record's
        report = StrictReport(strict.round, strict.stage, len(strict.chunks), proven, ended - started,
                              proven == len(strict.chunks))
        try:
            self.on_strict(report)
        except Exception:  # a listener's bug must not stop the prover
            logger.exception("on_strict failed")

    async def prove_async(self, commitment: Commitment, **job: object) -> list[Contribution]:
        """`submit` for asyncio code: awaits the proofs without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(commitment, **job))  # type: ignore[arg-type]

    @property
    def pending(self) -> int:
        """Chunk proofs queued and not started yet (strict-mode ones included)."""
        return self._tasks.qsize()

    def shutdown(self) -> None:
        """Fail queued jobs, stop the workers (a proof in progress fails with ProofError), join the threads."""
        self._stopping = True
        stopped = ProofError("the background prover was shut down before this proof was made")
        while True:
            try:
                *_, task = self._tasks.get_nowait()
            except queue.Empty:
                break
            if task is not None:
                task[0].fail(stopped)
        for _ in self._threads:
            self._put(-1, None)
        with self._lock:
            workers = list(self._zk_workers)
        for w in workers:
            w.shutdown()
        for thread in self._threads:
            thread.join()
        self._threads = []

    def _run(self, ready: threading.Event, failure: list[BaseException]) -> None:
        worker = ZkWorker(timeout=self.timeout)
        try:
            with self._lock:
                self._zk_workers.append(worker)
            prover = ChunkProver(worker.start(), self.params, self.keys_root, backend=self.backend,
                                 key_dir=self.key_dir)
        except Exception as exc:  # noqa: BLE001 (reported to start())
            failure.append(exc)
            worker.shutdown()
            ready.set()
            return
        ready.set()
        try:
            while (task := self._tasks.get()[-1]) is not None:
                job, chunk = task
                if self._stopping or job.future.done():
                    job.fail(ProofError("the background prover was shut down before this proof was made"))
                    continue
                if time.time() > job.deadline:
                    job.fail(ProofError(f"round {job.round} stage {job.stage}: the deadline of this proof passed "
                                        "before its turn (its window is closed)"))
                    continue
                if chunk in job._results:  # a strict-mode chunk a plain job has proven meanwhile
                    continue
                try:
                    proof = prover.prove(job.commitment, experiment=job.experiment, round=job.round,
                                         stage=job.stage, peer=job.peer, chunk=chunk, norm_bound=job.norm_bound)
                except Exception as exc:  # noqa: BLE001 (the future carries any failure)
                    logger.warning("proof of round %d stage %d chunk %d failed: %s", job.round, job.stage, chunk, exc)
                    job.fail(exc)
                else:
                    job.record(chunk, proof)
                    if self.strict:
                        self._share(job, chunk, proof)
        finally:
            worker.shutdown()
