"""ChainClient: the escrow's Python side (web3.py) for peers, researchers and the demo.

Works against any RPC: the embedded dev chain or a real L2 testnet (contracts/README.md says how).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

from eth_abi import encode
from web3 import Web3
from web3.contract import Contract
from web3.types import TxReceipt

from protocol.contribution import Contribution
from swarm.chain.build import Artifact, load_artifact, load_artifacts
from swarm.chain.errors import ChainError
from swarm.chain.models import ExperimentSpec, ExperimentState, RecordState, RoundState, StakeState
from swarm.chain.revert import ErrorDecoder, _abi_type
from swarm.chain.tx import RpcReader, TxSender
from swarm.chain.wallet import Wallet

logger = logging.getLogger("swarm.chain.client")

ESCROW = "SwarmEscrow"
TOKEN_ABI_SOURCE = "TestToken"  # any ERC-20 ABI will do for approve/balanceOf


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
    ) -> None:
        self.rpc_url = rpc_url
        self.w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": request_timeout}))
        self.wallet = wallet
        self._artifacts = load_artifacts()
        decoder = ErrorDecoder(a.abi for a in self._artifacts.values())
        self._tx = TxSender(self.w3, wallet, decoder, receipt_timeout=receipt_timeout) if wallet else None
        self._reader = RpcReader(self.w3, decoder)
        self.escrow: Contract | None = None
        self.token: Contract | None = None
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

    def block_timestamp(self) -> int:
        return int(self._reader.rpc("reading the latest block", self.w3.eth.get_block, "latest")["timestamp"])

    # -------------------------------------------------------------------------------------------- deploy

    def deploy(self, name: str, *args: Any) -> tuple[str, TxReceipt]:
        """Deploy contract `name` from contracts/artifacts; returns (address, receipt)."""
        artifact = self._artifact(name)
        ctor = next((x for x in artifact.abi if x.get("type") == "constructor"), {"inputs": []})
        encoded = encode([_abi_type(p) for p in ctor["inputs"]], list(args)).hex()
        receipt = self._sender.send({"data": artifact.bytecode + encoded}, f"deploying {name}")
        logger.info("deployed %s at %s (%d gas)", name, receipt["contractAddress"], receipt["gasUsed"])
        return receipt["contractAddress"], receipt

    def deploy_escrow(
        self, token: str, *, min_stake: int, unbonding_delay: int, slash_grace: int, reporter_bps: int
    ) -> str:
        address, _ = self.deploy(ESCROW, token, min_stake, unbonding_delay, slash_grace, reporter_bps)
        return self.attach(address)

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
        active, unbonding, ready_at = self.read("stakes", Web3.to_checksum_address(peer or self.address))
        return StakeState(active=active, unbonding=unbonding, unbonding_ready_at=ready_at)

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

    def finalize(self, experiment: int, round: int) -> TxReceipt:
        return self.transact("finalize", experiment, round)

    def claim(self, experiment: int, round: int, stage: int) -> TxReceipt:
        return self.transact("claim", experiment, round, stage)

    def claim_many(self, experiment: int, rounds: Sequence[int], stages: Sequence[int]) -> TxReceipt:
        return self.transact("claimMany", experiment, list(rounds), list(stages))

    def round_state(self, experiment: int, round: int) -> RoundState:
        acc, n, slashed, finalized, share = self.read("getRound", experiment, round)
        return RoundState(accumulator=bytes(acc), contributions=n, slashed_before_finalize=slashed,
                          finalized=finalized, share=share)

    def record(self, experiment: int, round: int, stage: int, peer: str) -> RecordState:
        fields = self.read("getRecord", experiment, round, stage, Web3.to_checksum_address(peer))
        return RecordState(**dict(zip(RecordState.model_fields, fields, strict=True)))

    # ------------------------------------------------------------------------------------------- audits

    def audit_chunk(self, experiment: int, round: int, stage: int, peer: str, j: int) -> int:
        return self.read("auditChunk", experiment, round, stage, Web3.to_checksum_address(peer), j)

    def open_audit(self, experiment: int, round: int, stage: int, peer: str, j: int) -> TxReceipt:
        return self.transact("openAudit", experiment, round, stage, Web3.to_checksum_address(peer), j)

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

    def events(self, name: str, from_block: int = 0, to_block: int | str = "latest") -> list[dict]:
        """The escrow's events named `name` in [from_block, to_block], oldest first."""
        event = getattr(self._escrow().events, name)
        logs = self._reader.rpc(f"reading {name} events", event().get_logs, from_block=from_block,
                                to_block=to_block)
        return [{"event": name, "block": log["blockNumber"], "index": log["logIndex"],
                 "tx": log["transactionHash"].to_0x_hex(), **dict(log["args"])} for log in logs]  # fmt: skip

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
