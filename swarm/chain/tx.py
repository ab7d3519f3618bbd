"""Sending transactions safely: local signing, one nonce tracker, gas estimation, receipts, decoded reverts.

A transaction is signed once; if the RPC drops while sending it, the client looks the hash up and resends the
identical signed bytes (same nonce), so a transaction is never lost silently and never sent twice. A transaction
not mined after `replace_after` seconds is signed again with the same nonce and fees raised by at least 12.5%
(what nodes require to replace it), so one stuck transaction does not hold up every later one; whichever of the
versions is mined is the receipt. Nonces are taken under a per-(chain, address) file lock, so two processes (or
two clients in one process) using one key never take the same nonce.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests
from eth_account.datastructures import SignedTransaction
from hexbytes import HexBytes
from pydantic import BaseModel, ConfigDict
from web3 import Web3
from web3.exceptions import ContractLogicError, TransactionNotFound, Web3Exception, Web3RPCError
from web3.types import TxReceipt

from swarm.chain.errors import ChainError, RevertError
from swarm.chain.revert import ErrorDecoder
from swarm.chain.wallet import Wallet

logger = logging.getLogger("swarm.chain.tx")

_CONNECTION_ERRORS = (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError, OSError)
GAS_MARGIN = 1.2
GAS_HEADROOM = 10_000
REPLACE_AFTER_S = 20.0
MAX_REPLACEMENTS = 5
REPRICE_ATTEMPTS = 4  # sends of one transaction refused because the base fee rose past its max fee; then give up
FEE_BUMP = 1.125  # nodes replace a pending transaction only if both fees rise by >= 10% (geth), 12.5% (others)
NONCE_LOCK_TIMEOUT_S = 60.0
NONCE_LOCK_DIR = Path(tempfile.gettempdir()) / f"swarm-nonce-locks-{os.getuid()}"


class _FeeBelowBaseFee(ChainError):
    """The node refused a transaction at once: its max fee is below the next block's base fee (nothing was sent)."""


class PendingTx(BaseModel):
    """A signed transaction the client has handed to the RPC (or tried to), until its receipt is seen."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    tx_hash: str
    nonce: int
    raw: bytes
    what: str
    fields: dict = {}  # the unsigned transaction, to sign a replacement with higher fees


class RpcReader:
    """Read calls over one RPC: a dead RPC or a revert becomes a ChainError that says what was attempted."""

    def __init__(self, w3: Web3, decoder: ErrorDecoder) -> None:
        self.w3 = w3
        self.decoder = decoder

    @property
    def rpc_url(self) -> str:
        return str(getattr(self.w3.provider, "endpoint_uri", "the RPC"))

    def rpc(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one RPC; a dead RPC becomes a ChainError naming the URL and what was attempted."""
        try:
            return fn(*args, **kwargs)
        except ContractLogicError as exc:
            raise self._revert_error(what, exc.data) from None
        except Web3RPCError as exc:
            raise ChainError(f"{what} failed at {self.rpc_url}: {exc}") from exc
        except _CONNECTION_ERRORS as exc:
            raise ChainError(
                f"the RPC at {self.rpc_url} did not answer ({type(exc).__name__}) while {what}; check that the "
                "node is running and the URL is right"
            ) from exc

    def _revert_error(self, what: str, data: Any) -> RevertError:
        name, args, text = self.decoder.decode(data if isinstance(data, (str, bytes)) else None)
        return RevertError(f"{what} reverted: {text}", error_name=name, args=args)


class TxSender(RpcReader):
    """Signs and sends transactions for one wallet; thread-safe; every failure is a ChainError."""

    def __init__(
        self,
        w3: Web3,
        wallet: Wallet,
        decoder: ErrorDecoder,
        *,
        receipt_timeout: float = 120.0,
        poll_s: float = 0.05,
        send_retries: int = 3,
        replace_after: float = REPLACE_AFTER_S,
    ) -> None:
        super().__init__(w3, decoder)
        self.wallet = wallet
        self.receipt_timeout = receipt_timeout
        self.replace_after = replace_after
        self.poll_s = poll_s
        self.send_retries = send_retries
        self._lock = threading.Lock()
        self._nonce: int | None = None
        self._chain_id: int | None = None
        self.unconfirmed: dict[str, PendingTx] = {}
        # called with every signed transaction before it is sent (a journal: swarm/settlement/journal.py)
        self.on_signed: Callable[[PendingTx], None] | None = None

    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = int(self.rpc("reading the chain id", lambda: self.w3.eth.chain_id))
        return self._chain_id

    def send(self, tx: dict[str, Any], what: str) -> TxReceipt:
        """Estimate, sign, send `tx` (to/data/value) and wait for its receipt; raises RevertError on a revert."""
        pending = self._sign_and_submit(tx, what)
        return self.wait(pending)

    @contextlib.contextmanager
    def _nonce_lock(self) -> Iterator[None]:
        """This key's nonce lock on this chain, across threads and processes (an exclusive flock)."""
        NONCE_LOCK_DIR.mkdir(mode=0o700, exist_ok=True)
        path = NONCE_LOCK_DIR / f"{self.chain_id()}-{self.wallet.address.lower()}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + NONCE_LOCK_TIMEOUT_S
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise ChainError(
                            f"another process has held the nonce lock of {self.wallet.address} for "
                            f"{NONCE_LOCK_TIMEOUT_S:.0f} s ({path}); is it stuck?"
                        ) from None
                    time.sleep(0.02)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _sign_and_submit(self, tx: dict[str, Any], what: str) -> PendingTx:
        with self._lock, self._nonce_lock():
            tx = {**tx, "from": self.wallet.address, "chainId": self.chain_id()}
            gas = self.rpc(f"estimating gas for {what}", self.w3.eth.estimate_gas, tx)
            nonce = self._next_nonce()
            tx.update(gas=int(gas * GAS_MARGIN) + GAS_HEADROOM, nonce=nonce, type=2)
            for attempt in range(REPRICE_ATTEMPTS):
                base_fee = self._base_fee()
                tip = self.rpc("reading the priority fee", lambda: self.w3.eth.max_priority_fee)
                floor = 2 * base_fee + tip
                if attempt:  # the base fee rose past our offer between reading it and sending: offer more
                    floor = max(floor, int(tx["maxFeePerGas"] * FEE_BUMP) + 1)
                tx.update(maxPriorityFeePerGas=tip, maxFeePerGas=floor)
                pending = self._sign(tx, what)
                self.unconfirmed[pending.tx_hash] = pending
                if self.on_signed is not None:
                    self.on_signed(pending)
                try:
                    self._submit(pending)
                    break
                except _FeeBelowBaseFee as exc:
                    if attempt + 1 == REPRICE_ATTEMPTS:
                        self._nonce = None
                        raise ChainError(str(exc)) from exc
                    logger.info("%s: the node's base fee rose above our max fee %d; re-pricing", what, floor)
                except BaseException:
                    self._nonce = None  # re-read from the chain next time: the node may or may not hold this nonce
                    raise
            self._nonce = nonce + 1
            logger.debug("sent %s: tx %s nonce %d", what, pending.tx_hash, nonce)
            return pending

    def _base_fee(self) -> int:
        """The base fee the next block will charge: the pending block's where the node tells it, else the latest."""
        latest = self.rpc("reading the base fee", lambda: self.w3.eth.get_block("latest"))["baseFeePerGas"]
        try:
            return max(latest, int(self.w3.eth.get_block("pending")["baseFeePerGas"]))
        except (Web3Exception, *_CONNECTION_ERRORS, KeyError, TypeError, ValueError):
            return latest

    def _sign(self, tx: dict[str, Any], what: str) -> PendingTx:
        signed: SignedTransaction = self.wallet.account.sign_transaction(tx)
        return PendingTx(tx_hash=signed.hash.to_0x_hex(), nonce=tx["nonce"], raw=bytes(signed.raw_transaction),
                         what=what, fields=tx)

    def _replace(self, p: PendingTx) -> PendingTx | None:
        """Sign `p` again with the same nonce and fees raised by FEE_BUMP (at least today's 2 x base fee + tip)
        and send it; None if the node refuses (e.g. the old one was just mined: nonce too low)."""
        with self._lock, self._nonce_lock():
            base_fee = self._base_fee()
            tip = max(int(p.fields["maxPriorityFeePerGas"] * FEE_BUMP) + 1,
                      self.rpc("reading the priority fee", lambda: self.w3.eth.max_priority_fee))
            max_fee = max(int(p.fields["maxFeePerGas"] * FEE_BUMP) + 1, 2 * base_fee + tip)
            q = self._sign({**p.fields, "maxPriorityFeePerGas": tip, "maxFeePerGas": max_fee}, p.what)
            if self.on_signed is not None:
                self.on_signed(q)
            try:
                self.w3.eth.send_raw_transaction(q.raw)
            except (Web3RPCError, *_CONNECTION_ERRORS) as exc:
                logger.info("%s: replacement of tx %s not accepted: %s", p.what, p.tx_hash, exc)
                return None
            self.unconfirmed[q.tx_hash] = q
            logger.warning("%s: tx %s (nonce %d) not mined after %.0f s; replaced by %s with max fee %d",
                           p.what, p.tx_hash, p.nonce, self.replace_after, q.tx_hash, max_fee)
            return q

    def forget_nonce(self) -> None:
        """Re-read the nonce from the chain on the next send (after a dev chain's evm_revert, say)."""
        with self._lock:
            self._nonce = None

    def _next_nonce(self) -> int:
        on_chain = self.rpc("reading the nonce", self.w3.eth.get_transaction_count, self.wallet.address, "pending")
        self._nonce = on_chain if self._nonce is None else max(self._nonce, on_chain)
        return self._nonce

    def _submit(self, p: PendingTx) -> None:
        for attempt in range(self.send_retries):
            try:
                self.w3.eth.send_raw_transaction(p.raw)
                return
            except Web3RPCError as exc:
                text = str(exc).lower()
                if "already known" in text or "known transaction" in text or self._known(p):
                    return
                self.unconfirmed.pop(p.tx_hash, None)
                if "less than block base fee" in text or "fee cap less than" in text:
                    raise _FeeBelowBaseFee(
                        f"{p.what}: max fee {p.fields['maxFeePerGas']} is below the node's base fee at "
                        f"{self.rpc_url} ({exc}); nothing was sent"
                    ) from exc
                if "nonce too low" in text:
                    raise ChainError(
                        f"{p.what}: nonce {p.nonce} was already used by another transaction of "
                        f"{self.wallet.address} (is another process using this key?); nothing was sent, retry"
                    ) from exc
                raise ChainError(f"{p.what} was rejected by the node at {self.rpc_url}: {exc}") from exc
            except _CONNECTION_ERRORS:
                time.sleep(min(0.2 * 2**attempt, 2.0))
                if self._known(p):  # the request reached the node, only the answer was lost
                    return
        raise ChainError(
            f"the RPC at {self.rpc_url} is unreachable; {p.what} (tx {p.tx_hash}, nonce {p.nonce}) may not have "
            "been sent. It stays in client.unconfirmed: call resend(tx_hash) when the RPC is back (the same "
            "signed transaction is reused, so it cannot be sent twice)"
        )

    def _known(self, p: PendingTx) -> bool:
        try:
            self.w3.eth.get_transaction(HexBytes(p.tx_hash))
            return True
        except TransactionNotFound:
            return False
        except (*_CONNECTION_ERRORS, Web3RPCError):
            return False

    def resend(self, tx_hash: str) -> TxReceipt:
        """Send an unconfirmed transaction again (identical bytes, same nonce) and wait for its receipt."""
        pending = self.unconfirmed.get(tx_hash)
        if pending is None:
            raise ChainError(f"tx {tx_hash} is not among this client's unconfirmed transactions")
        with self._lock:
            self._submit(pending)
        return self.wait(pending)

    def wait(self, p: PendingTx) -> TxReceipt:
        """Wait for the receipt (re-pricing a stuck transaction); tolerates short RPC outages; raises
        RevertError if the transaction reverted."""
        deadline = time.monotonic() + self.receipt_timeout
        next_bump = time.monotonic() + self.replace_after
        versions = [p]  # the transaction and its replacements: the same nonce, so at most one is mined
        outage = 0
        receipt, mined = None, p
        while receipt is None:
            for v in versions:
                try:
                    receipt = self.w3.eth.get_transaction_receipt(HexBytes(v.tx_hash))
                    mined = v
                    break
                except TransactionNotFound:
                    outage = 0
                except _CONNECTION_ERRORS as exc:
                    outage += 1
                    if outage > 50:
                        raise ChainError(
                            f"the RPC at {self.rpc_url} stopped answering while waiting for {p.what} (tx "
                            f"{v.tx_hash}); it may still be mined: it stays in client.unconfirmed, call "
                            "resend(tx_hash) later"
                        ) from exc
            if receipt is not None:
                break
            now = time.monotonic()
            if now > deadline:
                raise ChainError(
                    f"{p.what} (tx {versions[-1].tx_hash}) was not mined within {self.receipt_timeout:.0f} s; it "
                    "stays in client.unconfirmed: call resend(tx_hash) to wait again"
                )
            if now > next_bump and len(versions) <= MAX_REPLACEMENTS:
                q = self._replace(versions[-1])
                if q is not None:
                    versions.append(q)
                next_bump = now + self.replace_after
            time.sleep(self.poll_s)
        for v in versions:
            self.unconfirmed.pop(v.tx_hash, None)
        if receipt["status"] != 1:
            raise self._revert_error(p.what, self._replay_revert_data(mined, receipt))
        return receipt

    def _replay_revert_data(self, p: PendingTx, receipt: TxReceipt) -> str | None:
        try:
            tx = self.w3.eth.get_transaction(HexBytes(p.tx_hash))
            call = {"from": tx["from"], "to": tx["to"], "data": tx["input"], "value": tx["value"], "gas": tx["gas"]}
            self.w3.eth.call(call, block_identifier=receipt["blockNumber"] - 1)
        except ContractLogicError as exc:
            return exc.data if isinstance(exc.data, str) else None
        except (*_CONNECTION_ERRORS, Web3RPCError, TransactionNotFound):  # the revert stays undecoded
            return None
        return None
