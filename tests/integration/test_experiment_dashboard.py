"""The dashboard in a real headless browser (Debian chromium driven by selenium):

- a launched swarm's page shows its live peers and rounds, updates as rounds go by, and shows an error state when
  the monitor loses the swarm (screenshots saved under runs/test-artifacts/, or $SWARM_TEST_ARTIFACTS);
- every reward figure on the page equals the chain's own (escrow events and token balances on a real anvil).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from experiment_support import chromium_driver, cli, save_screenshot, snapshot, state, wait_for, write_toml

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

TOKEN = 10**18


def _rows(driver, table: str) -> list[dict]:
    """The table's rows as {data-* attributes..., "text": ...}, read in one script: the page re-renders on every
    update, so an element found in one call may be gone in the next."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map("
        "tr => Object.assign({text: tr.innerText}, tr.dataset))", f"#{table} tbody tr")


def _text(driver, element_id: str) -> str:
    return driver.execute_script("return document.getElementById(arguments[0]).innerText", element_id)


def _health(driver) -> str:
    return driver.execute_script("return document.getElementById('health').dataset.state")


def test_live_swarm_in_a_browser_then_lost(tmp_path: Path):
    toml = write_toml(tmp_path / "exp.toml", {
        "experiment": {"name": "webtest", "round_duration": 4, "lr": 0.003},
        "economy": {"chain": "none"}, "checkpoints": {"every_rounds": 3},
        "monitor": {"poll_seconds": 1.0}, "local": {"stage_peers": 2, "trainers": 1},
    })  # fmt: skip
    sd = tmp_path / "state"
    out = cli("launch", str(toml), "--state-dir", str(sd), cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    driver = None
    try:
        driver = chromium_driver(tmp_path)
        driver.get(state(sd)["dashboard_url"])
        assert driver.title == "swarm experiment"
        wait_for("the page to show 2 live stage peers", lambda: len(_rows(driver, "peers")) == 2
                 and _health(driver) == "ok", 120)  # fmt: skip
        shown = {r["peer"] for r in _rows(driver, "peers")}
        assert shown == {p["peer_id"] for s in snapshot(sd)["stages"] for p in s["peers"]}
        assert _text(driver, "name") == "webtest" and _text(driver, "n-peers") == "2"
        wait_for("rounds on the page", lambda: len(_rows(driver, "rounds")) > 0, 60)
        first_round = int(_text(driver, "round"))
        top = _rows(driver, "rounds")[0]["round"]
        wait_for("the page to move on by two rounds", lambda: int(_text(driver, "round")) >= first_round + 2
                 and _rows(driver, "rounds")[0]["round"] != top, 60)  # fmt: skip
        wait_for("a training loss curve", lambda: driver.execute_script(
            "const p = document.querySelector('#loss-chart polyline');"
            "return p ? p.getAttribute('points').split(' ').length : 0") >= 10, 180)
        wait_for("the swarm's loss curve (the trainers' DHT reports)", lambda: driver.execute_script(
            "const p = document.querySelector('#loss-chart polyline.swarm');"
            "return p ? p.getAttribute('points').split(' ').length : 0") >= 2, 120)
        assert _text(driver, "swarm-loss").endswith("(1 trainers)")
        save_screenshot(driver, "experiment-dashboard.png")

        # the swarm goes away (bootstrap, stage peers, trainer); the monitor stays and must say so
        procs = state(sd)["processes"]
        for name, p in procs.items():
            if name != "monitor":
                os.kill(p["pid"], signal.SIGINT)
        wait_for("the page's error state", lambda: _health(driver) == "error", 120)
        assert "lost the swarm" in _text(driver, "health")
        assert "lost the swarm" in _text(driver, "error")
        save_screenshot(driver, "experiment-dashboard-lost.png")

        assert cli("stop", "--state-dir", str(sd), cwd=tmp_path).returncode == 0  # the monitor goes too
        wait_for("the page to say the monitor is gone", lambda: "monitor unreachable" in _text(driver, "health"), 60)
    finally:
        if driver is not None:
            driver.quit()
        cli("stop", "--state-dir", str(sd), cwd=tmp_path)


def test_every_reward_on_the_page_equals_the_chain(tmp_path: Path):
    from swarm.apps.experiment.monitor import Monitor
    from swarm.apps.experiment.web import DashboardThread
    from swarm.chain import DevChain
    from swarm.chain.testing import EscrowWorld
    from swarm.network.dht import local_dhts, visible_multiaddrs
    from swarm.network.records import ExperimentRecord, publish_experiment

    with DevChain(accounts=4) as chain, local_dhts(1) as (dht,):
        world = EscrowWorld(chain)
        reward, pool = 3 * TOKEN + 7, 20 * TOKEN
        world.mint(world.funder.address, pool)
        exp = world.create_experiment(reward_per_round=reward, pool=pool)
        a, b = world.peers[:2]
        for p in (a, b):
            p.stake(100)
        balances = {p.address: p.token_balance() for p in (a, b)}
        proven = world.prove([world.contribution(a, exp, 0, 0, 11), world.contribution(b, exp, 0, 1, 22)], exp)
        for p, c in zip((a, b), proven, strict=True):
            p.contribute(c)
        world.goto(exp, 0, "after")
        world.funder.finalize(exp, 0)
        a.claim(exp, 0, 0)
        b.claim(exp, 0, 1)
        publish_experiment(dht, ExperimentRecord(name="paid", workload="digits", n_stages=2, round_duration=10.0,
                                                 start_time=time.time(), chain_experiment_id=exp))  # fmt: skip
        monitor = Monitor("paid", visible_multiaddrs(dht), chain=(chain.rpc_url, world.escrow, exp),
                          poll_seconds=0.5).start()  # fmt: skip
        dash, driver = None, None
        try:
            def claims_read():
                s = monitor.get()[1]
                rows = (s.get("chain") or {}).get("rewards", [])
                return s if len(rows) == 2 and all(r["claims"] for r in rows) else None

            snap = wait_for("the monitor to read the claims", claims_read, 60)
            claimed = {}
            for e in world.funder.events("Claimed"):
                claimed[e["peer"]] = claimed.get(e["peer"], 0) + int(e["amount"])
            paid_by_balance = {p.address: p.token_balance() - balances[p.address] for p in (a, b)}
            assert claimed == paid_by_balance and all(v > TOKEN for v in claimed.values())
            rows = {r["peer"]: r for r in snap["chain"]["rewards"]}
            assert {k: int(r["claimed_wei"]) for k, r in rows.items()} == claimed
            assert int(snap["chain"]["pool_wei"]) == world.funder.experiment(exp).pool
            assert int(snap["chain"]["paid_wei"]) == sum(claimed.values())
            assert snap["monitor"]["holds_key"] is False and monitor.chain.client.wallet is None

            dash = DashboardThread(monitor)
            driver = chromium_driver(tmp_path)
            driver.get(dash.url)
            wait_for("reward rows on the page", lambda: len(_rows(driver, "rewards")) == 2, 60)
            for row in _rows(driver, "rewards"):
                wei = claimed[row["peer"]]
                assert int(row["claimedWei"]) == wei
                whole, frac = divmod(wei, TOKEN)
                assert f"{whole}.{frac * 10_000 // TOKEN:04d} SWT" in row["text"]
            pool_left = world.funder.experiment(exp).pool
            assert _text(driver, "pool") == f"{pool_left // TOKEN}.{pool_left % TOKEN * 10_000 // TOKEN:04d} SWT"
            total = sum(claimed.values())
            assert _text(driver, "paid") == f"{total // TOKEN}.{total % TOKEN * 10_000 // TOKEN:04d} SWT"
            assert _text(driver, "proofs") == "2"
            save_screenshot(driver, "experiment-dashboard-rewards.png")
        finally:
            if driver is not None:
                driver.quit()
            if dash is not None:
                dash.stop()
            monitor.stop()
