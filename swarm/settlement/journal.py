"""The settler's crash-safe journal: what a paid peer must still do, in one SQLite file per peer and experiment.

It holds the rounds contributed (or about to be) and not yet claimed, with the committed data that audits of them
may ask to prove (the int8 codes and scales as one blob: the Merkle tree is rebuilt from it), the audits opened
against them, the audit-event cursor, and every transaction signed and not yet final (raw bytes, nonce, hash), so
that after kill -9, a dead RPC or a reorganization the same transaction is looked up or sent again, never a new
one in its place (`TxReconciler`). No key material is ever stored. Layout and rules: docs/protocol.md, "Journal".
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
from hexbytes import HexBytes
from web3.exceptions import BlockNotFound, TransactionNotFound, Web3RPCError

from swarm.chain.errors import ChainError
from swarm.chain.tx import PendingTx

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
FINALITY_FALLBACK = 64  # blocks, when the node has no `finalized` block tag
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER NOT NULL, stage INTEGER NOT NULL,
    root TEXT NOT NULL, norm_sq TEXT NOT NULL, num_chunks INTEGER NOT NULL,
    params TEXT, update_blob BLOB,                 -- QuantizedUpdate.to_bytes(): int8 codes + scales
    state TEXT NOT NULL,                           -- open | contributed | claimed | done
    PRIMARY KEY (round, stage));
CREATE TABLE IF NOT EXISTS audits (
    round INTEGER NOT NULL, stage INTEGER NOT NULL, j INTEGER NOT NULL, chunk INTEGER NOT NULL,
    answered INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (round, stage, j));
CREATE TABLE IF NOT EXISTS txs (
    hash TEXT PRIMARY KEY, nonce INTEGER NOT NULL, raw BLOB NOT NULL, fields TEXT NOT NULL, what TEXT NOT NULL,
    kind TEXT, target TEXT,                        -- e.g. contribute [[round, stage]]
    state TEXT NOT NULL,                           -- signed (not seen mined) | mined (not final yet)
    block INTEGER, block_hash TEXT, status INTEGER, resent INTEGER NOT NULL DEFAULT 0, signed_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS certificates (          -- swarm/settlement/certificate.py: our message, signatures heard
    round INTEGER NOT NULL, stage INTEGER NOT NULL, body BLOB NOT NULL,
    PRIMARY KEY (round, stage));
"""


class JournalError(ChainError):
    """The journal cannot be opened or does not belong to this peer, escrow and experiment."""


@dataclass(frozen=True)
class JournaledCommitment:
    """A commitment whose data the journal does not hold (a prover that needs only root, norm and chunk count)."""

    root: int
    norm_sq: int
    num_chunks: int


@dataclass
class RoundRow:
    round: int
    stage: int
    root: int
    norm_sq: int
    num_chunks: int
    params: str | None
    update_blob: bytes | None
    state: str

    def summary(self) -> JournaledCommitment:
        return JournaledCommitment(self.root, self.norm_sq, self.num_chunks)

    def commitment(self) -> Any:
        """The round's commitment rebuilt from its codes and scales (the tree is recomputed and its root checked)."""
        if self.update_blob is None or self.params is None:
            return self.summary()
        from zk.circuit import CircuitParams
        from zk.commit import commit_update
        from zk.quantize import QuantizedUpdate

        c = commit_update(QuantizedUpdate.from_bytes(self.update_blob), CircuitParams.model_validate_json(self.params))
        if c.root != self.root:
            raise JournalError(f"round {self.round} stage {self.stage}: the journaled update no longer commits to "
                               "its root (corrupt journal?)")
        return c


@dataclass
class TxRow:
    hash: str
    nonce: int
    raw: bytes
    fields: dict
    what: str
    kind: str | None
    target: list
    state: str
    block: int | None
    block_hash: str | None
    status: int | None
    resent: int


DEFAULT_DATA_DIR = Path("~/.swarm")


def default_data_dir() -> Path:
    """Where a peer keeps what must outlive it when no --data-dir (SWARM_DATA_DIR) is given: ~/.swarm."""
    return DEFAULT_DATA_DIR.expanduser()


def journal_path(data_dir: Path, *, chain_id: int, genesis: str, escrow: str, experiment: int, peer: str) -> Path:
    """<data_dir>/settlement/<chain id>-<genesis hash, 8 hex>-<escrow>-<experiment>-<peer>.sqlite (lower-case): a
    dev chain started again (same addresses, new genesis) gets a new file, never an old run's journal."""
    tag = genesis.lower().removeprefix("0x")[:8]
    return data_dir / "settlement" / f"{chain_id}-{tag}-{escrow.lower()}-{experiment}-{peer.lower()}.sqlite"


class Journal:
    """One peer's journal for one experiment (thread-safe; every write is its own committed SQLite transaction)."""

    def __init__(self, path: Path, identity: dict[str, str]) -> None:
        """Open (or create, mode 0600 in a 0700 folder) the journal at `path`; `identity` (chain id, escrow,
        experiment, peer, genesis block hash) must match what a journal already there was made for."""
        self.path = path
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._lock_fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise JournalError(f"cannot create the settlement journal {path}: {exc}") from exc
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released by the kernel if we die
        except BlockingIOError:
            os.close(self._lock_fd)
            raise JournalError(f"another process is settling with the journal {path} (the same wallet in the "
                               "same experiment): stop it first") from None
        try:
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))  # SQLite gives -wal/-shm the same mode
            if path.stat().st_mode & 0o077:
                os.chmod(path, 0o600)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # a commit is on disk before the transaction is sent
            self._db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            os.close(self._lock_fd)
            raise JournalError(f"cannot open the settlement journal {path}: {exc}") from exc
        self._lock = threading.Lock()
        try:
            self._check_identity({"version": str(SCHEMA_VERSION), **identity})
        except BaseException:
            self.close()
            raise

    def _check_identity(self, identity: dict[str, str]) -> None:
        stored = dict(self._db.execute("SELECT key, value FROM meta WHERE key != 'cursor'").fetchall())
        if not stored:
            self._write("INSERT INTO meta VALUES (?, ?)", *identity.items())
            return
        wrong = {k: (stored.get(k), v) for k, v in identity.items() if stored.get(k) != v}
        if wrong:
            raise JournalError(f"the settlement journal {self.path} belongs to another chain, escrow or peer "
                               f"({', '.join(f'{k}: {a} here, {b} now' for k, (a, b) in wrong.items())}); move it "
                               "away if that chain is gone")  # fmt: skip

    def close(self, *, remove_if_empty: bool = False) -> None:
        """Close the file; with `remove_if_empty`, delete it when nothing is owed (no round, no transaction)."""
        with self._lock:
            empty = remove_if_empty and not any(
                self._db.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone() for t in ("rounds", "txs")
            )
            self._db.close()
            if empty:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{self.path}{suffix}").unlink(missing_ok=True)
                self.path.with_suffix(".lock").unlink(missing_ok=True)
            os.close(self._lock_fd)

    def _write(self, sql: str, *rows: tuple) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for row in rows:
                    self._db.execute(sql, row)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _read(self, sql: str, *args: Any) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # ------------------------------------------------------------------------------------------ cursor

    def cursor(self) -> tuple[int, str | None] | None:
        """(next block to read audit events from, hash of the block before it) or None on a new journal."""
        rows = self._read("SELECT value FROM meta WHERE key = 'cursor'")
        if not rows:
            return None
        block, parent = json.loads(rows[0][0])
        return int(block), parent

    def set_cursor(self, block: int, parent_hash: str | None) -> None:
        self._write("INSERT OR REPLACE INTO meta VALUES ('cursor', ?)", (json.dumps([block, parent_hash]),))

    # ------------------------------------------------------------------------------------- certificates

    def put_certificate(self, round: int, stage: int, data: dict) -> None:
        """Keep a (round, stage) certificate's state (msgpack of `data`: contributors, included, signatures, done)."""
        self._write("INSERT OR REPLACE INTO certificates VALUES (?, ?, ?)",
                    (round, stage, msgpack.packb(data, use_bin_type=True)))  # fmt: skip

    def drop_certificate(self, round: int, stage: int) -> None:
        self._write("DELETE FROM certificates WHERE round = ? AND stage = ?", (round, stage))

    def certificates(self) -> dict[tuple[int, int], dict]:
        rows = self._read("SELECT round, stage, body FROM certificates")
        return {(r, s): msgpack.unpackb(body, raw=False) for r, s, body in rows}

    # ------------------------------------------------------------------------------------------ rounds

    def put_round(self, round: int, stage: int, commitment: Any) -> None:
        """Journal a round before anything of it is sent: its root, norm and the data to prove any chunk of it."""
        update, params = getattr(commitment, "update", None), getattr(commitment, "params", None)
        blob = update.to_bytes() if update is not None and params is not None else None
        self._write("INSERT OR IGNORE INTO rounds VALUES (?, ?, ?, ?, ?, ?, ?, 'open')",
                    (round, stage, str(commitment.root), str(commitment.norm_sq), commitment.num_chunks,
                     params.model_dump_json() if blob is not None else None, blob))  # fmt: skip

    def set_round_state(self, round: int, stage: int, state: str) -> None:
        """open -> contributed -> claimed (its claim transaction not final yet) -> done (deleted once its
        transactions are final); `done` also for a round given up."""
        drop_data = ", update_blob = NULL" if state in ("claimed", "done") else ""  # no audit can come any more
        self._write(f"UPDATE rounds SET state = ?{drop_data} WHERE round = ? AND stage = ?", (state, round, stage))

    def rounds(self, *states: str) -> list[RoundRow]:
        marks = ",".join("?" * len(states))
        rows = self._read(f"SELECT * FROM rounds WHERE state IN ({marks}) ORDER BY round, stage", *states)
        return [RoundRow(r, s, int(root), int(n), c, p, b, st) for r, s, root, n, c, p, b, st in rows]

    def round_state(self, round: int, stage: int) -> str | None:
        rows = self._read("SELECT state FROM rounds WHERE round = ? AND stage = ?", round, stage)
        return rows[0][0] if rows else None

    def prune(self) -> int:
        """Delete the rounds that are done (claimed or given up) and that no unfinished transaction still names;
        their audits go with them. Returns how many were deleted."""
        named = {tuple(t) for row in self.txs() for t in row.target if len(t) >= 2}
        done = [(r.round, r.stage) for r in self.rounds("claimed", "done") if (r.round, r.stage) not in named]
        if done:
            self._write("DELETE FROM rounds WHERE round = ? AND stage = ?", *done)
            self._write("DELETE FROM audits WHERE round = ? AND stage = ?", *done)
        return len(done)

    # ------------------------------------------------------------------------------------------ audits

    def add_audit(self, round: int, stage: int, j: int, chunk: int) -> None:
        self._write("INSERT OR IGNORE INTO audits (round, stage, j, chunk) VALUES (?, ?, ?, ?)",
                    (round, stage, j, chunk))  # fmt: skip

    def set_answered(self, round: int, stage: int, j: int, answered: bool = True) -> None:
        self._write("UPDATE audits SET answered = ? WHERE round = ? AND stage = ? AND j = ?",
                    (int(answered), round, stage, j))  # fmt: skip

    def audits(self, round: int, stage: int) -> list[tuple[int, int, bool]]:
        """(j, chunk, answered) of every audit journaled against (round, stage)."""
        rows = self._read("SELECT j, chunk, answered FROM audits WHERE round = ? AND stage = ? ORDER BY j",
                          round, stage)  # fmt: skip
        return [(j, c, bool(a)) for j, c, a in rows]

    # ------------------------------------------------------------------------------------------ transactions

    def record_tx(self, p: PendingTx, kind: str | None, target: list) -> None:
        """Journal a signed transaction before it goes to the RPC (called from the sender's on_signed hook)."""
        self._write("INSERT OR IGNORE INTO txs (hash, nonce, raw, fields, what, kind, target, state, signed_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, 'signed', ?)",
                    (p.tx_hash, p.nonce, p.raw, json.dumps(p.fields, default=str), p.what, kind, json.dumps(target),
                     time.time()))  # fmt: skip

    def txs(self, *states: str) -> list[TxRow]:
        where = f" WHERE state IN ({','.join('?' * len(states))})" if states else ""
        rows = self._read(f"SELECT hash, nonce, raw, fields, what, kind, target, state, block, block_hash, status, "
                          f"resent FROM txs{where} ORDER BY nonce, signed_at", *states)  # fmt: skip
        return [TxRow(h, n, bytes(raw), json.loads(f), w, k, [tuple(x) for x in json.loads(t)], st, b, bh, s, rs)
                for h, n, raw, f, w, k, t, st, b, bh, s, rs in rows]  # fmt: skip

    def set_mined(self, tx_hash: str, block: int, block_hash: str, status: int) -> None:
        self._write("UPDATE txs SET state = 'mined', block = ?, block_hash = ?, status = ? WHERE hash = ?",
                    (block, block_hash, status, tx_hash))  # fmt: skip

    def set_unmined(self, tx_hash: str) -> None:
        self._write("UPDATE txs SET state = 'signed', block = NULL, block_hash = NULL, status = NULL WHERE hash = ?",
                    (tx_hash,))  # fmt: skip

    def count_resent(self, tx_hash: str) -> None:
        self._write("UPDATE txs SET resent = resent + 1 WHERE hash = ?", (tx_hash,))

    def drop_txs(self, *hashes: str) -> None:
        self._write("DELETE FROM txs WHERE hash = ?", *[(h,) for h in hashes])

    def unresolved(self, kind: str, key: tuple) -> bool:
        """Is a transaction of `kind` naming `key` signed and not seen mined? (Then no new one may replace it.)"""
        return any(row.kind == kind and key in row.target for row in self.txs("signed"))


def receipt_block(receipt: Any) -> tuple[int, str, int]:
    return int(receipt["blockNumber"]), HexBytes(receipt["blockHash"]).to_0x_hex(), int(receipt["status"])


class TxReconciler:
    """Brings the journal's transactions in line with the chain, once per settler pass.

    For each nonce of ours still in the journal: a version with a receipt is mined (the other versions are dropped);
    a mined one whose receipt vanished (a reorganization) is unmined; one the node does not know while its nonce is
    still free (not mined, not held in the pool by another transaction) is sent again, byte for byte (same hash: it
    cannot be mined twice); one whose nonce some other transaction took is dropped; a mined one in a block at or below the node's `finalized` block is final and
    leaves the journal. Returns what changed, for the settler to re-check what those transactions did.
    """

    def __init__(self, journal: Journal, w3: Any, address: str) -> None:
        self.journal, self.w3, self.address = journal, w3, address

    def run(self) -> list[TxRow]:
        """One pass; raises ChainError when the RPC does not answer (then the settler sends nothing new)."""
        rows = self.journal.txs()
        if not rows:
            return []
        try:
            return self._run(rows)
        except (Web3RPCError, OSError, ConnectionError) as exc:
            raise ChainError(f"cannot check the journaled transactions: the RPC did not answer ({exc})") from exc
        except Exception as exc:
            if type(exc).__module__.startswith(("requests", "urllib3")):
                raise ChainError(f"cannot check the journaled transactions: {type(exc).__name__}: {exc}") from exc
            raise

    def _run(self, rows: list[TxRow]) -> list[TxRow]:
        changed: list[TxRow] = []
        used = int(self.w3.eth.get_transaction_count(self.address, "latest"))  # read before the receipts
        queued = int(self.w3.eth.get_transaction_count(self.address, "pending"))  # nonces the pool holds too
        final = self._finalized_block()
        intact = self._mined_blocks_intact(rows)
        filled = max(used, queued)  # every nonce below is mined or waits in the pool (ours or not)
        by_nonce: dict[int, list[TxRow]] = {}
        for row in rows:
            by_nonce.setdefault(row.nonce, []).append(row)
        for nonce, versions in sorted(by_nonce.items()):
            settled = next((v for v in versions if v.state == "mined"), None) if intact else None
            if settled is not None:  # still where we saw it mined: only its finality can change
                if settled.block is not None and settled.block <= final:
                    self.journal.drop_txs(*[v.hash for v in versions])
                continue
            mined = None
            for v in versions:
                receipt = self._receipt(v.hash)
                if receipt is not None:
                    mined = (v, receipt)
                    break
            if mined is not None:
                v, receipt = mined
                block, block_hash, status = receipt_block(receipt)
                others = [o.hash for o in versions if o.hash != v.hash]
                if others:
                    self.journal.drop_txs(*others)
                if block <= final:
                    self.journal.drop_txs(v.hash)
                    logger.debug("tx %s (%s) final in block %d", v.hash, v.what, block)
                elif v.state != "mined" or v.block_hash != block_hash:
                    self.journal.set_mined(v.hash, block, block_hash, status)
                    if v.state == "mined" or v.resent:  # moved by a reorganization, or mined after a resend
                        changed.append(v)
                continue
            for v in versions:
                if v.state == "mined":
                    logger.warning("tx %s (%s, nonce %d) was in block %s and is not any more (a reorganization)",
                                   v.hash, v.what, v.nonce, v.block)
                    self.journal.set_unmined(v.hash)
                    changed.append(v)
            if nonce < used:  # another transaction took this nonce: none of these versions can be mined now
                logger.warning("nonce %d of %s was used by a transaction not in the journal; dropping %s", nonce,
                               self.address, ", ".join(v.what for v in versions))
                self.journal.drop_txs(*[v.hash for v in versions])
                changed += versions
                continue
            if any(self._known(v.hash) for v in versions):
                filled += nonce == filled
                continue  # in the node's pool: wait for it
            if nonce < queued:  # a transaction not in the journal (e.g. the watcher's, same key) holds this nonce in
                continue  # the pool: sending ours could replace it; if it is mined ours is dropped above
            if nonce != filled:  # a nonce below is neither mined, nor pooled, nor ours: its owner must send it first
                continue  # (ours could replace another program's transaction queued at this nonce)
            newest = max(versions, key=lambda v: int(v.fields.get("maxFeePerGas", 0)))
            if self._resend(newest):  # ours may have made a queued transaction of another program executable
                queued = int(self.w3.eth.get_transaction_count(self.address, "pending"))
                filled = max(filled + 1, queued)
            else:
                self.journal.drop_txs(*[v.hash for v in versions])
                changed += versions
        return changed

    def _mined_blocks_intact(self, rows: list[TxRow]) -> bool:
        """Is the highest block holding one of our mined transactions still the one we saw? A reorganization that
        replaced any block at or below it replaced that one too, so one block read covers every mined row."""
        mined = [r for r in rows if r.state == "mined" and r.block is not None]
        if not mined:
            return True
        top = max(mined, key=lambda r: r.block or 0)
        try:
            block = self.w3.eth.get_block(top.block)
        except BlockNotFound:
            return False
        return HexBytes(block["hash"]).to_0x_hex() == top.block_hash

    def _finalized_block(self) -> int:
        try:
            return int(self.w3.eth.get_block("finalized")["number"])
        except (Web3RPCError, ValueError, KeyError):
            return int(self.w3.eth.block_number) - FINALITY_FALLBACK

    def _receipt(self, tx_hash: str) -> Any:
        try:
            return self.w3.eth.get_transaction_receipt(HexBytes(tx_hash))
        except TransactionNotFound:
            return None

    def _known(self, tx_hash: str) -> bool:
        try:
            return self.w3.eth.get_transaction(HexBytes(tx_hash)) is not None
        except TransactionNotFound:
            return False

    def _resend(self, v: TxRow) -> bool:
        """Send the journaled bytes again; False when the node refuses them for good (never accepted: drop)."""
        try:
            self.w3.eth.send_raw_transaction(v.raw)
        except Web3RPCError as exc:
            text = str(exc).lower()
            if "already known" in text or "known transaction" in text:
                return True
            logger.warning("tx %s (%s, nonce %d) refused when sent again: %s; dropped from the journal", v.hash,
                           v.what, v.nonce, exc)
            return False
        self.journal.count_resent(v.hash)
        logger.warning("sent tx %s (%s, nonce %d) again, same bytes: the node did not know it", v.hash, v.what,
                       v.nonce)
        return True
