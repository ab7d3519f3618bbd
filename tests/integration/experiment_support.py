"""Helpers of the swarm-experiment tests: run the CLI as a user does, wait on the state, drive headless chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runtime import procs

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("SWARM_TEST_ARTIFACTS", REPO / "runs" / "test-artifacts"))
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,1100")  # fmt: skip


def cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m swarm.experiment ARGS` in `cwd`, as a researcher runs it."""
    return procs.run([sys.executable, "-m", "swarm.experiment", *args], cwd=cwd, capture_output=True, check=False,
                          text=True, timeout=timeout)  # fmt: skip


def write_toml(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def state(state_dir: Path) -> dict[str, Any]:
    return json.loads((state_dir / "state.json").read_text())


def snapshot(state_dir: Path) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(state(state_dir)["dashboard_url"] + "api/state", timeout=5) as r:
            return json.loads(r.read())
    except (OSError, ValueError, KeyError):
        return None


def wait_for(what: str, predicate: Callable[[], Any], timeout: float, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def chromium_driver(tmp_path: Path):
    """A headless Debian chromium driven by selenium (skipped where the browser is not installed)."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("chromium + chromium-driver are not installed (./dev.sh test installs them as root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        opts.add_argument(flag)
    profile = tmp_path / "chromium-profile"
    shutil.rmtree(profile, ignore_errors=True)
    opts.add_argument(f"--user-data-dir={profile}")
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def save_screenshot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    return path
