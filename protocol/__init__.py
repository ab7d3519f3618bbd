"""The protocol's shared record and rules, read by the peer (`swarm`), the prover (`zk`) and the contract.

- `contribution.py`: `Contribution` (experiment, round, stage, peer, root, ‖Δ‖², proof), its msgpack, ABI and
  public-input forms, and the BN254 scalar field.
- `fixed_point.py`: the fixed-point scale of norms.
- `sampling.py`: which chunk a contribution proves and which chunks an audit challenges.
"""
