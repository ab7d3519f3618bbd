# swarm peer image: the same install steps as ./dev.sh install (Python 3.11, torch CPU wheel first, Node 20 parts).
# Not built in our CI (no Docker engine there); kept in step with dev.sh by hand.
FROM python:3.11-slim-bookworm

RUN apt-get update && apt-get install -y --no-install-recommends procps ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# Node 20 as the README asks (Debian bookworm's own nodejs is 18): node and npm from the official node image.
COPY --from=node:20-bookworm-slim /usr/local/bin/node /usr/local/bin/node
COPY --from=node:20-bookworm-slim /usr/local/lib/node_modules /usr/local/lib/node_modules
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm && node --version && npm --version

WORKDIR /opt/swarm
COPY pyproject.toml README.md package.json package-lock.json dev.sh ./
COPY runtime ./runtime
COPY protocol ./protocol
COPY swarm ./swarm
COPY zk ./zk
COPY contracts ./contracts
COPY peers ./peers
COPY experiments ./experiments

# torch first and pinned to the CPU build; a GPU image swaps this line for a CUDA wheel index.
RUN python -m pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
    && python -m pip install --no-cache-dir -e . \
    && npm ci --no-audit --no-fund

# Volunteers: mount a 0600 key file and pass its path; never put a key in argv or env of a shared host.
ENTRYPOINT ["python", "-m", "swarm.peer"]
CMD ["--help"]
