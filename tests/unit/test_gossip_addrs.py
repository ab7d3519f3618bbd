"""The addresses a gossip sidecar announces: never a wildcard, which no other host can dial."""

from swarm.network.gossip.relay import announced_addrs

ID = "/p2p/16Uiu2HAmExample"


def test_a_wildcard_listen_address_is_announced_at_each_address_the_dht_is_visible_at():
    dht = ["/ip4/10.77.0.11/tcp/31337/p2p/QmDht", "/ip4/127.0.0.1/tcp/31337/p2p/QmDht", "/ip6/::1/tcp/1/p2p/QmDht"]
    assert announced_addrs([f"/ip4/0.0.0.0/tcp/4001{ID}"], "0.0.0.0", dht) == [
        f"/ip4/10.77.0.11/tcp/4001{ID}",
        f"/ip4/127.0.0.1/tcp/4001{ID}",
    ]


def test_a_concrete_listen_address_is_announced_as_it_is_and_at_most_eight():
    assert announced_addrs([f"/ip4/10.0.0.5/tcp/9{ID}"], "10.0.0.5", []) == [f"/ip4/10.0.0.5/tcp/9{ID}"]
    many = [f"/ip4/10.0.0.{i}/tcp/1/p2p/QmDht" for i in range(20)]
    assert len(announced_addrs([f"/ip4/0.0.0.0/tcp/4001{ID}"], "0.0.0.0", many)) == 8
