"""The reachability check and the join retry on loopback (real hivemind DHTs + p2pd; no root needed)."""

from __future__ import annotations

import logging
import threading

import pytest

from swarm.errors import JoinError
from swarm.network.dht import local_dhts
from swarm.network.reachability import (
    Reachability,
    check_reachability,
    explain,
    serve_reachability_checks,
    start_with_retry,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_a_peer_on_this_machine_is_dialled_back_and_called_reachable():
    with local_dhts(2) as (first, second):
        serve_reachability_checks(first)
        result = check_reachability(second, [first.peer_id.to_base58()])
        assert result.status == "public", result
        assert any(ok for ok in result.dialled.values()) and result.seen_as == "127.0.0.1"
        # a peer that does not answer checks (never registered the handler) gives "unknown", not a failure
        unknown = check_reachability(first, [second.peer_id.to_base58()], timeout=5)
        assert unknown.status == "unknown" and unknown.detail


def test_explanations_say_what_to_do():
    level, text = explain(Reachability("private", "x", {"10.0.0.9:4000": False}, "10.0.0.9"), "stage")
    assert (
        level == logging.WARNING
        and "relay" in text
        and "forward a TCP port" in text
        and "--role trainer" in text
    )
    level, text = explain(Reachability("private", "x", {}, "10.0.0.9"), "trainer")
    assert level == logging.INFO and "fine for a trainer" in text


def test_start_with_retry_retries_only_an_unreachable_swarm_and_stops_on_request(caplog):
    stop, calls = threading.Event(), []

    def unreachable():
        calls.append(1)
        if len(calls) == 3:
            stop.set()  # Ctrl-C during the third attempt
        raise JoinError("none of the initial peers answered (/ip4/10.0.0.1/tcp/1/p2p/Qm): check ...")

    with caplog.at_level(logging.WARNING):
        assert start_with_retry(unreachable, stop, first=0.01, most=0.02) is None
    assert (
        len(calls) == 3
        and caplog.text.count("cannot reach the swarm") == 2
        and "Ctrl-C to stop" in caplog.text
    )

    def bad_port():
        raise JoinError("port 4000 on 127.0.0.1 is in use (another peer?); pick another --port")

    with pytest.raises(JoinError, match="in use"):
        start_with_retry(bad_port, threading.Event(), first=0.01)
