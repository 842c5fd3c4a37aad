"""Training under torchrun with DDP (`train.distributed`): two CPU processes (gloo) train the tiny
test model, resume, end with identical weights, and validate every validation video exactly once.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from train import distributed as D

from ._training import tiny_config, tiny_dataset

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- units
def test_without_torchrun_a_run_is_one_process_and_joins_no_group(monkeypatch) -> None:
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    with D.session(torch.device("cpu")) as ctx:
        assert (ctx.rank, ctx.world_size, ctx.enabled, ctx.is_main) == (0, 1, False, True)
        assert not torch.distributed.is_initialized()


def test_the_backend_follows_the_device_and_each_rank_gets_its_own_gpu() -> None:
    assert D.backend_for(torch.device("cpu")) == "gloo"
    assert D.backend_for(torch.device("cuda", 0)) == "nccl"
    assert D.rank_device(torch.device("cuda"), 3, 4) == torch.device("cuda", 3)
    assert D.rank_device(torch.device("cuda", 0), 1, 2) == torch.device("cuda", 1)
    assert D.rank_device(torch.device("cpu"), 1, 2) == torch.device("cpu")


@pytest.mark.parametrize("n,world", [(0, 2), (1, 2), (7, 2), (8, 3), (5, 8)])
def test_validation_shards_cover_every_video_once_and_interleave_back_in_order(n, world):
    shards = [list(D.ShardSampler(n, r, world)) for r in range(world)]
    assert [len(s) for s in shards] == [len(D.ShardSampler(n, r, world)) for r in range(world)]
    assert sorted(i for s in shards for i in s) == list(range(n))       # no padding, no gaps
    assert D.interleave(shards) == list(range(n))


def test_state_digest_tells_equal_weights_from_different_ones() -> None:
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    assert D.state_digest(a) == D.state_digest(b) == D.state_digest(a.state_dict())
    with torch.no_grad():
        b.bias[0] += 1e-6
    assert D.state_digest(a) != D.state_digest(b)


# --------------------------------------------------------------------------- two processes
# `vigil train` with the tiny test model (tests/_training.tiny_config's architecture).
TINY = ["model.backbone.name=small3d", "model.backbone.channels=[4,8,8,8]",
        "model.backbone.pool=[1,2,2]", "model.backbone.pretrained=null", "model.input.frames=8",
        "model.input.size=[32,32]", "model.d_model=16", "model.nheads=2",
        "model.dim_feedforward=32", "model.decoder_layers=1", "model.num_queries=3",
        "data.num_workers=0", "data.batch_size=4", "data.cache=false", "optim.lr=1e-3"]


def _torchrun(data: Path, out: Path, epochs: int) -> str:
    """`torchrun --nproc_per_node=2 vigil train ...` on the CPU (gloo), each rank recording
    its result (`tests/_ddp_worker.py`); returns the ranks' combined output."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "tests._ddp_worker", "train", "--data", str(data), "--out", str(out),
           "--epochs", str(epochs), "--device", "cpu", "--no-progress"]
    cmd += [x for s in TINY for x in ("--set", s)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    return output


def _ranks(out: Path) -> list[dict]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.integration
def test_two_cpu_processes_train_resume_and_validate_the_whole_set_once(tmp_path) -> None:
    from detector.checkpoint import load_checkpoint
    from detector.losses import build_criterion
    from train import engine
    from train.dataset import ClipDataset, collate
    from train.trainer import load_splits

    data = tiny_dataset(tmp_path / "data", videos=12)
    out = tmp_path / "run"
    cfg = tiny_config()
    _, val_records = load_splits(cfg, data)
    assert len(val_records) >= 3    # an odd number of videos over two ranks is the case to test

    # Epoch 1, then an "interrupted" run continued to epoch 2 (resume on every rank).
    _torchrun(data, out, epochs=1)
    first = _ranks(out)
    assert [r["rank"] for r in first] == [0, 1] and {r["world_size"] for r in first} == {2}
    assert first[0]["weights_sha1"] == first[1]["weights_sha1"]
    output = _torchrun(data, out, epochs=2)
    assert output.count("resuming") == 2, output[-4000:]           # every rank resumed
    assert output.count("validation metrics of the best epoch") == 1   # rank 0 printed it
    assert "the 2 ranks end with the same weights" in output
    ranks = _ranks(out)

    # The ranks end with identical weights (parameters and BatchNorm buffers), and they are
    # the weights rank 0 saved.
    state = torch.load(out / "last.pt", map_location="cpu", weights_only=True)["state_dict"]
    assert ranks[0]["weights_sha1"] == ranks[1]["weights_sha1"] == D.state_digest(state)
    assert ranks[0]["weights_sha1"] != first[0]["weights_sha1"]
    assert all(r["epochs_in_history"] == [1, 2] for r in ranks)

    # Only rank 0 wrote: one history line per epoch, one prediction per validation video, in
    # the dataset's order, none twice (no padding of the shards).
    assert [json.loads(line)["epoch"] for line in
            (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    stems = [json.loads(line)["stem"] for line in
             (out / "val_predictions.jsonl").read_text().splitlines()]
    assert stems == [r.stem for r in val_records]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["best.pt", "config.yaml", "last.pt", "metrics.jsonl", "rank0.json", "rank1.json",
         "val_predictions.jsonl"])

    # Every rank got the metrics computed once over the whole validation set: those of a
    # single process evaluating the saved weights on all validation videos.
    assert {r["val_num_videos"] for r in ranks} == {len(val_records)}
    assert ranks[0]["val_video_acc"] == ranks[1]["val_video_acc"]
    assert ranks[0]["val_loss"] == ranks[1]["val_loss"]
    model, model_cfg, _ = load_checkpoint(out / "last.pt")
    loader = torch.utils.data.DataLoader(
        ClipDataset(val_records, model_cfg.input, augment=None, seed=cfg.train.seed,
                    window_s=cfg.data.window_seconds, train=False),
        batch_size=cfg.data.batch_size, collate_fn=collate)
    crit = build_criterion(cfg.loss, model_cfg.num_classes,
                           model_cfg.decoder_layers - 1 if model_cfg.aux_loss else 0)
    single, _ = engine.evaluate(model, crit, loader, torch.device("cpu"), model_cfg.class_names,
                                cfg.train.score_threshold, None, cfg.train.iou_threshold)
    assert single["num_videos"] == ranks[0]["val_num_videos"]
    assert single["video_acc"] == pytest.approx(ranks[0]["val_video_acc"])
    assert single["det_acc"] == pytest.approx(ranks[0]["val_det_acc"], nan_ok=True)
