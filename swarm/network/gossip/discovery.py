"""Finding the other peers' gossip sidecars through the DHT: one signed record per peer with its multiaddrs."""

from __future__ import annotations

import hivemind
from hivemind.utils import get_dht_time
from pydantic import BaseModel, ConfigDict, Field, field_validator

from swarm.network.dht import owner_subkey
from swarm.network.records import _fetch_entries, install_record_schemas


class GossipEndpoint(BaseModel):
    """Where a peer's GossipSub sidecar listens (py-libp2p multiaddrs ending in /p2p/<id>)."""

    model_config = ConfigDict(frozen=True)

    maddrs: list[str] = Field(min_length=1, max_length=8)

    @field_validator("maddrs")
    @classmethod
    def _multiaddrs(cls, v: list[str]) -> list[str]:
        for m in v:
            if not m.startswith("/") or "/p2p/" not in m or len(m) > 256:
                raise ValueError(f"{m!r} is not a peer multiaddr")
        return v


def gossip_key(experiment: str) -> str:
    return f"{experiment}_gossip"


def announce_gossip(dht: hivemind.DHT, experiment: str, maddrs: list[str], ttl: float = 60.0) -> bool:
    """Store this peer's sidecar address under its own signed subkey (nobody else can overwrite it)."""
    install_record_schemas(dht, experiment)
    value = GossipEndpoint(maddrs=maddrs).model_dump()
    return bool(dht.store(gossip_key(experiment), value, get_dht_time() + ttl, subkey=owner_subkey(dht)))


def fetch_gossip_peers(dht: hivemind.DHT, experiment: str) -> dict[str, list[str]]:
    """{peer id: sidecar multiaddrs} of every unexpired, well-formed endpoint record (malformed ones dropped)."""
    return {writer: ep.maddrs for writer, ep in _fetch_entries(dht, experiment, gossip_key(experiment), GossipEndpoint)}
