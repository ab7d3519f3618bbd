"""What a paid stage peer does with each round on-chain.

- `settler.py`: `RoundSettler`, the round hook: quantize → commit → prove → contribute, answer audits,
  finalize and claim, in a background thread.
"""
