"""What a paid stage peer does with each round on-chain.

- `settler.py`: `RoundSettler`, the round hook: quantize → commit → prove → contribute, answer audits,
  finalize and claim, in a background thread.
- `journal.py`: `Journal`, the settler's crash-safe SQLite record of open rounds, audits and signed transactions,
  and `TxReconciler`, which resends, waits for or drops them against the chain (docs/protocol.md, "The
  settler's journal").
"""
