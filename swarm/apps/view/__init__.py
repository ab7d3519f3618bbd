"""What a volunteer sees of their own peer: one state built from the peer's events (and the chain), rendered as a
live rich panel, as plain log lines, as a status file for `swarm-peer status` and as the summary on exit.

- `state.py`: `PeerState` (the facts, from events and chain reads) and its warnings, each with what to do.
- `render.py`: the panel, the plain lines, the summary, and money formatting; `swarm-demo` uses the same rows.
- `monitor.py`: `PeerMonitor`, the running peer's side: event sink, live panel or lines, status file, chain poller.
- `status_file.py`: the status file a running peer keeps (atomic, 0600, no key material), read by `status`.
"""
