#!/usr/bin/env bash
# One entry point for a fresh machine: `./dev.sh demo` installs everything and runs the local swarm demo;
# `./dev.sh test` installs everything and runs the test suite. Both are idempotent.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3

install() {
  if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi
  # torch first, pinned, from PyTorch's CPU index (as the Dockerfile does): PyPI's Linux wheel is a multi-GB CUDA
  # build. pip also uses the sources of its own configuration (e.g. a local find-links folder), so an offline
  # machine with the wheel on disk installs it too; only if that fails, fall back to pip's default index.
  .venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0 \
      --index-url https://download.pytorch.org/whl/cpu --retries 2 \
    || .venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
  # Node side: zokrates-js (prover), solc-js (compiler), anvil (dev L2 chain), OpenZeppelin contracts.
  npm install --no-audit --no-fund --silent
}

cmd=${1:-demo}; shift || true
case "$cmd" in
  install) install ;;
  demo) install; exec .venv/bin/python -m swarm.demo "$@" ;;
  test) install
    # the emulated-host tests (tests/integration/test_netlab_*) need iptables for their NAT routers; root only
    if [ "$(id -u)" = 0 ] && ! command -v iptables >/dev/null && command -v apt-get >/dev/null; then
      apt-get install -y -qq iptables >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq iptables; } || true
    fi
    # the dashboard's browser tests (tests/*/test_experiment_dashboard*) drive Debian's chromium; root only
    if [ "$(id -u)" = 0 ] && ! { command -v chromium && command -v chromedriver; } >/dev/null && command -v apt-get >/dev/null; then
      apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium chromium-driver; } || true
    fi
    # the circuit's development keys (zokrates-js's, their groth16py conversion, this machine's batch verifier):
    # made once here, so the first test that needs them does not spend its time budget on a minute of set-up
    .venv/bin/python -c "from swarm.apps.demo.economy import ensure_circuit_keys as e; e('zokrates'); e('groth16py')" \
      || echo "dev.sh: could not prepare the circuit keys now; the tests that need them will make them" >&2
    # three workers (SWARM_TEST_WORKERS=0: none): the swarm and chain tests spend much of their time waiting on
    # rounds and windows, so three at once fit CI's 2 cores (fresh clones, 2 cores: 2 workers 27 min 13 s in all,
    # a helper's demos beside it for part of it; 3 workers 19 min 37 s, load ~5, the same tests passing).
    # A test file runs in one worker, in order (--dist loadfile): its
    # module fixtures (an escrow world its tests use in turn, a ceremony's files under zk/keys/) are made once.
    # (Not loadgroup: pytest-xdist 3.8 cannot rename pytest 9.2's node ids, so its xdist_group marks do nothing.)
    workers="${SWARM_TEST_WORKERS:-3}"
    if [ "$workers" = 0 ]; then exec .venv/bin/python -m pytest -q "$@"; fi
    exec .venv/bin/python -m pytest -q -n "$workers" --dist loadfile "$@" ;;
  *) echo "usage: ./dev.sh {demo|test|install} [args...]" >&2; exit 2 ;;
esac
