"""Process and event-loop plumbing that both `swarm` and `zk` use, and that imports neither.

- `procs.py`: `ChildProcess`/`ChildSet` (start a child in its own session, always stop its whole group),
  `die_with_parent`, the orphan watchdog, `ShutdownRequested`.
- `loops.py`: `StartStop` (`with component:`), `LoopThread` (an event loop in a thread).
"""
