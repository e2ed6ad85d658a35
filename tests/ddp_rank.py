"""One rank of a 2-process gloo run for tests/test_distributed.py (started by mp.spawn).

A module of its own so that a spawned child imports only torch and kdviz.engine, not pytest
or the test module's imports (each child pays its own imports).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

DIGITS = {"teacher": "digits-teacher", "arch": "mlp-30-30", "dataset": "digits"}


def rank_main(rank: int, world: int, port: int, home: str, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        KDVIZ_HOME=home,
        OMP_NUM_THREADS="1",
    )
    import torch

    torch.set_num_threads(1)
    from kdviz.engine import DistillConfig, fit

    cfg = DistillConfig(**DIGITS, epochs=2, batch_size=128, out=f"{out}/rank{rank}")
    result = fit(cfg)
    polls = []  # only rank 0 has a stop hook (the run store's); the others must stop with it
    cancelled = fit(
        DistillConfig(**DIGITS, epochs=2, log_every=2, out=f"{out}/cancel{rank}"),
        should_stop=(lambda: polls.append(1) or len(polls) >= 3) if rank == 0 else None,
    )
    summary = {
        "status": result.status,
        "world_size": result.world_size,
        "device": result.device,
        "cancel_status": cancelled.status,
        "cancel_message": cancelled.message,
    }
    Path(f"{out}/rank{rank}.result.json").write_text(json.dumps(summary))
