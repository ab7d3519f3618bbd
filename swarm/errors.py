"""Shared exception types of the swarm peer: each is raised with a sentence a volunteer can act on.

Other parts may add theirs here; `swarm-peer` turns any of them into one line (`summary` + the message) and exits
with its `exit_code`.
"""

from __future__ import annotations


class SwarmError(RuntimeError):
    """Base of the swarm's own errors."""

    exit_code = 1  # what swarm-peer exits with when this error stops it
    summary = ""  # how swarm-peer's one-line message starts


class JoinError(SwarmError):
    """This peer could not join the swarm: a malformed or unreachable initial peer, or a port already in use."""

    exit_code = 3
    summary = "cannot join the swarm: "


class LostSwarmError(SwarmError):
    """This peer joined, then lost the swarm: e.g. a trainer whose stage has had no reachable peer for too long."""

    exit_code = 4
    summary = "lost the swarm: "


class RecordError(SwarmError, ValueError):
    """A DHT record is malformed (wrong schema, bad field) and cannot be stored or read."""


class AveragingError(SwarmError):
    """A stage's averaging could not be set up (e.g. the stage's module has no parameters)."""
