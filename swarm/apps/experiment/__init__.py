"""`swarm-experiment`: a researcher's experiment from one file (issue 10).

- `config.py`: the experiment file (TOML), validated; `cli.py`: launch | status | stop | results | export;
- `supervisor.py`: the detached owner process (chain, escrow experiment, bootstrap, monitor, local peers);
- `monitor.py` + `web.py` + `static/`: the read-only monitor and its live web dashboard (aiohttp, SSE);
- `checkpoint.py`: the stage peers' round hook that saves the model every N rounds, and resuming from it;
- `results.py`: the run's report (vs the single-process baseline) and the exported model with its card.
"""
