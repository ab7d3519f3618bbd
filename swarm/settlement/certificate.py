"""Certified participation: a (round, stage) group co-signs which contributions it averaged (issue 13).

After a verified round (swarm/rounds/verified.py) every honest peer of the group knows the same set of peers whose
parts it checked and averaged, each with its committed root (`RoundResult.included_roots`: wallet -> root). Once
the round's submission window is over, the chain's `Contributed` events fix the (round, stage)'s contributors and
their roots. Each peer that is a contributor signs, with its wallet key (in memory only), one message:

    certificate_digest = keccak256(abi.encode(chainId, escrow, experimentId, round, stage, contributors, included))

(contributors in increasing address order; bit i of `included` set iff contributors[i]'s on-chain root is a root
the group averaged from that wallet), as an EIP-191 personal-sign hash, and gossips it (`MessageKind.CERTIFICATE`).
Honest peers compute the same message, so their signatures add up; once more than 2/3 of the contributors signed,
the peers ranked by `swarm.chain.batching.duty_order` send `SwarmCertifier.certify` in turn, one
INCLUSION_MARGIN apart, until the chain has it. A `requireCertificate` experiment pays only certified records: a
peer that committed and proved on chain but withheld its parts, was dropped, or sent a stale or different update
gets 0 (contracts/README.md, "Certified participation"; docs/protocol.md, "Paying only for useful work").
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
from eth_abi import encode
from eth_account.messages import _hash_eip191_message, encode_defunct
from eth_utils import keccak
from web3 import Web3

from swarm.chain.batching import duty_order
from swarm.chain.client import ChainClient
from swarm.chain.errors import ChainError, RevertError
from swarm.chain.safety import INCLUSION_MARGIN_S
from swarm.rounds.parts import digest_signer, sign_digest

logger = logging.getLogger(__name__)

MAX_CONTRIBUTORS = 256  # bits of the `included` bitmap: one group of at most 256 contributors per (round, stage)
CERT_QUEUE = 10_000  # gossiped signatures waiting for the certifier's step
DONE_ERRORS = {"AlreadyCertified"}  # someone else's certificate got in first
GIVE_UP_ERRORS = {"NotTheContributors", "BadSigner", "TooFewSigners", "UnknownExperiment"}


def certificate_hash(chain_id: int, escrow: str, experiment: int, round: int, stage: int,
                     contributors: Sequence[str], included: int) -> bytes:  # fmt: skip
    """keccak256(abi.encode(chainId, escrow, experimentId, round, stage, contributors, included)): what the
    group signs (EIP-191 personal-sign, so `SwarmCertifier.certificateDigest` is the prefixed hash of this)."""
    return keccak(encode(["uint256", "address", "uint256", "uint256", "uint256", "address[]", "uint256"],
                         [chain_id, Web3.to_checksum_address(escrow), experiment, round, stage,
                          [Web3.to_checksum_address(c) for c in contributors], included]))  # fmt: skip


def signed_digest(h: bytes) -> bytes:
    """The EIP-191 personal-sign hash of `h` (SwarmCertifier.certificateDigest)."""
    return bytes(_hash_eip191_message(encode_defunct(primitive=h)))


def sort_addresses(addresses: Iterable[str]) -> list[str]:
    """Checksummed, each once, in increasing numeric order (the order certify asks for)."""
    return sorted({Web3.to_checksum_address(a) for a in addresses}, key=lambda a: int(a, 16))


def included_bitmap(contributors: Sequence[str], onchain_roots: dict[str, int], averaged: dict[str, int]) -> int:
    """Bit i set iff contributors[i]'s root on chain is the root the group averaged from that wallet."""
    avg = {a.lower(): r for a, r in averaged.items()}
    bits = 0
    for i, c in enumerate(contributors):
        root = avg.get(c.lower())
        if root is not None and onchain_roots.get(c.lower()) == root:
            bits |= 1 << i
    return bits


def averaged_roots(report: Any) -> dict[str, int]:
    """wallet -> root of each peer whose checked parts the report's verified round averaged (`result.included`),
    from the commit records the averager holds for that round (VerifiedAverager keeps the last two rounds); {} for
    a round that was not verified or whose state is gone."""
    result = report.result
    if not getattr(result, "verified", False):
        return {}
    records = report.averager.records_of(report.round)
    if records is None:
        logger.warning("round %d: the averager no longer holds its records; nothing to certify", report.round)
        return {}
    included = set(result.included)
    return {rec.wallet: rec.root for p, rec in records.items() if p in included and rec.wallet}


@dataclass(frozen=True)
class CertificateSignature:
    """One contributor's signature of a (round, stage)'s certificate, as it travels on gossip (msgpack)."""

    round: int
    stage: int
    contributors: tuple[str, ...]
    included: int
    signature: bytes

    def to_bytes(self) -> bytes:
        return msgpack.packb({"round": self.round, "stage": self.stage, "contributors": list(self.contributors),
                              "included": self.included.to_bytes(32, "big"), "signature": self.signature},
                             use_bin_type=True)  # fmt: skip

    @classmethod
    def from_bytes(cls, data: bytes) -> CertificateSignature:
        """Raises ValueError on anything malformed."""
        try:
            d = msgpack.unpackb(data, raw=False)
            contributors = tuple(Web3.to_checksum_address(c) for c in d["contributors"])
            out = cls(round=int(d["round"]), stage=int(d["stage"]), contributors=contributors,
                      included=int.from_bytes(d["included"], "big"), signature=bytes(d["signature"]))  # fmt: skip
        except Exception as exc:
            raise ValueError(f"malformed certificate signature: {exc}") from exc
        if not 0 < len(out.contributors) <= MAX_CONTRIBUTORS or len(out.signature) != 65:
            raise ValueError("malformed certificate signature: bad sizes")
        return out


@dataclass
class Pending:
    """A (round, stage) we certify: our message and the signatures of it heard so far."""

    round: int
    stage: int
    contributors: tuple[str, ...]
    included: int
    digest: bytes  # certificate_hash: the signers sign its EIP-191 personal-sign hash
    signatures: dict[str, bytes] = field(default_factory=dict)  # signer (checksummed) -> 65-byte signature
    done: bool = False

    def enough(self) -> bool:
        return 3 * len(self.signatures) > 2 * len(self.contributors)

    def ordered(self) -> list[bytes]:
        return [self.signatures[s] for s in sort_addresses(self.signatures)]


class Certifier:
    """A stage peer's part in certifying its groups' rounds: collects what the verified rounds averaged (a round
    hook), signs and gossips each (round, stage) certificate once its submission window is over, keeps the
    signatures heard on gossip, and sends `certify` when its duty rank's turn comes.

    Driven by `step(now)` (the settler's loop calls it); `on_report` and `on_gossip` may be called from any thread
    (they only queue). `publish(body: bytes, round, stage)` sends our signature on gossip; `journal`, when given,
    keeps the messages and signatures, so a restart still submits."""

    def __init__(self, client: ChainClient, experiment: int, *, publish: Callable[[bytes, int, int], None] | None = None,
                 journal: Any = None, from_block: int = 0, chain_id: int | None = None) -> None:  # fmt: skip
        self.client = client
        self.experiment = experiment
        self.publish = publish
        self.journal = journal
        self.from_block = from_block
        self.chain_id = client.chain_id() if chain_id is None else chain_id
        self.me = Web3.to_checksum_address(client.address)
        self._averaged: dict[tuple[int, int], dict[str, int]] = {}  # (round, stage) -> wallet -> averaged root
        self._lock = threading.Lock()  # _averaged: written by the round hook's thread, read by step's
        self.pending: dict[tuple[int, int], Pending] = {}
        self._heard: queue.Queue = queue.Queue(CERT_QUEUE)
        self._early: dict[tuple[int, int], list[CertificateSignature]] = {}
        self.sent: list[tuple[int, int]] = []  # certificates this peer sent (tests, the demo's summary)
        if journal is not None:
            for key, data in journal.certificates().items():
                self._restore(key, data)

    # ----------------------------------------------------------------------------------------- inputs

    def on_report(self, round: int, stage: int, averaged: dict[str, int]) -> None:
        """The verified round's outcome: wallet -> root of each peer whose checked parts were averaged."""
        averaged = {Web3.to_checksum_address(w): int(r) for w, r in averaged.items()}
        with self._lock:
            self._averaged[(round, stage)] = averaged
        if self.journal is not None:  # a restart before the submission window closes still signs this round
            self.journal.put_certificate(round, stage, {"averaged": {w: r.to_bytes(32, "big")
                                                                     for w, r in averaged.items()}})  # fmt: skip

    def on_round(self, report: Any) -> None:
        """The round hook's report (swarm.apps.stage_peer.RoundReport): what its verified round averaged."""
        self.on_report(report.round, report.stage, averaged_roots(report))

    def on_gossip_message(self, msg: Any) -> None:
        """A GossipRelay listener: takes the CERTIFICATE messages (others are not ours)."""
        if getattr(msg.kind, "value", msg.kind) == "certificate":
            self.on_gossip(msg.body)

    def on_gossip(self, body: bytes) -> None:
        try:
            self._heard.put_nowait(body)
        except queue.Full:
            logger.warning("certificate queue full: a gossiped signature was dropped")

    # ------------------------------------------------------------------------------------------- step

    def step(self, now: int, state: Any) -> None:
        """One pass: sign the rounds whose submission window is over, take the gossip, send what is due.
        `state` is the experiment (ExperimentState)."""
        with self._lock:
            due = [k for k in self._averaged if now >= state.submission_end(k[0])]
        for key in due:
            if key in self.pending:  # signed before a restart: the journal had both
                with self._lock:
                    self._averaged.pop(key, None)
            else:
                self._sign(key)
        while True:
            try:
                body = self._heard.get_nowait()
            except queue.Empty:
                break
            self._take(body)
        for key, p in list(self.pending.items()):
            if now >= state.audit_end(p.round):  # finalize follows: nothing to do for it any more
                del self.pending[key]
                if self.journal is not None:
                    self.journal.drop_certificate(*key)
            elif not p.done and p.enough() and now >= self.duty_time(p, state):
                self._submit(p)
        for key in [k for k in self._early if now >= state.audit_end(k[0])]:
            del self._early[key]

    def duty_time(self, p: Pending, state: Any) -> int:
        """When this peer sends `certify` for `p`: the submission end, then one INCLUSION_MARGIN per duty rank
        (duty_order of the contributors, as for batches)."""
        order = duty_order(self.experiment, p.round, p.contributors)
        rank = order.index(self.me) if self.me in order else len(order)
        return state.submission_end(p.round) + rank * INCLUSION_MARGIN_S

    def _sign(self, key: tuple[int, int]) -> None:
        round, stage = key
        with self._lock:
            averaged = self._averaged[key]
        events = self.client.events("Contributed", self.from_block,
                                    where={"experimentId": self.experiment, "round": round})  # fmt: skip
        with self._lock:  # read: from here on the round is signed or not ours
            self._averaged.pop(key, None)
        roots = {e["peer"].lower(): int(e["root"]) for e in events if e["stage"] == stage}
        contributors = tuple(sort_addresses(roots))
        if self.me not in contributors or len(contributors) > MAX_CONTRIBUTORS:
            if self.journal is not None:
                self.journal.drop_certificate(round, stage)
            return  # not ours to sign (we did not contribute) or more than one bitmap's worth
        included = included_bitmap(contributors, roots, averaged)
        h = certificate_hash(self.chain_id, self.client.escrow_address, self.experiment, round, stage,
                             contributors, included)  # fmt: skip
        p = Pending(round=round, stage=stage, contributors=contributors, included=included, digest=h)
        p.signatures[self.me] = sign_digest(self.client.wallet.account, h)
        self.pending[key] = p
        self._save(p)
        if self.publish is not None:
            msg = CertificateSignature(round, stage, contributors, included, p.signatures[self.me])
            self.publish(msg.to_bytes(), round, stage)
        for early in self._early.pop(key, []):
            self._add(early)

    def _take(self, body: bytes) -> None:
        try:
            msg = CertificateSignature.from_bytes(body)
        except ValueError as exc:
            logger.info("dropped a gossiped certificate signature: %s", exc)
            return
        key = (msg.round, msg.stage)
        if key in self.pending:
            self._add(msg)
        elif key in self._averaged or len(self._early) < 1_000:
            self._early.setdefault(key, []).append(msg)  # heard before we signed: checked once we have ours

    def _add(self, msg: CertificateSignature) -> None:
        p = self.pending[(msg.round, msg.stage)]
        if p.done or (msg.contributors, msg.included) != (p.contributors, p.included):
            return  # another message than ours: it cannot add up with our signatures
        signer = digest_signer(p.digest, msg.signature)
        if signer is None or signer not in p.contributors or signer in p.signatures:
            return
        p.signatures[signer] = msg.signature
        self._save(p)

    def _submit(self, p: Pending) -> None:
        certified = self.client.events("Certified", self.from_block,
                                       where={"experimentId": self.experiment, "round": p.round})  # fmt: skip
        if any(e["stage"] == p.stage for e in certified):
            p.done = True  # already on chain (another peer's turn came first)
            self._save(p)
            return
        try:
            self.client.certify(self.experiment, p.round, p.stage, p.contributors, p.included, p.ordered())
            self.sent.append((p.round, p.stage))
            p.done = True
        except RevertError as exc:
            if exc.error_name in DONE_ERRORS or exc.error_name in GIVE_UP_ERRORS:
                logger.info("certificate of round %d stage %d: %s", p.round, p.stage, exc.error_name)
                p.done = True
            else:
                raise
        except ChainError as exc:
            logger.warning("certificate of round %d stage %d not sent: %s (retried)", p.round, p.stage, exc)
        self._save(p)

    # ------------------------------------------------------------------------------------------ journal

    def _save(self, p: Pending) -> None:
        if self.journal is not None:
            self.journal.put_certificate(p.round, p.stage, {
                "contributors": list(p.contributors), "included": p.included.to_bytes(32, "big"),
                "signatures": p.signatures, "done": p.done})  # fmt: skip

    def _restore(self, key: tuple[int, int], data: dict) -> None:
        if "averaged" in data:  # reported, not signed yet
            self._averaged[key] = {w: int.from_bytes(r, "big") for w, r in data["averaged"].items()}
            return
        contributors = tuple(data["contributors"])
        included = int.from_bytes(data["included"], "big")
        h = certificate_hash(self.chain_id, self.client.escrow_address, self.experiment, key[0], key[1],
                             contributors, included)  # fmt: skip
        self.pending[key] = Pending(round=key[0], stage=key[1], contributors=contributors, included=included,
                                    digest=h, signatures=dict(data["signatures"]),
                                    done=bool(data["done"]))  # fmt: skip


