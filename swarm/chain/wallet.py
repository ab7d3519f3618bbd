"""Wallet keys: loaded from a 0600 key file or the SWARM_WALLET_KEY env var, never logged, never in argv."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount
from pydantic import SecretStr

from swarm.chain.errors import ChainError

WALLET_KEY_ENV = "SWARM_WALLET_KEY"


class WalletError(ChainError):
    """A wallet key is missing, malformed or stored unsafely."""


class Wallet:
    """A signing key for the L2. Its repr and str show only the address."""

    def __init__(self, private_key: SecretStr | str) -> None:
        secret = private_key if isinstance(private_key, SecretStr) else SecretStr(private_key)
        try:
            self._account: LocalAccount = Account.from_key(secret.get_secret_value().strip())
        except (ValueError, TypeError):  # `from None` keeps the key out of tracebacks
            raise WalletError(
                "the wallet key is not a 32-byte hex private key; check the key file or SWARM_WALLET_KEY"
            ) from None

    @property
    def address(self) -> str:
        return self._account.address

    @property
    def account(self) -> LocalAccount:
        return self._account

    def __repr__(self) -> str:
        return f"Wallet({self.address})"

    __str__ = __repr__

    @classmethod
    def from_file(cls, path: str | Path) -> Wallet:
        """Load a key file; refuse one that group or others can read (create it with `create_key_file`)."""
        path = Path(path).expanduser()
        try:
            mode = path.stat().st_mode
        except FileNotFoundError as exc:
            raise WalletError(f"wallet key file {path} does not exist; create one with create_key_file()") from exc
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise WalletError(f"wallet key file {path} is readable by others; run `chmod 600 {path}`")
        return cls(SecretStr(path.read_text()))

    @classmethod
    def from_env(cls, env: str = WALLET_KEY_ENV) -> Wallet:
        value = os.environ.get(env)
        if not value:
            raise WalletError(f"no wallet key: set {env} or pass a 0600 key file")
        return cls(SecretStr(value))

    @classmethod
    def load(cls, key_file: str | Path | None = None) -> Wallet:
        """The key file if given, else SWARM_WALLET_KEY."""
        return cls.from_file(key_file) if key_file is not None else cls.from_env()


def create_key_file(path: str | Path, private_key: SecretStr | str | None = None) -> Wallet:
    """Write a key (a new random one by default) to `path`, created 0600 and never overwritten."""
    path = Path(path).expanduser()
    if private_key is None:
        private_key = SecretStr(Account.create().key.hex())
    wallet = Wallet(private_key)
    secret = private_key.get_secret_value() if isinstance(private_key, SecretStr) else private_key
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise WalletError(f"wallet key file {path} already exists; refusing to overwrite it") from exc
    with os.fdopen(fd, "w") as f:
        f.write(secret.strip() + "\n")
    os.chmod(path, 0o600)  # in case the umask was stricter than needed, keep exactly 0600
    return wallet
