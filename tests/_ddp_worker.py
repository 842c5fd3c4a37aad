"""One rank of the DDP test (`tests/test_ddp.py`), started by torchrun:

    python -m torch.distributed.run --nproc_per_node=2 -m tests._ddp_worker DATA OUT EPOCHS

Trains the tiny test model (`tests._training.tiny_config`) on DATA into OUT with `train.trainer.fit`
exactly as `vigil train` does, then writes what this rank ended with to OUT/rank<R>.json (the
test's own file, next to the run's): its rank, world size, final weights digest and the
validation metrics it was given.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    from train.trainer import fit

    from tests._training import tiny_config

    data, out, epochs = Path(argv[0]), Path(argv[1]), int(argv[2])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = fit(tiny_config(epochs=epochs), data, out, progress=False)
    last = result["last"]
    row = {"rank": result["rank"], "world_size": result["world_size"],
           "weights_sha1": result["weights_sha1"], "best_epoch": result["best_epoch"],
           "epochs_in_history": [h["epoch"] for h in result["history"]],
           "val_num_videos": last.get("num_videos"), "val_loss": last.get("loss"),
           "val_video_acc": last.get("video_acc")}
    (out / f"rank{result['rank']}.json").write_text(json.dumps(row), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
