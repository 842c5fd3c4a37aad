"""Ensembles (`detector.ensemble`, `vigil ensemble`): several trained detectors served as one
model whose class scores are the mean of theirs, each member seeing the clip at its own size and
statistics; an ensemble file round-trips, loads everywhere a checkpoint loads, and refuses
members that cannot share a clip."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from detector.checkpoint import (ENSEMBLE_FORMAT, is_ensemble, load_checkpoint, save_checkpoint,
                                 save_ensemble)
from detector.config import BackboneConfig, InputConfig, ModelConfig
from detector.ensemble import ScoreEnsemble
from detector.errors import CheckpointError
from detector.init_weights import initialise
from detector.model import build_model
from detector.postprocess import class_scores
from detector.preprocess import normalize_clips


def member_config(size=(32, 32), mean=(0.4, 0.4, 0.4), std=(0.2, 0.2, 0.2), frames=8,
                  classes=("fight", "collapse"), clip_seconds=1.0, queries=4) -> ModelConfig:
    """A tiny random `small3d` detector's config."""
    return ModelConfig(backbone=BackboneConfig(name="small3d", channels=[4, 8, 8, 16],
                                               pool=[1, 2, 2]),
                       input=InputConfig(frames=frames, size=list(size), mean=list(mean),
                                         std=list(std), clip_seconds=clip_seconds),
                       class_names=list(classes), d_model=16, num_queries=queries,
                       decoder_layers=1, nheads=2, dim_feedforward=32)


def member(seed: int, **kw):
    torch.manual_seed(seed)
    cfg = member_config(**kw)
    return build_model(cfg).eval(), cfg


@pytest.fixture(scope="module")
def two_members(tmp_path_factory):
    """Two members that differ in size, statistics and queries, saved as checkpoints."""
    root = tmp_path_factory.mktemp("members")
    a, cfg_a = member(1, size=(32, 32), mean=(0.43, 0.39, 0.37), std=(0.23, 0.22, 0.22))
    b, cfg_b = member(2, size=(48, 40), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                      queries=3)
    return [save_checkpoint(root / "a.pt", a, cfg_a), save_checkpoint(root / "b.pt", b, cfg_b)]


def uint8_clips(n: int, frames: int, size) -> torch.Tensor:
    """(n, T, H, W, 3) uint8 noise with some structure (a moving bright square)."""
    g = torch.Generator().manual_seed(7)
    clips = torch.randint(0, 256, (n, frames, size[0], size[1], 3), generator=g, dtype=torch.uint8)
    for t in range(frames):
        clips[:, t, 4 + t:14 + t, 6:16] = 250
    return clips


def test_the_ensemble_takes_the_largest_size_in_zero_one_and_each_member_gets_its_own(two_members):
    model, cfg, meta = load_checkpoint(two_members[1])
    ens = ScoreEnsemble([load_checkpoint(p)[0] for p in two_members])
    assert ens.cfg.input.size == [48, 40] and ens.cfg.input.frames == 8
    assert ens.cfg.input.mean == [0.0, 0.0, 0.0] and ens.cfg.input.std == [1.0, 1.0, 1.0]
    assert ens.cfg.input.clip_seconds == 1.0
    raw = uint8_clips(2, 8, (48, 40))
    x = normalize_clips(raw, ens.cfg.input.mean, ens.cfg.input.std)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    # The member of the ensemble's own size sees exactly what the daemon would give it alone.
    torch.testing.assert_close(ens.member_input(1, x), normalize_clips(raw, cfg.input.mean,
                                                                       cfg.input.std))
    # The smaller member sees the clip resized (antialiased bilinear), then its own statistics.
    small = ens.member_input(0, x)
    assert small.shape == (2, 3, 8, 32, 32)
    frames = F.interpolate(x.transpose(1, 2).reshape(16, 3, 48, 40), size=(32, 32),
                           mode="bilinear", antialias=True)
    mean = torch.tensor(ens.member_cfgs[0].input.mean).view(1, 3, 1, 1, 1)
    std = torch.tensor(ens.member_cfgs[0].input.std).view(1, 3, 1, 1, 1)
    torch.testing.assert_close(small, (frames.reshape(2, 8, 3, 32, 32).transpose(1, 2) - mean)
                               / std)


def test_each_class_scores_the_members_mean_with_the_surest_members_box(two_members):
    members = [load_checkpoint(p)[0] for p in two_members]
    ens = ScoreEnsemble(members)
    x = normalize_clips(uint8_clips(3, 8, (48, 40)), [0.0] * 3, [1.0] * 3)
    with torch.inference_mode():
        out = ens(x)
        own = [class_scores(m(ens.member_input(i, x))) for i, m in enumerate(members)]
    assert out["pred_logits"].shape == (3, 2, 3) and out["pred_boxes"].shape == (3, 2, 4)
    scores, boxes = class_scores(out)
    torch.testing.assert_close(scores, (own[0][0] + own[1][0]) / 2)
    surest = (own[1][0] > own[0][0]).unsqueeze(-1)
    torch.testing.assert_close(boxes, torch.where(surest, own[1][1], own[0][1]))
    # The set is a proper distribution per prediction: softmax of the logits sums to one.
    torch.testing.assert_close(out["pred_logits"].softmax(-1).sum(-1), torch.ones(3, 2),
                               atol=1e-6, rtol=0)


def test_an_ensemble_file_round_trips_and_says_what_it_is(two_members, tmp_path):
    path = save_ensemble(tmp_path / "ens.pt", two_members, built_from="a test")
    # Plain data only: it loads with weights_only, as every checkpoint must.
    assert torch.load(path, weights_only=True)["format"] == ENSEMBLE_FORMAT
    model, cfg, meta = load_checkpoint(path)
    assert is_ensemble(model) and not model.training
    assert meta["architecture"] == "mean of small3d 32x32 + small3d 40x48"
    assert meta["built_from"] == "a test" and meta["num_parameters"] > 0
    assert cfg.class_names == ["fight", "collapse"] and cfg.input.size == [48, 40]
    fresh = ScoreEnsemble([load_checkpoint(p)[0] for p in two_members])
    x = torch.rand(2, 3, 8, 48, 40)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), fresh(x))


@pytest.mark.parametrize("other, what", [
    (dict(classes=("fight", "fall")), "classes"),
    (dict(frames=16), "input.frames"),
    (dict(clip_seconds=2.0), "input.clip_seconds"),
])
def test_members_that_cannot_share_a_clip_are_refused_by_name(two_members, tmp_path, other, what):
    odd, cfg = member(3, **other)
    odd_path = save_checkpoint(tmp_path / "odd.pt", odd, cfg)
    with pytest.raises(CheckpointError, match=f"member 2 has {what}"):
        save_ensemble(tmp_path / "ens.pt", [two_members[0], odd_path])
    assert not (tmp_path / "ens.pt").exists()


def test_an_ensemble_needs_two_members_and_an_ensemble_member_gives_all_of_its(two_members,
                                                                                tmp_path):
    with pytest.raises(CheckpointError, match="at least two members"):
        save_ensemble(tmp_path / "one.pt", two_members[:1])
    ens = save_ensemble(tmp_path / "ens.pt", two_members)
    third, cfg = member(6, size=(24, 24))
    bigger = save_ensemble(tmp_path / "three.pt",
                           [ens, save_checkpoint(tmp_path / "c.pt", third, cfg)])
    model, _, meta = load_checkpoint(bigger)
    assert len(model.members) == 3 and meta["architecture"].endswith("+ small3d 24x24")
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        save_ensemble(tmp_path / "x.pt", [two_members[0], tmp_path / "missing.pt"])


def test_a_damaged_ensemble_file_is_refused_with_its_name(two_members, tmp_path):
    path = save_ensemble(tmp_path / "ens.pt", two_members)
    data = torch.load(path, weights_only=True)
    data["members"][1]["state_dict"].pop(next(iter(data["members"][1]["state_dict"])))
    torch.save(data, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"bad\.pt member 2: state_dict lacks key"):
        load_checkpoint(tmp_path / "bad.pt")
    data["members"] = "nothing"
    torch.save(data, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="'members' is missing"):
        load_checkpoint(tmp_path / "bad.pt")


def test_an_ensemble_only_infers_and_training_starts_from_its_member_of_the_recipe(
        two_members, tmp_path):
    model, _, _ = load_checkpoint(save_ensemble(tmp_path / "ens.pt", two_members))
    with pytest.raises(RuntimeError, match="only infers"):
        model.train()
    # A recipe of member 2's architecture starts from member 2's weights.
    _, cfg_b, _ = load_checkpoint(two_members[1])
    fresh = build_model(cfg_b)
    initialise(fresh, cfg_b, str(tmp_path / "ens.pt"))
    for key, value in model.members[1].state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    # A recipe that no member has is refused, naming the members.
    other = dataclasses.replace(member_config(), d_model=32, nheads=4)
    with pytest.raises(CheckpointError, match=r"none of its members \(small3d"):
        initialise(build_model(other), other, str(tmp_path / "ens.pt"))


def test_the_daemons_worker_serves_an_ensemble_as_one_model(two_members, tmp_path):
    from streamer.config import ServeModelConfig
    from streamer.worker import WindowMeta, load_worker

    path = save_ensemble(tmp_path / "ens.pt", two_members)
    loaded = load_worker(ServeModelConfig(checkpoint=path, device="cpu", threads=1,
                                          precision="fp32"))
    assert loaded.meta["architecture"] == "mean of small3d 32x32 + small3d 40x48"
    assert list(loaded.worker.input_cfg.size) == [48, 40]
    raw = uint8_clips(2, 8, (48, 40))
    meta = WindowMeta(end_seq=10, t_start_wall=1000.0, t_end_wall=1001.0, t_end_mono=5.0,
                      frame_size=(640, 360))
    results = loaded.worker.infer([("a", raw[0].numpy(), meta), ("b", raw[1].numpy(), meta)])
    members = [load_checkpoint(p)[0] for p in two_members]
    ens = ScoreEnsemble(members)
    x = normalize_clips(raw, [0.0] * 3, [1.0] * 3)
    with torch.inference_mode():
        own = [class_scores(m(ens.member_input(i, x)))[0] for i, m in enumerate(members)]
    for b, res in enumerate(results):
        for k, name in enumerate(["fight", "collapse"]):
            assert res.scores[name].score == pytest.approx(
                float(own[0][b, k] + own[1][b, k]) / 2, abs=1e-4)


def vigil(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamer.cli", *args], capture_output=True,
                          text=True, timeout=120)


def test_vigil_ensemble_writes_the_file_and_prints_each_members_scores(two_members, tmp_path):
    out = tmp_path / "ens.pt"
    run = vigil("ensemble", *map(str, two_members), "--out", str(out))
    assert run.returncode == 0, run.stderr
    assert "mean of small3d 32x32 + small3d 40x48" in run.stdout
    assert "member 1" in run.stdout and "member 2" in run.stdout and "mean: fight" in run.stdout
    assert is_ensemble(load_checkpoint(out)[0])
    run = vigil("ensemble", str(two_members[0]), "--out", str(tmp_path / "one.pt"))
    assert run.returncode == 2 and "at least two" in run.stderr


def test_vigil_ensemble_swap_puts_a_fine_tuned_member_in_place_of_its_architecture(
        two_members, tmp_path):
    ens = save_ensemble(tmp_path / "ens.pt", two_members)
    tuned, cfg = member(9, size=(48, 40), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                        queries=3)
    tuned_path = save_checkpoint(tmp_path / "tuned.pt", tuned, cfg)
    out = tmp_path / "mine.pt"
    run = vigil("ensemble", str(ens), "--swap", str(tuned_path), "--out", str(out))
    assert run.returncode == 0, run.stderr
    assert f"member 2 {tuned_path}" in run.stdout
    model = load_checkpoint(out)[0]
    assert len(model.members) == 2
    for key, value in tuned.state_dict().items():
        assert torch.equal(model.members[1].state_dict()[key], value), key
    odd, odd_cfg = member(10, size=(24, 24))
    run = vigil("ensemble", str(ens), "--swap", str(save_checkpoint(tmp_path / "odd.pt", odd,
                                                                   odd_cfg)),
                "--out", str(tmp_path / "no.pt"))
    assert run.returncode == 2 and "0 members have its architecture" in run.stderr


def test_an_ensemble_file_keeps_the_weights_exactly_and_leaves_out_training_state(tmp_path):
    a, cfg_a = member(4, size=(32, 32))
    b, cfg_b = member(5, size=(40, 40))
    with torch.no_grad():       # a frozen part: weights float16 holds exactly
        for p in b.backbone.parameters():
            p.copy_(p.half().float())
    pa = save_checkpoint(tmp_path / "a.pt", a, cfg_a, optimizer={"state": {}}, rng={"x": 1},
                         epoch=3)
    pb = save_checkpoint(tmp_path / "b.pt", b, cfg_b)
    ens = torch.load(save_ensemble(tmp_path / "ens.pt", [pa, pb]), weights_only=True)
    first, second = ens["members"]
    assert "optimizer" not in first and "rng" not in first and first["epoch"] == 3
    stored = second["state_dict"]
    assert all(stored[k].dtype == torch.float16 for k, _ in b.backbone.named_parameters(
        prefix="backbone"))
    assert any(v.dtype == torch.float32 for v in stored.values())   # the rest stays float32
    loaded = load_checkpoint(tmp_path / "ens.pt")[0]
    for key, value in b.state_dict().items():
        assert torch.equal(loaded.members[1].state_dict()[key], value), key


def test_an_ensemble_exports_to_onnx_with_the_same_outputs(two_members, tmp_path):
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    from detector.export import OnnxModel, check_against_torch, export_onnx

    model, cfg, _ = load_checkpoint(save_ensemble(tmp_path / "ens.pt", two_members))
    runner = OnnxModel(export_onnx(model, cfg, tmp_path / "ens.onnx"))
    assert runner.cfg.input.size == [48, 40]
    diff = check_against_torch(model, runner, torch.rand(3, 3, 8, 48, 40))
    assert max(diff.values()) < 1e-4


def test_boxes_can_come_from_one_member_and_a_rebuilt_ensemble_keeps_that(two_members, tmp_path):
    members = [load_checkpoint(p)[0] for p in two_members]
    x = normalize_clips(uint8_clips(2, 8, (48, 40)), [0.0] * 3, [1.0] * 3)
    ens = ScoreEnsemble(members, box_from=0)
    with torch.inference_mode():
        _, boxes = class_scores(ens(x))
        _, first = class_scores(members[0](ens.member_input(0, x)))
    torch.testing.assert_close(boxes, first)
    with pytest.raises(CheckpointError, match="box_from 2"):
        ScoreEnsemble(members, box_from=2)
    run = vigil("ensemble", *map(str, two_members), "--boxes-from", "1", "--out",
                str(tmp_path / "ens.pt"))
    assert run.returncode == 0, run.stderr
    assert load_checkpoint(tmp_path / "ens.pt")[0].box_from == 0
    tuned, cfg = member(11, size=(48, 40), mean=(0.485, 0.456, 0.406),
                        std=(0.229, 0.224, 0.225), queries=3)
    run = vigil("ensemble", str(tmp_path / "ens.pt"), "--swap",
                str(save_checkpoint(tmp_path / "t.pt", tuned, cfg)), "--out",
                str(tmp_path / "mine.pt"))
    assert run.returncode == 0, run.stderr
    assert load_checkpoint(tmp_path / "mine.pt")[0].box_from == 0
    run = vigil("ensemble", *map(str, two_members), "--boxes-from", "3", "--out",
                str(tmp_path / "no.pt"))
    assert run.returncode == 2 and "there are 2 members" in run.stderr
