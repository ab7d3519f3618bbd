"""Per-stage averaging through real hivemind averagers (each with its own DHT and p2pd) on loopback."""

from __future__ import annotations

import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from swarm.errors import AveragingError
from swarm.network.dht import create_dht, local_dhts, visible_multiaddrs
from swarm.rounds.averager import RoundResult, StageAverager

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

MATCHMAKING = 4.0  # seconds of matchmaking per round (request timeouts are half of it; CI shares 2 cores)
STEP_TIMEOUT = 15.0


def make_module(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.Tanh(), torch.nn.Linear(64, 8))


def flat(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


@pytest.fixture
def experiment() -> str:
    return f"avg{uuid.uuid4().hex[:8]}"


def averagers(dhts, experiment: str, modules, **kwargs) -> list[StageAverager]:
    kwargs.setdefault("matchmaking_time", MATCHMAKING)
    return [StageAverager(d, experiment, 0, m, **kwargs) for d, m in zip(dhts, modules)]


def step_all(avs: list[StageAverager], rounds: list[int]) -> list[RoundResult]:
    with ThreadPoolExecutor(len(avs)) as pool:
        return list(pool.map(lambda a_r: a_r[0].step(a_r[1], timeout=STEP_TIMEOUT), zip(avs, rounds)))


def shutdown_all(avs: list[StageAverager]) -> None:
    for a in avs:
        a.shutdown()


def test_three_peers_of_a_stage_agree_on_the_exact_mean_after_a_round(experiment):
    modules = [make_module(i) for i in range(3)]
    exact = torch.stack([flat(m) for m in modules]).mean(0)
    with local_dhts(3) as dhts:
        avs = averagers(dhts, experiment, modules, compression="none")
        try:
            results = step_all(avs, [4, 4, 4])
        finally:
            shutdown_all(avs)
    assert [r.group_size for r in results] == [3, 3, 3]
    assert all(r.averaged and r.round == 4 and r.bytes_sent > 0 and r.bytes_received > 0 for r in results)
    for m in modules:
        torch.testing.assert_close(flat(m), exact, rtol=0, atol=1e-6)


def test_int8_round_is_close_to_the_exact_mean_and_sends_a_quarter_of_the_bytes(experiment):
    modules = [make_module(10 + i) for i in range(2)]
    exact = torch.stack([flat(m) for m in modules]).mean(0)
    step = float(exact.abs().max()) / 127  # one int8 level of the largest block
    n_bytes = 4 * exact.numel()
    with local_dhts(2) as dhts:
        avs = averagers(dhts, experiment, modules, compression="int8")
        try:
            results = step_all(avs, [0, 0])
        finally:
            shutdown_all(avs)
    assert [r.group_size for r in results] == [2, 2]
    for m in modules:
        error = (flat(m) - exact).abs()
        assert float(error.max()) <= 2 * step  # quantization of a part and of the averaged delta sent back
        assert float(error.max()) > 0  # it really went through the quantizer
    sent = sum(r.bytes_sent for r in results)
    # in fp32 each of 2 peers sends the half the other reduces and the averaged delta of its own half: 2 x n_bytes
    assert 0.2 * 2 * n_bytes < sent < 0.35 * 2 * n_bytes, (sent, n_bytes)


def test_peers_in_different_rounds_do_not_average(experiment):
    modules = [make_module(20 + i) for i in range(2)]
    before = [flat(m).clone() for m in modules]
    with local_dhts(2) as dhts:
        avs = averagers(dhts, experiment, modules, compression="none")
        try:
            with ThreadPoolExecutor(2) as pool:
                results = list(pool.map(lambda a_r: a_r[0].step(a_r[1], timeout=4.0), zip(avs, [7, 8])))
        finally:
            shutdown_all(avs)
    assert [r.group_size for r in results] == [1, 1]
    assert not any(r.averaged for r in results)
    for m, b in zip(modules, before):
        assert torch.equal(flat(m), b)


def test_a_peer_alone_in_its_stage_skips_the_round_and_keeps_its_parameters(experiment):
    module = make_module(30)
    before = flat(module).clone()
    with local_dhts(1) as (dht,):
        (av,) = averagers([dht], experiment, [module])
        try:
            result = av.step(0, timeout=STEP_TIMEOUT)
            assert not av.load_state_from_peers(timeout=3.0)  # nobody to download from
        finally:
            av.shutdown()
        with pytest.raises(AveragingError, match="shut down"):
            av.step(1, timeout=STEP_TIMEOUT)
    assert result.group_size == 1 and not result.averaged
    assert torch.equal(flat(module), before)


def test_a_module_without_parameters_is_refused():
    with pytest.raises(AveragingError, match="no parameters"):
        StageAverager(None, "x", 0, torch.nn.ReLU())  # type: ignore[arg-type] - refused before the DHT is used


def test_local_steps_taken_during_a_round_are_kept(experiment):
    """The averager adds the averaging's shift to the live parameters instead of overwriting them."""
    modules = [make_module(40 + i) for i in range(2)]
    exact = torch.stack([flat(m) for m in modules]).mean(0)
    nudge = 0.5
    with local_dhts(2) as dhts:
        avs = averagers(dhts, experiment, modules, compression="none")
        try:
            with ThreadPoolExecutor(3) as pool:
                futures = [pool.submit(a.step, 1, STEP_TIMEOUT) for a in avs]
                # the round's Δ is set right after its snapshot; the all-reduce starts only after matchmaking
                assert wait_for(lambda: avs[0].last_delta is not None, STEP_TIMEOUT)
                assert not futures[0].done()
                with avs[0].lock, torch.no_grad():
                    modules[0][0].bias.add_(nudge)  # a local optimizer step while the round runs
                results = [f.result() for f in futures]
            n_bias = modules[0][0].bias.numel()
            offset = modules[0][0].weight.numel()
            expected = exact.clone()
            expected[offset : offset + n_bias] += nudge
            torch.testing.assert_close(flat(modules[0]), expected, rtol=0, atol=1e-6)
            torch.testing.assert_close(flat(modules[1]), exact, rtol=0, atol=1e-6)
            step_all(avs, [2, 2])
        finally:
            shutdown_all(avs)
    assert [r.group_size for r in results] == [2, 2]
    # the step taken while round 1 averaged belongs to round 2's update Δ (review change 1), and nothing else does
    nudged = torch.zeros_like(exact)
    nudged[offset : offset + n_bias] = nudge
    torch.testing.assert_close(avs[0].last_delta, nudged, rtol=0, atol=1e-6)
    torch.testing.assert_close(avs[1].last_delta, torch.zeros_like(exact), rtol=0, atol=1e-6)


def test_a_late_joiner_downloads_the_stages_current_parameters(experiment):
    modules = [make_module(50 + i) for i in range(2)]
    joiner_module = make_module(99)
    with local_dhts(3) as dhts:
        avs = averagers(dhts[:2], experiment, modules, compression="int8")
        try:
            step_all(avs, [3, 3])
            with avs[0].lock, torch.no_grad():
                modules[0][2].bias.add_(1.0)  # the live parameters moved on since the round
            current = flat(modules[0]).clone()
            (joiner,) = averagers(dhts[2:], experiment, [joiner_module])
            avs.append(joiner)
            assert joiner.load_state_from_peers(timeout=20.0)
        finally:
            shutdown_all(avs)
    assert joiner.last_round == 3
    downloaded = flat(joiner_module)
    # it came from one of the two peers, exactly (the state is sent uncompressed)
    assert torch.equal(downloaded, current) or torch.equal(downloaded, flat(modules[1]))


def test_joiners_download_from_a_peer_that_has_run_rounds_not_from_another_joiner(experiment):
    veteran_module, fresh_module, joiner_module = make_module(70), make_module(71), make_module(72)
    with local_dhts(3) as dhts:
        (veteran,) = averagers(dhts[:1], experiment, [veteran_module])
        avs = [veteran]
        try:
            veteran.step(
                2, timeout=STEP_TIMEOUT
            )  # alone: skipped, but its parameters are now those of round 2
            avs += averagers(
                dhts[1:], experiment, [fresh_module, joiner_module]
            )  # two joiners, neither synced
            # both possible sources must be visible to the joiner, else it would download from the veteran anyway
            sources = {veteran.dht.peer_id.to_bytes(), avs[1].dht.peer_id.to_bytes()}
            assert wait_for(lambda: sources <= avs[2]._declared_averagers(), STEP_TIMEOUT)
            assert avs[2].load_state_from_peers(timeout=20.0)
        finally:
            shutdown_all(avs)
    assert torch.equal(flat(joiner_module), flat(veteran_module))
    assert avs[2].last_round == 2


def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def declared(dht, group_key: str) -> int:
    found = dht.get(group_key, latest=True)
    return len(found.value) if found is not None and isinstance(found.value, dict) else 0


def test_a_peer_killed_mid_round_does_not_stop_the_others(experiment, children):
    modules = [make_module(60 + i) for i in range(2)]
    lines: list[str] = []
    with local_dhts(2) as dhts:
        victim = children.start(
            [sys.executable, __file__, "peer", visible_multiaddrs(dhts[0])[0], experiment, "5"],
            name="victim-averager",
            on_line=lines.append,
        )
        avs = averagers(dhts, experiment, modules, compression="none")
        try:
            assert wait_for(lambda: "ready" in lines, 60.0), f"the victim peer did not start: {lines}"
            with ThreadPoolExecutor(2) as pool:
                group_key = f"{avs[0].prefix}.0b{5:b}"
                assert wait_for(
                    lambda: declared(dhts[0], group_key) == 1, STEP_TIMEOUT
                )  # the victim looks first
                futures = [pool.submit(a.step, 5, STEP_TIMEOUT) for a in avs]
                # kill it once all three have declared themselves for round 5's group (matchmaking is under way)
                assert wait_for(lambda: declared(dhts[0], group_key) == 3, STEP_TIMEOUT)
                victim.send_signal(signal.SIGKILL)
                victim.stop()  # its DHT process and p2pd go too: the whole peer vanishes
                first = [f.result() for f in futures]
            second = step_all(avs, [6, 6])
        finally:
            shutdown_all(avs)
    # the round returned on every survivor within its deadline, averaged or skipped, not hung on the dead peer
    assert len(first) == 2 and all(r.seconds < STEP_TIMEOUT + MATCHMAKING + 5 for r in first)
    assert [r.group_size for r in second] == [2, 2]
    torch.testing.assert_close(flat(modules[0]), flat(modules[1]), rtol=0, atol=1e-6)


def _run_peer(initial_peer: str, experiment: str, r: int) -> None:
    """A stage peer in its own process (for the kill test): join, say 'ready', average round `r`, wait."""
    dht = create_dht([initial_peer])
    averager = StageAverager(
        dht, experiment, 0, make_module(7), compression="none", matchmaking_time=MATCHMAKING
    )
    try:
        print("ready", flush=True)
        averager.step(r, timeout=STEP_TIMEOUT)
        threading.Event().wait(60)
    finally:
        averager.shutdown()
        dht.shutdown()


if __name__ == "__main__" and sys.argv[1:2] == ["peer"]:
    _run_peer(sys.argv[2], sys.argv[3], int(sys.argv[4]))
