"""Start a hivemind DHT with the swarm's record validators (signed subkeys + typed schemas) and report its addresses.

Each DHT gets its own RSA key for signing its records, so several peers in one process cannot overwrite each other;
the typed schemas of an experiment are installed on first use by `swarm.network.records` (`install_record_schemas`).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import shutil
import socket
import tempfile
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import hivemind
import multihash
from cryptography.hazmat.primitives import serialization
from google.protobuf.message import DecodeError
from hivemind.dht.crypto import RSASignatureValidator
from hivemind.p2p import PeerID
from hivemind.proto import crypto_pb2
from hivemind.utils.crypto import RSAPrivateKey
from multiaddr import Multiaddr

from swarm.errors import JoinError

__all__ = [
    "JoinError",
    "create_dht",
    "local_dhts",
    "owner_subkey",
    "parse_initial_peers",
    "visible_multiaddrs",
]

logger = logging.getLogger(__name__)

DEFAULT_BOOTSTRAP_TIMEOUT = 15.0  # seconds to wait for the initial peers to answer a ping
MULTIADDR_HINT = "expected e.g. /ip4/203.0.113.7/tcp/31337/p2p/QmPeerID... (printed by the bootstrap peer)"

_owner_keys: weakref.WeakKeyDictionary[hivemind.DHT, bytes] = weakref.WeakKeyDictionary()
_initial_peer_ids: weakref.WeakKeyDictionary[hivemind.DHT, set[str]] = weakref.WeakKeyDictionary()
_OWNER_KEY = re.compile(RSASignatureValidator.PUBLIC_KEY_REGEX)


def parse_initial_peers(initial_peers: Sequence[str]) -> list[str]:
    """Check that every initial peer is a full multiaddr ending in /p2p/<peer id>; raise JoinError if not."""
    if isinstance(initial_peers, str):
        initial_peers = initial_peers.split()
    parsed = []
    for addr in initial_peers:
        text = str(addr).strip()
        try:
            maddr = Multiaddr(text)
            maddr.value_for_protocol("p2p")
        except (
            Exception
        ) as exc:  # multiaddr raises several types (ValueError, StringParseError, ProtocolLookupError)
            raise JoinError(
                f"initial peer {text!r} is not a full multiaddr with a peer id: {MULTIADDR_HINT}"
            ) from exc
        parsed.append(text)
    return parsed


def _host_maddrs(host: str, port: int | None) -> list[str]:
    proto = "ip6" if ":" in host else "ip4"
    return [f"/{proto}/{host}/tcp/{int(port or 0)}"]


def create_dht(
    initial_peers: Sequence[str] = (),
    *,
    host: str = "127.0.0.1",
    start: bool = True,
    port: int | None = None,
    bootstrap_timeout: float = DEFAULT_BOOTSTRAP_TIMEOUT,
    experiments: Sequence[str] = (),
    identity_path: str | os.PathLike | None = None,
    **kwargs,
) -> hivemind.DHT:
    """A hivemind DHT (own process + p2pd) that signs its records and rejects forged or malformed ones.

    `initial_peers` are multiaddrs of running peers (none: start a new swarm). Raises JoinError with the reason if
    an address is malformed, no initial peer answers, or the host/port cannot be listened on. The caller owns the
    DHT and must `shutdown()` it. Name the `experiments` this peer takes part in so that their record schemas
    guard its storage from the start (otherwise they are installed when `swarm.network.records` first touches them).
    `identity_path`: an RSA key file (created 0600 if missing) that keeps the peer id across restarts, e.g. for a
    bootstrap peer whose address others have written down; by default every start gets a fresh identity.
    """
    peers = parse_initial_peers(initial_peers)
    if port:
        _check_port_free(host, port)
    # one key per DHT, never the process-wide one: it signs this peer's records and is its libp2p identity
    key = RSAPrivateKey() if identity_path is None else load_or_create_identity(identity_path)
    signer = RSASignatureValidator(key)
    kwargs.setdefault("host_maddrs", _host_maddrs(host, port))
    kwargs.setdefault("bootstrap_timeout", bootstrap_timeout)
    folder = tempfile.mkdtemp(prefix="swarm-id-")  # 0700; p2pd reads the identity when it starts
    try:
        dht = hivemind.DHT(
            initial_peers=peers, start=start, record_validators=[signer], identity_path=_write_identity(key, folder),
            check_if_identity_free=False, **kwargs,
        )  # fmt: skip
    except Exception as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise _join_error(exc, peers, kwargs["host_maddrs"]) from exc
    if start:
        shutil.rmtree(folder, ignore_errors=True)
    else:
        weakref.finalize(dht, shutil.rmtree, folder, True)
    _owner_keys[dht] = signer.local_public_key
    _initial_peer_ids[dht] = {p.rsplit("/p2p/", 1)[1] for p in peers}
    if start and experiments:
        from swarm.network.records import install_record_schemas  # records builds on this module

        try:
            for name in experiments:
                install_record_schemas(dht, name)
        except BaseException:
            dht.shutdown()
            raise
    return dht


def _write_identity(key: RSAPrivateKey, folder: str | os.PathLike, name: str = "identity.key") -> str:
    """Write `key` as a libp2p identity file (readable by us only) and return its path."""
    path = os.path.join(folder, name)
    data = crypto_pb2.PrivateKey(key_type=crypto_pb2.KeyType.RSA, data=key.to_bytes()).SerializeToString()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def load_or_create_identity(path: str | os.PathLike) -> RSAPrivateKey:
    """The RSA identity key stored at `path`, made (mode 0600) if the file does not exist yet."""
    path = os.fspath(path)
    if not os.path.exists(path):
        key = RSAPrivateKey()
        _write_identity(key, os.path.dirname(path) or ".", os.path.basename(path))
        return key
    if os.stat(path).st_mode & 0o077:
        logger.warning("identity file %s is readable by other users; chmod 600 it", path)
    try:
        with open(path, "rb") as f:
            message = crypto_pb2.PrivateKey.FromString(f.read())
        if message.key_type != crypto_pb2.KeyType.RSA:
            raise ValueError("not an RSA key")
        key = RSAPrivateKey.__new__(RSAPrivateKey)
        key._private_key = serialization.load_der_private_key(message.data, password=None)
    except (OSError, ValueError, TypeError, DecodeError) as exc:
        raise JoinError(
            f"identity file {path} is not an RSA libp2p key ({exc}); move it away to get a new identity"
        ) from exc
    return key


def peer_id_of_owner(subkey: bytes) -> str | None:
    """The libp2p peer id (base58) of the RSA key in an `[owner:...]` subkey, or None if there is none.

    A DHT made by `create_dht` uses the same RSA key for its peer id and for signing its records, so a record can
    be checked against the peer id it names.
    """
    match = _OWNER_KEY.search(subkey) if isinstance(subkey, bytes) else None
    if match is None:
        return None
    try:
        public = serialization.load_ssh_public_key(match.group(1))
    except ValueError:
        return None
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    encoded = crypto_pb2.PublicKey(key_type=crypto_pb2.RSA, data=der).SerializeToString()
    digest = multihash.encode(hashlib.sha256(encoded).digest(), multihash.coerce_code("sha2-256"))
    return PeerID(digest).to_base58()


def initial_peer_ids(dht: hivemind.DHT) -> set[str]:
    """Peer ids of the initial peers `dht` was started with (whom a joiner trusts for the experiment record)."""
    return set(_initial_peer_ids.get(dht, ()))


def _check_port_free(host: str, port: int) -> None:
    """p2pd listens with SO_REUSEPORT, so a second peer on a taken port would start and share its connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(
            socket.SOL_SOCKET, socket.SO_REUSEADDR, 1
        )  # a restarted peer's TIME_WAIT is no conflict
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise JoinError(
                    f"port {port} on {host} is in use (another peer?); pick another --port"
                ) from exc
            # anything else (e.g. a host that is not ours) is reported by p2pd itself below


def _join_error(exc: Exception, peers: list[str], host_maddrs: Sequence[str]) -> JoinError:
    text = str(exc)
    if peers and ("bootstrap" in text or "initial_peers" in text or "connect" in text.lower()):
        return JoinError(
            f"none of the initial peers answered ({', '.join(peers)}): check that the address is current and "
            f"the bootstrap peer is running and reachable from here ({text})"
        )
    if "address already in use" in text.lower():
        return JoinError(
            f"cannot listen on {', '.join(host_maddrs)}: the port is in use; pick another --port"
        )
    if "cannot assign requested address" in text.lower():
        return JoinError(
            f"cannot listen on {', '.join(host_maddrs)}: that host is not an address of this machine; "
            "use --host 0.0.0.0 (all interfaces) or one of this machine's own addresses"
        )
    return JoinError(f"could not start the DHT node: {text}")


def owner_subkey(dht: hivemind.DHT) -> bytes:
    """The subkey that only this DHT can write (it carries the DHT's RSA public key; values are signed)."""
    try:
        return _owner_keys[dht]
    except KeyError:
        raise JoinError(
            "this DHT was not made by swarm.network.dht.create_dht, so it cannot sign swarm records"
        ) from None


def visible_multiaddrs(dht: hivemind.DHT) -> list[str]:
    """The addresses other peers can pass as --initial-peers to join through this DHT."""
    return [str(m) for m in dht.get_visible_maddrs()]


@contextmanager
def local_dhts(n: int, **kwargs) -> Iterator[list[hivemind.DHT]]:
    """`n` DHTs on loopback, all joined through the first; every one is shut down on the way out (tests, benches)."""
    dhts: list[hivemind.DHT] = []
    try:
        dhts.append(create_dht(**kwargs))
        while len(dhts) < n:
            dhts.append(create_dht(visible_multiaddrs(dhts[0]), **kwargs))
        yield dhts
    finally:
        for dht in reversed(dhts):
            dht.shutdown()
