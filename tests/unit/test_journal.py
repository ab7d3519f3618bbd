"""The settlement journal on its own: file mode, identity, rounds rebuilt from their codes and scales, transactions."""

from __future__ import annotations

import sqlite3
import stat

import pytest
import torch

from swarm.chain.tx import PendingTx
from swarm.settlement.journal import Journal, JournaledCommitment, JournalError, journal_path
from zk.circuit import DEFAULT_PARAMS
from zk.commit import commit_update
from zk.quantize import quantize_update

IDENTITY = {"chain_id": "31337", "escrow": "0x" + "ab" * 20, "experiment": "3", "peer": "0x" + "cd" * 20,
            "genesis": "0x" + "00" * 32}  # fmt: skip


def journal(tmp_path, **identity) -> Journal:
    path = journal_path(tmp_path / "data", chain_id=31337, genesis=IDENTITY["genesis"], escrow=IDENTITY["escrow"],
                        experiment=3, peer=IDENTITY["peer"])  # fmt: skip
    return Journal(path, {**IDENTITY, **identity})


def pending(nonce: int, h: str, fee: int = 10) -> PendingTx:
    return PendingTx(tx_hash=h, nonce=nonce, raw=b"\x02signed" + bytes([nonce]), what="contribute()",
                     fields={"nonce": nonce, "maxFeePerGas": fee, "data": "0x12"})  # fmt: skip


def test_the_file_is_private_and_holds_no_key(tmp_path) -> None:
    j = journal(tmp_path)
    j.record_tx(pending(0, "0x01"), "contribute", [[0, 0]])
    j.close()
    files = list((tmp_path / "data" / "settlement").iterdir())
    assert len(files) >= 2 and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)  # + its .lock
    files = [f for f in files if f.suffix == ".sqlite"]
    assert stat.S_IMODE((tmp_path / "data" / "settlement").stat().st_mode) == 0o700
    names = {r[0] for r in sqlite3.connect(files[0]).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert names == {"meta", "rounds", "audits", "txs", "certificates"}  # signed bytes only: nothing a key could be read from


def test_a_journal_of_another_peer_or_a_second_process_is_refused(tmp_path) -> None:
    journal(tmp_path).close()
    with pytest.raises(JournalError, match="peer"):
        journal(tmp_path, peer="0x" + "ef" * 20)
    j = journal(tmp_path)  # the right identity opens it again
    with pytest.raises(JournalError, match="another process"):
        journal(tmp_path)
    j.close(remove_if_empty=True)  # nothing owed: the file goes
    assert list((tmp_path / "data" / "settlement").iterdir()) == []


def test_a_round_is_rebuilt_from_its_codes_and_scales(tmp_path) -> None:
    delta = torch.randn(3 * DEFAULT_PARAMS.chunk + 100, generator=torch.Generator().manual_seed(1)) * 1e-3
    c = commit_update(quantize_update(delta), DEFAULT_PARAMS)
    j = journal(tmp_path)
    j.put_round(7, 1, c)
    j.put_round(8, 0, JournaledCommitment(root=5, norm_sq=6, num_chunks=2))  # a stand-in prover's commitment
    j.close()
    j = journal(tmp_path)
    (row, other) = j.rounds("open")
    back = row.commitment()
    assert (back.root, back.norm_sq, back.num_chunks) == (c.root, c.norm_sq, c.num_chunks)
    assert back.opening(3) == c.opening(3)  # the proof of any chunk can be made again
    assert other.commitment() == JournaledCommitment(5, 6, 2)
    j.set_round_state(7, 1, "claimed")
    assert j.rounds("claimed")[0].update_blob is None  # the data goes once no audit can come
    j.add_audit(7, 1, 0, 2)
    assert j.prune() == 1 and j.rounds("claimed") == [] and j.audits(7, 1) == []


def test_a_round_stays_while_a_transaction_names_it(tmp_path) -> None:
    j = journal(tmp_path)
    j.put_round(1, 0, JournaledCommitment(1, 1, 1))
    j.record_tx(pending(4, "0xaa"), "claim", [[1, 0], [2, 0]])
    assert j.unresolved("claim", (1, 0)) and not j.unresolved("claim", (3, 0)) and not j.unresolved("answer", (1, 0))
    j.set_round_state(1, 0, "claimed")
    assert j.prune() == 0
    j.set_mined("0xaa", 10, "0x" + "ee" * 32, 1)
    assert not j.unresolved("claim", (1, 0))
    j.drop_txs("0xaa")  # final
    assert j.prune() == 1


def test_cursor_and_audits_survive_a_reopen(tmp_path) -> None:
    j = journal(tmp_path)
    assert j.cursor() is None
    j.put_round(2, 0, JournaledCommitment(1, 1, 4))
    j.add_audit(2, 0, 1, 3)
    j.add_audit(2, 0, 8, 0)
    j.set_answered(2, 0, 1)
    j.set_cursor(120, "0x" + "aa" * 32)
    j.close()
    j = journal(tmp_path)
    assert j.cursor() == (120, "0x" + "aa" * 32)
    assert j.audits(2, 0) == [(1, 3, True), (8, 0, False)]
    assert j.txs() == []
