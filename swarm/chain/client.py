"""ChainClient: the escrow's Python side (web3.py) for peers, researchers and the demo.

Works against any RPC: the embedded dev chain or a real L2 testnet (contracts/README.md says how).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from eth_abi import encode
from eth_utils import keccak
from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD
from web3.types import TxReceipt

from protocol.contribution import Contribution
from protocol.sampling import contribute_chunk
from swarm.chain.build import Artifact, load_artifact, load_artifacts
from swarm.chain.errors import ChainError, RevertError
from swarm.chain.models import (
    AuditState,
    BatchResult,
    ExperimentSpec,
    ExperimentState,
    RecordState,
    RoundState,
    StakeState,
    VerifierShape,
)
from swarm.chain.revert import ErrorDecoder, _abi_type
from swarm.chain.tx import REPLACE_AFTER_S, PendingTx, RpcReader, TxSender
from swarm.chain.wallet import Wallet

logger = logging.getLogger("swarm.chain.client")

ESCROW = "SwarmEscrow"
TOKEN_ABI_SOURCE = "TestToken"  # any ERC-20 ABI will do for approve/balanceOf
LOG_RANGE = 2_000  # blocks per eth_getLogs request: public L2 RPCs refuse larger ranges
TARGETED_BASE = 8  # SwarmEscrow.TARGETED_BASE: audit indices of targeted audits
SKIP_REASONS = {1: "duplicate", 2: "collateral", 3: "slot busy", 4: "not allowed"}  # SwarmEscrow.SKIP_*: ContributionSkipped


def batch_words(contributions: Sequence[Contribution], norm_bound: int) -> list[int]:
    """IBatchChunkVerifier.verifyBatch's input: per contribution its proof's 8 words (ZoKrates' Proof layout)
    then its 4 public inputs [context, root, normSq, normBound]."""
    words: list[int] = []
    for c in contributions:
        if c.proof is None:
            raise ChainError(f"the contribution of {c.peer} (stage {c.stage}) has no proof")
        (ax, ay), ((bx0, bx1), (by0, by1)), (cx, cy) = c.proof.abi_tuple()
        words += [ax, ay, bx0, bx1, by0, by1, cx, cy, *c.public_inputs(norm_bound)]
    return words


class ChainClient:
    """One wallet talking to one escrow (and its token) over one RPC URL."""

    def __init__(
        self,
        rpc_url: str,
        wallet: Wallet | None = None,
        *,
        escrow: str | None = None,
        request_timeout: float = 10.0,
        receipt_timeout: float = 120.0,
        replace_after: float = REPLACE_AFTER_S,
    ) -> None:
        self.rpc_url = rpc_url
        self.w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": request_timeout}))
        self.wallet = wallet
        self._artifacts = load_artifacts()
        decoder = ErrorDecoder(a.abi for a in self._artifacts.values())
        self._tx = (TxSender(self.w3, wallet, decoder, receipt_timeout=receipt_timeout, replace_after=replace_after)
                    if wallet else None)  # fmt: skip
        self._reader = RpcReader(self.w3, decoder)
        self.escrow: Contract | None = None
        self.token: Contract | None = None
        self._certifier: Contract | None = None
        self._certifier_of: str | None = None
        if escrow is not None:
            self.attach(escrow)

    def __repr__(self) -> str:
        return f"ChainClient({self.rpc_url}, {self.wallet!r}, escrow={self.escrow_address})"

    # ------------------------------------------------------------------------------------------ plumbing

    @property
    def address(self) -> str:
        return self._sender.wallet.address

    @property
    def escrow_address(self) -> str | None:
        return self.escrow.address if self.escrow is not None else None

    @property
    def _sender(self) -> TxSender:
        if self._tx is None:
            raise ChainError("this client has no wallet; load one with Wallet.load() to send transactions")
        return self._tx

    @property
    def unconfirmed(self) -> dict:
        """Signed transactions sent (or tried) whose receipt has not been seen yet."""
        return self._sender.unconfirmed

    def resend(self, tx_hash: str) -> TxReceipt:
        return self._sender.resend(tx_hash)

    def on_signed(self, callback: Callable[[PendingTx], None] | None) -> None:
        """Call `callback(pending)` with every transaction this client signs, before it is sent (e.g. to journal
        its raw bytes and nonce: swarm/settlement/journal.py); an exception in it stops that send."""
        self._sender.on_signed = callback

    def forget_nonce(self) -> None:
        """Re-read this wallet's nonce from the chain before the next transaction (e.g. after evm_revert)."""
        self._sender.forget_nonce()

    def with_wallet(self, wallet: Wallet) -> ChainClient:
        """A client for another wallet on the same RPC and escrow."""
        return ChainClient(self.rpc_url, wallet, escrow=self.escrow_address)

    def _escrow(self) -> Contract:
        if self.escrow is None:
            raise ChainError("no escrow attached; deploy_escrow() or pass escrow=<address>")
        return self.escrow

    def read(self, fn_name: str, *args: Any, contract: Contract | None = None) -> Any:
        """Call a view function of the escrow (or `contract`); reverts become RevertError."""
        c = contract if contract is not None else self._escrow()
        return self._reader.rpc(f"calling {fn_name}", getattr(c.functions, fn_name)(*args).call)

    def transact(self, fn_name: str, *args: Any, contract: Contract | None = None) -> TxReceipt:
        """Send a transaction to a function of the escrow (or `contract`) and wait for its receipt."""
        c = contract if contract is not None else self._escrow()
        data = c.encode_abi(fn_name, args=list(args))
        return self._sender.send({"to": c.address, "data": data}, f"{fn_name}()")

    def contract(self, name: str, address: str) -> Contract:
        return self.w3.eth.contract(address=Web3.to_checksum_address(address), abi=self._artifact(name).abi)

    def _artifact(self, name: str) -> Artifact:
        return self._artifacts.get(name) or load_artifact(name)

    def chain_id(self) -> int:
        """The chain id the RPC serves."""
        return int(self._reader.rpc("reading the chain id", lambda: self.w3.eth.chain_id))

    def send_eth(self, to: str, wei: int) -> TxReceipt:
        """Send `wei` of the gas token from this wallet to `to` (e.g. gas money for a new peer wallet)."""
        return self._sender.send({"to": Web3.to_checksum_address(to), "value": int(wei)}, f"sending {wei} wei to {to}")

    def eth_balance(self, who: str | None = None) -> int:
        """Wei of the gas token held by `who` (default: this wallet)."""
        address = Web3.to_checksum_address(who or self.address)
        return int(self._reader.rpc("reading an ETH balance", self.w3.eth.get_balance, address))

    def block_timestamp(self) -> int:
        return int(self._reader.rpc("reading the latest block", self.w3.eth.get_block, "latest")["timestamp"])

    # -------------------------------------------------------------------------------------------- deploy

    def add_artifact(self, name: str, abi: list[dict], bytecode: str) -> None:
        """Make a contract compiled elsewhere (e.g. zk's verifier for a key folder) deployable as `name`."""
        self._artifacts[name] = Artifact(name=name, source="", abi=abi, bytecode=bytecode, deployed_bytecode="")

    def deploy(self, name: str, *args: Any) -> tuple[str, TxReceipt]:
        """Deploy contract `name` from contracts/artifacts; returns (address, receipt)."""
        artifact = self._artifact(name)
        ctor = next((x for x in artifact.abi if x.get("type") == "constructor"), {"inputs": []})
        encoded = encode([_abi_type(p) for p in ctor["inputs"]], list(args)).hex()
        receipt = self._sender.send({"data": artifact.bytecode + encoded}, f"deploying {name}")
        logger.info("deployed %s at %s (%d gas)", name, receipt["contractAddress"], receipt["gasUsed"])
        return receipt["contractAddress"], receipt

    def deploy_escrow(
        self, token: str, *, min_stake: int, unbonding_delay: int, slash_grace: int, reporter_bps: int,
        audit_bond: int, verifiers: Sequence[VerifierShape], batch_fee: int = 0,
    ) -> str:  # fmt: skip
        """Deploy the escrow; only `verifiers` (pinned by code hash, see verifier_shape) may back experiments.
        `batch_fee`: tokens a batch's submitter gets from the pool per included contribution of another peer."""
        shapes = [v.abi_tuple() for v in verifiers]
        address, _ = self.deploy(ESCROW, token, min_stake, unbonding_delay, slash_grace, reporter_bps, audit_bond,
                                 batch_fee, shapes)
        return self.attach(address)

    def code_hash(self, address: str) -> bytes:
        """keccak256 of the runtime code at `address` (EXTCODEHASH); raises if there is no code."""
        code = self._reader.rpc("reading contract code", self.w3.eth.get_code, Web3.to_checksum_address(address))
        if not code:
            raise ChainError(f"no contract code at {address}")
        return keccak(bytes(code))

    def verifier_shape(
        self, address: str, *, chunk: int, depth: int, proof_seconds: int, batch: bool = False
    ) -> VerifierShape:
        """The allowlist entry of the deployed verifier at `address` for a circuit of CHUNK/DEPTH (`batch`: it
        also has verifyBatch, zk/batch_verifier.py)."""
        return VerifierShape(code_hash=self.code_hash(address), chunk=chunk, depth=depth,
                             proof_seconds=proof_seconds, batch=batch)

    def registered_shape(self, verifier: str) -> VerifierShape | None:
        """The escrow's allowlist entry for the verifier at `verifier`, or None if it is not allowed."""
        code_hash, chunk, depth, proof_seconds, batch = self.read("verifierShapes", self.code_hash(verifier))
        if chunk == 0:
            return None
        return VerifierShape(code_hash=bytes(code_hash), chunk=chunk, depth=depth, proof_seconds=proof_seconds,
                             batch=batch)

    def attach(self, escrow: str) -> str:
        """Talk to the escrow at `escrow` (and its token)."""
        self.escrow = self.contract(ESCROW, escrow)
        self.token = self.contract(TOKEN_ABI_SOURCE, self.read("token"))
        return self.escrow.address

    # ------------------------------------------------------------------------------------ token, staking

    def token_balance(self, who: str | None = None) -> int:
        return self.read("balanceOf", who or self.address, contract=self.token)

    def approve(self, amount: int) -> TxReceipt:
        return self.transact("approve", self._escrow().address, amount, contract=self.token)

    def stake(self, amount: int, *, approve: bool = True) -> TxReceipt:
        if approve:
            self.approve(amount)
        return self.transact("stake", amount)

    def request_unbond(self, amount: int) -> TxReceipt:
        return self.transact("requestUnbond", amount)

    def withdraw(self) -> TxReceipt:
        return self.transact("withdraw")

    def stake_of(self, peer: str | None = None) -> StakeState:
        active, locked, batches, unbonding, ready_at = self.read("stakes", Web3.to_checksum_address(peer or self.address))
        return StakeState(active=active, locked=locked, unbonding=unbonding, unbonding_ready_at=ready_at,
                          batch_experiment=batches)

    def allow_batches(self, experiment: int) -> TxReceipt:
        """Let anyone submit this wallet's contributions to `experiment` in batches (0: none): without it the
        escrow skips our entries in others' batches, so our gossiped proofs cannot be replayed elsewhere."""
        return self.transact("allowBatches", experiment)

    # -------------------------------------------------------------------------------------- experiments

    def create_experiment(self, spec: ExperimentSpec) -> int:
        receipt = self.transact("createExperiment", spec.abi_tuple())
        (event,) = self._escrow().events.ExperimentCreated().process_receipt(receipt)
        return int(event["args"]["experimentId"])

    def fund(self, experiment: int, amount: int, *, approve: bool = True) -> TxReceipt:
        if approve:
            self.approve(amount)
        return self.transact("fund", experiment, amount)

    def reclaim_pool(self, experiment: int) -> TxReceipt:
        return self.transact("reclaimPool", experiment)

    def experiment(self, experiment: int) -> ExperimentState:
        fields = self.read("getExperiment", experiment)
        return ExperimentState(**dict(zip(ExperimentState.model_fields, fields, strict=True)))

    def num_chunks(self, experiment: int, stage: int) -> int:
        return self.read("numChunks", experiment, stage)

    # ------------------------------------------------------------------------------------------- rounds

    def contribute(self, c: Contribution) -> TxReceipt:
        """Record `c` on-chain; its proof must open chunk c0 = keccak(root, peer) % numChunks(stage)."""
        self._check_own(c)
        return self.transact("contribute", c.experiment, c.round, c.stage, c.root, c.norm_sq, c.proof.abi_tuple())

    def contribute_batch(self, contributions: Sequence[Contribution], *, precheck: bool = True) -> BatchResult:
        """Record other peers' (or our own) contributions of one round in one transaction (contributeBatch).

        Each record, its collateral and its reward are the peer's named in the contribution (its proof binds
        it); this wallet pays the gas and gets the escrow's batchFee per included contribution of another peer.
        A bad proof makes the whole batch revert, so with `precheck` (default) every proof is first checked
        with a free eth_call of the verifier's verifyTx and the contributions the escrow would refuse or skip
        (bad proof, norm out of bounds, already recorded, too little free stake) are left out; they are
        returned in `left_out` with the reason. Nothing is sent when none is left."""
        if not contributions:
            raise ChainError("an empty batch: nothing to submit")
        keys = {(c.experiment, c.round) for c in contributions}
        if len(keys) != 1:
            raise ChainError(f"a batch holds contributions of one experiment and round, not {sorted(keys)}")
        (experiment, round), = keys
        for c in contributions:
            if c.proof is None:
                raise ChainError(f"the contribution of {c.peer} (stage {c.stage}) has no proof")
        left_out: list[tuple[Contribution, str]] = []
        if precheck:
            contributions, left_out = self._precheck_batch(experiment, list(contributions))
        if not contributions:
            return BatchResult(receipt=None, included=[], skipped=[], left_out=left_out, fee=0)
        entries = [(Web3.to_checksum_address(c.peer), c.stage, c.root, c.norm_sq, c.proof.abi_tuple())
                   for c in contributions]  # fmt: skip
        receipt = self.transact("contributeBatch", experiment, round, entries)
        escrow = self._escrow()
        # one Contributed or ContributionSkipped per entry, in the entries' order
        outcome = sorted([*escrow.events.Contributed().process_receipt(receipt, errors=DISCARD),
                          *escrow.events.ContributionSkipped().process_receipt(receipt, errors=DISCARD)],
                         key=lambda e: e["logIndex"])  # fmt: skip
        if len(outcome) != len(contributions):
            raise ChainError(f"contributeBatch logged {len(outcome)} outcomes for {len(contributions)} entries")
        included = [c for c, e in zip(contributions, outcome, strict=True) if e["event"] == "Contributed"]
        skipped = [(c, SKIP_REASONS.get(e["args"]["reason"], str(e["args"]["reason"])))
                   for c, e in zip(contributions, outcome, strict=True) if e["event"] == "ContributionSkipped"]
        (done,) = escrow.events.BatchContributed().process_receipt(receipt, errors=DISCARD)
        return BatchResult(receipt=receipt, included=included, skipped=skipped, left_out=left_out,
                           fee=int(done["args"]["fee"]))

    def _precheck_batch(
        self, experiment: int, contributions: list[Contribution]
    ) -> tuple[list[Contribution], list[tuple[Contribution, str]]]:
        e = self.experiment(experiment)
        verifier = self.contract("IChunkVerifier", e.verifier)
        min_stake = self.read("minStake")
        keep, left_out, seen, free, stakes, chunks = [], [], set(), {}, {}, {}
        for c in contributions:
            key = (c.peer, c.stage)
            stake = stakes.setdefault(c.peer, self.stake_of(c.peer))
            if not 0 <= c.stage < e.num_stages:  # the contract reverts the whole batch (UnknownStage)
                left_out.append((c, "unknown stage"))
            elif c.chunk != contribute_chunk(  # a valid proof of another chunk fails the batch's verifyBatch
                    c.root, c.peer, chunks.setdefault(c.stage, self.num_chunks(experiment, c.stage))):  # fmt: skip
                left_out.append((c, "not chunk c0"))
            elif stake.batch_experiment != experiment:
                left_out.append((c, "not allowed"))
            elif not (1 << e.min_norm_log2) <= c.norm_sq <= e.norm_bound:
                left_out.append((c, "norm out of bounds"))
            elif key in seen or self.record(experiment, c.round, c.stage, c.peer).exists:
                left_out.append((c, "duplicate"))
            elif free.setdefault(c.peer, stake.free) < min_stake:
                left_out.append((c, "collateral"))
            elif not self._reader.rpc("checking a proof", verifier.functions.verifyTx(
                    c.proof.abi_tuple(), c.public_inputs(e.norm_bound)).call):  # fmt: skip
                left_out.append((c, "invalid proof"))
            else:
                keep.append(c)
                seen.add(key)
                free[c.peer] -= min_stake
        if left_out:
            logger.warning("batch of round %d: left out %d of %d contributions (%s)", contributions[0].round,
                           len(left_out), len(contributions), ", ".join(sorted({r for _, r in left_out})))
        return keep, left_out

    def finalize(self, experiment: int, round: int) -> TxReceipt:
        return self.transact("finalize", experiment, round)

    def claim(self, experiment: int, round: int, stage: int) -> TxReceipt:
        return self.transact("claim", experiment, round, stage)

    def claim_many(self, experiment: int, rounds: Sequence[int], stages: Sequence[int]) -> TxReceipt:
        return self.transact("claimMany", experiment, list(rounds), list(stages))

    def round_state(self, experiment: int, round: int) -> RoundState:
        acc, n, unanswered, finalized, share, cert_required = self.read("getRound", experiment, round)
        return RoundState(accumulator=bytes(acc), contributions=n, unanswered=unanswered, finalized=finalized,
                          share=share, cert_required=cert_required)

    def record(self, experiment: int, round: int, stage: int, peer: str) -> RecordState:
        fields = self.read("getRecord", experiment, round, stage, Web3.to_checksum_address(peer))
        return RecordState(**dict(zip(RecordState.model_fields, fields, strict=True)))

    # ------------------------------------------------------------------------------------- certificates

    def certifier(self) -> Contract:
        """The escrow's SwarmCertifier (created with it): checks certificates' signatures."""
        if self._certifier is None or self._certifier_of != self.escrow_address:
            self._certifier = self.contract("SwarmCertifier", self.read("certifier"))
            self._certifier_of = self.escrow_address
        return self._certifier

    def certify(
        self, experiment: int, round: int, stage: int, contributors: Sequence[str], included: int,
        signatures: Sequence[bytes],
    ) -> TxReceipt:  # fmt: skip
        """Send a (round, stage) certificate: `contributors` in increasing address order, `included` a bitmap over
        them, `signatures` 65-byte (r, s, v) signatures of certificate_digest in increasing signer order."""
        sigs = [(sig[64], sig[:32], sig[32:64]) for sig in signatures]
        return self.transact("certify", experiment, round, stage,
                             [Web3.to_checksum_address(c) for c in contributors], included, sigs,
                             contract=self.certifier())  # fmt: skip

    # ------------------------------------------------------------------------------------------- audits

    def audit_chunk(self, experiment: int, round: int, stage: int, peer: str, j: int) -> int:
        return self.read("auditChunk", experiment, round, stage, Web3.to_checksum_address(peer), j)

    def round_seed(self, experiment: int, round: int) -> bytes | None:
        """The round's audit seed, or None while it is not armed (armSeed) or its block is not past yet."""
        try:
            return bytes(self.read("roundSeed", experiment, round))
        except RevertError as exc:
            if exc.error_name == "SeedNotReady":
                return None
            raise

    def arm_seed(self, experiment: int, round: int) -> TxReceipt:
        """Fix the round's audit seed to the hash of this transaction's block (after submissions close)."""
        return self.transact("armSeed", experiment, round)

    def _approve_bond(self, approve: bool) -> None:
        if approve:
            self.approve(self.read("auditBond"))

    def open_audit(
        self, experiment: int, round: int, stage: int, peer: str, j: int, *, approve: bool = True
    ) -> TxReceipt:
        """Open sampled audit j (first half of the audit window); deposits the escrow's auditBond. Arms the
        round's seed first when nobody has (the audit then goes in a later block, once the seed is known)."""
        if self.round_seed(experiment, round) is None:
            try:
                self.arm_seed(experiment, round)
            except RevertError as exc:
                if exc.error_name != "SeedAlreadyFixed":  # armed by someone in this block: ready next block
                    raise
        self._approve_bond(approve)
        return self.transact("openAudit", experiment, round, stage, Web3.to_checksum_address(peer), j)

    def open_targeted_audit(
        self, experiment: int, round: int, stage: int, peer: str, chunk: int, *, approve: bool = True
    ) -> int:
        """Open an audit of chunk `chunk` of `peer`'s contribution (receivers' evidence); returns its index j.

        Possible from the contribution until the first half of the round's audit window ends. Deposits the
        escrow's auditBond: paid to the accused if it answers, returned with the reporter's share of the
        collateral if it is slashed (`slash(experiment, round, stage, peer, j)` after the audit window).
        """
        self._approve_bond(approve)
        receipt = self.transact("openTargetedAudit", experiment, round, stage, Web3.to_checksum_address(peer),
                                chunk)
        (event,) = self._escrow().events.AuditOpened().process_receipt(receipt, errors=DISCARD)  # + token Transfer
        return int(event["args"]["j"])

    def audit(self, experiment: int, round: int, stage: int, peer: str, j: int) -> AuditState:
        opener, chunk, settled = self.read("getAudit", experiment, round, stage, Web3.to_checksum_address(peer), j)
        return AuditState(opener=opener, chunk=chunk, settled=settled)

    def answer_audit(self, c: Contribution, j: int) -> TxReceipt:
        """Answer audit j of our contribution `c`; `c.chunk` must be c_j and `c.proof` prove it."""
        self._check_own(c)
        return self.transact(
            "answerAudit", c.experiment, c.round, c.stage, j, c.root, c.norm_sq, c.proof.abi_tuple()
        )

    def slash(self, experiment: int, round: int, stage: int, peer: str, j: int) -> TxReceipt:
        return self.transact("slash", experiment, round, stage, Web3.to_checksum_address(peer), j)

    def _check_own(self, c: Contribution) -> None:
        if c.proof is None:
            raise ChainError("this contribution has no proof; prove it before sending it on-chain")
        if c.peer != self.address.lower():
            raise ChainError(f"contribution is for peer {c.peer} but this client's wallet is {self.address}")

    # ------------------------------------------------------------------------------------------- events

    def block_number(self) -> int:
        return int(self._reader.rpc("reading the block number", lambda: self.w3.eth.block_number))

    def events(
        self, name: str, from_block: int = 0, to_block: int | str = "latest", *,
        where: dict[str, Any] | None = None, max_range: int = LOG_RANGE,
    ) -> list[dict]:  # fmt: skip
        """The escrow's events named `name` in [from_block, to_block], oldest first.

        `where` filters on indexed arguments (e.g. {"experimentId": 3, "peer": addr}) at the node; the range is
        read in requests of at most `max_range` blocks.
        """
        event = getattr(self._escrow().events, name)
        last = self.block_number() if to_block == "latest" else int(to_block)
        filters = {k: (Web3.to_checksum_address(v) if isinstance(v, str) else v) for k, v in (where or {}).items()}
        out = []
        for lo in range(from_block, last + 1, max_range):
            hi = min(lo + max_range - 1, last)
            logs = self._reader.rpc(f"reading {name} events", event().get_logs, from_block=lo, to_block=hi,
                                    argument_filters=filters or None)
            out += [{"event": name, "block": log["blockNumber"], "index": log["logIndex"],
                     "tx": log["transactionHash"].to_0x_hex(), **dict(log["args"])} for log in logs]  # fmt: skip
        return out

    def follow_events(
        self, names: Sequence[str], *, from_block: int = 0, poll_s: float = 1.0, stop_after: float | None = None
    ) -> Iterator[dict]:
        """Yield the escrow's events as blocks arrive (polling), oldest first; ends after `stop_after` s."""
        deadline = None if stop_after is None else time.monotonic() + stop_after
        next_block = from_block
        while deadline is None or time.monotonic() < deadline:
            head = self._reader.rpc("reading the block number", lambda: self.w3.eth.block_number)
            if head >= next_block:
                batch = [e for n in names for e in self.events(n, next_block, head)]
                yield from sorted(batch, key=lambda e: (e["block"], e["index"]))
                next_block = head + 1
            time.sleep(poll_s)
