"""Shared exception types of the swarm peer: each is raised with a sentence a volunteer can act on.

Other parts may add theirs here; the CLI turns any of them into one line and an exit code.
"""

from __future__ import annotations


class SwarmError(RuntimeError):
    """Base of the swarm's own errors."""


class JoinError(SwarmError):
    """This peer could not join the swarm: a malformed or unreachable initial peer, or a port already in use."""


class RecordError(SwarmError, ValueError):
    """A DHT record is malformed (wrong schema, bad field) and cannot be stored or read."""


class AveragingError(SwarmError):
    """A stage's averaging could not be set up (e.g. the stage's module has no parameters)."""
