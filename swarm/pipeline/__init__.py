"""Pipeline-parallel training across peers: stage compute, serving, routing and the trainer.

- `stage_worker.py`: forward/backward/step of one stage's module (`StageWorker`).
- `wire.py`: what crosses the wire: tensors (int8 blockwise by default), msgpack metadata, answer statuses.
- `serving.py`: `StageServer` answers forward/backward over hivemind P2P, with a status for every request.
- `routing.py`: `StageRouter` picks a peer per stage by announced throughput and load; `classify` decides
  reject / retry / ban from each answer.
- `trainer.py`: `Trainer` drives micro-batches through the stages.
- `baseline.py`: `LocalStages`/`train_baseline`, the same stages in one process (the reference run).
- `stage_choice.py`: which stage a joining peer takes, and when a peer re-balances.
"""
