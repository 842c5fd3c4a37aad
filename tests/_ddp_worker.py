"""One rank of the DDP test (`tests/test_ddp.py`): `vigil ARGS` as torchrun starts it,

    python -m torch.distributed.run --nproc_per_node=2 -m tests._ddp_worker train --out OUT ...

plus a record of what this rank's `train.trainer.fit` returned, written to OUT/rank<R>.json (the
test's own file, next to the run's): rank, world size, final weights digest, the epochs of its
history and the last validation metrics it was given. The command itself runs unchanged.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def main(argv: list[str]) -> int:
    import train.trainer
    from streamer.cli import main as vigil

    fit = train.trainer.fit
    seen: dict[str, Any] = {}

    def recording_fit(*args: Any, **kwargs: Any) -> dict[str, Any]:
        result = fit(*args, **kwargs)
        seen.update(result, out=Path(args[2]))
        return result

    train.trainer.fit = recording_fit       # `vigil train` imports it when it runs
    code = vigil(argv)
    if code == 0:
        last = seen["last"]
        row = {"rank": seen["rank"], "world_size": seen["world_size"],
               "weights_sha1": seen["weights_sha1"], "best_epoch": seen["best_epoch"],
               "epochs_in_history": [h["epoch"] for h in seen["history"]],
               "val_num_videos": last.get("num_videos"), "val_loss": last.get("loss"),
               "val_video_acc": last.get("video_acc"), "val_det_acc": last.get("det_acc")}
        (seen["out"] / f"rank{seen['rank']}.json").write_text(json.dumps(row), encoding="utf-8")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
