"""Per-stage averaging rounds on a clock that the peers and the contract share.

- `clock.py`: `RoundClock`, round = (t - start) // duration.
- `averager.py`: `StageAverager`, one hivemind all-reduce per round among the peers of a stage.
- `compression.py`: the int8 wire codec (the same quantizer the proofs use).
"""
