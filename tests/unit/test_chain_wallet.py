"""Wallet keys: 0600 key files, env var, refusal of unsafe files, no key in reprs or errors."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from swarm.chain.wallet import WALLET_KEY_ENV, Wallet, WalletError, create_key_file

KEY = "0x" + "ab" * 32


def test_create_key_file_is_0600_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "peer.key"
    wallet = create_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Wallet.from_file(path).address == wallet.address


def test_create_key_file_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "peer.key"
    create_key_file(path, KEY)
    with pytest.raises(WalletError, match="already exists"):
        create_key_file(path)
    assert Wallet.from_file(path).address == Wallet(KEY).address


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "peer.key"
    create_key_file(path, KEY)
    os.chmod(path, 0o644)
    with pytest.raises(WalletError, match="chmod 600"):
        Wallet.from_file(path)


def test_missing_file_and_env_give_actionable_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(WalletError, match="create_key_file"):
        Wallet.from_file(tmp_path / "nope.key")
    monkeypatch.delenv(WALLET_KEY_ENV, raising=False)
    with pytest.raises(WalletError, match=WALLET_KEY_ENV):
        Wallet.load()
    monkeypatch.setenv(WALLET_KEY_ENV, KEY)
    assert Wallet.load().address == Wallet(KEY).address


def test_the_key_is_in_no_repr_and_no_error() -> None:
    wallet = Wallet(KEY)
    assert "ab" * 32 not in repr(wallet) + str(wallet)
    bad = "0x" + "zz" * 32
    with pytest.raises(WalletError) as info:
        Wallet(bad)
    assert "zz" * 32 not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__
