"""The training loop, evaluation, and the trainer's checkpoints and exact resume."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from detector.losses import build_criterion
from detector.model import build_model
from train import engine

from ._training import tiny_config, tiny_dataset


def fake_batches(n_batches: int, batch: int, cfg, seed: int = 0):
    """(uint8 clips, targets) batches of random pixels, half of the clips with one box."""
    g = torch.Generator().manual_seed(seed)
    T, (H, W) = cfg.model.input.frames, cfg.model.input.size
    out = []
    for b in range(n_batches):
        clips = torch.randint(0, 256, (batch, T, H, W, 3), dtype=torch.uint8, generator=g)
        targets = []
        for i in range(batch):
            if i % 2 == 0:
                targets.append({"labels": torch.tensor([i % 4 // 2]),
                                "boxes": torch.tensor([[0.5, 0.5, 0.3, 0.4]]),
                                "stem": f"v{b}_{i}"})
            else:
                targets.append({"labels": torch.zeros(0, dtype=torch.int64),
                                "boxes": torch.zeros(0, 4), "stem": f"v{b}_{i}"})
        out.append((clips, targets))
    return out


def setup(seed: int = 0):
    torch.manual_seed(seed)
    cfg = tiny_config()
    model = build_model(cfg.model)
    crit = build_criterion(cfg.loss, cfg.model.num_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    return cfg, model, crit, opt


def test_train_one_epoch_returns_named_finite_terms_and_updates_weights():
    cfg, model, crit, opt = setup()
    before = [p.detach().clone() for p in model.parameters()]
    stats = engine.train_one_epoch(model, crit, fake_batches(2, 4, cfg), opt, None,
                                   torch.device("cpu"), 1, grad_clip=0.5, amp=None, scaler=None,
                                   progress=False)
    for key in ("loss_ce", "loss_bbox", "loss_giou", "loss"):
        assert math.isfinite(stats[key]) and stats[key] >= 0
    assert stats["loss"] == pytest.approx(2 * stats["loss_ce"] + 5 * stats["loss_bbox"]
                                          + 2 * stats["loss_giou"], rel=1e-5)
    assert stats["steps"] == 2
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_a_non_finite_loss_stops_training_with_every_term_in_the_message():
    cfg, model, crit, opt = setup()

    class NanCriterion:
        def __call__(self, outputs, targets):
            terms = crit(outputs, targets)
            terms["loss_bbox"] = terms["loss_bbox"] * float("nan")
            return terms

        def total(self, terms):
            return crit.total(terms)

    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(engine.NonFiniteLossError, match=r"loss_bbox.*nan"):
        engine.train_one_epoch(model, NanCriterion(), fake_batches(1, 2, cfg), opt, None,
                               torch.device("cpu"), 3, 0.5, None, None, progress=False)
    # Nothing was stepped with the bad loss.
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_evaluate_gives_report_metrics_losses_and_per_video_predictions():
    cfg, model, crit, _ = setup()
    metrics, preds = engine.evaluate(model, crit, fake_batches(2, 3, cfg), torch.device("cpu"),
                                     cfg.model.class_names, score_threshold=0.3)
    assert metrics["num_videos"] == 6 and len(preds) == 6
    for key in ("video_acc", "det_acc", "miou", "loss", "loss_ce", "map50"):
        assert key in metrics
    assert preds[0]["probs"].shape == (3, 3) and preds[0]["boxes"].shape == (3, 4)
    assert np.allclose(preds[0]["probs"].sum(-1), 1.0, atol=1e-5)
    assert {p["stem"] for p in preds} == {f"v{b}_{i}" for b in range(2) for i in range(3)}
    assert not model.training


def test_evaluate_without_boxes_gives_video_metrics_and_nan_box_metrics_per_source():
    cfg, model, crit, _ = setup()
    batches = fake_batches(2, 3, cfg)
    for _, targets in batches:
        for t in targets:      # video-level labels only, as real footage has them
            t["has_box"] = torch.zeros(len(t["labels"]), dtype=torch.bool)
            t["boxes"] = torch.zeros(len(t["labels"]), 4)
            t["source"] = "real"
    metrics, preds = engine.evaluate(model, crit, batches, torch.device("cpu"),
                                     cfg.model.class_names, score_threshold=0.3)
    assert metrics["num_videos"] == 6 and not math.isnan(metrics["video_acc"])
    assert math.isnan(metrics["det_acc"]) and math.isnan(metrics["map50"])
    assert metrics["box_metrics"] == "no boxes in this set" and metrics["box_videos"] == 0
    assert {p["source"] for p in preds} == {"real"} and not any(p["in_box_metrics"] for p in preds)


def test_resolve_amp_uses_bf16_on_cpu_only_when_asked():
    cpu = torch.device("cpu")
    assert engine.resolve_amp("auto", cpu) is None
    assert engine.resolve_amp("on", cpu) is torch.bfloat16
    assert engine.resolve_amp("off", cpu) is None
    assert engine.resolve_amp("auto", torch.device("cuda")) is torch.float16


def test_cosine_schedule_goes_from_lr_to_lr_min_after_warmup():
    from train.trainer import lr_lambda

    cfg = tiny_config(epochs=10, **{"optim.warmup_epochs": 2, "optim.schedule": "step",
                                    "optim.lr": 1e-3, "optim.lr_min": 1e-5})
    f = lr_lambda(cfg, steps_per_epoch=5)
    assert f(0) == pytest.approx(0.01)
    assert f(10) == pytest.approx(1.0)
    assert f(50) == pytest.approx(0.01)
    assert f(30) == pytest.approx(0.01 + 0.5 * 0.99)
    assert all(f(t) >= f(t + 1) for t in range(10, 50))


def _train(cfg, data, out, interrupt_after: int | None = None, monkeypatch=None):
    from train import trainer

    if interrupt_after is not None:
        real = engine.train_one_epoch
        calls = {"n": 0}

        def flaky(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] > interrupt_after:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        monkeypatch.setattr(engine, "train_one_epoch", flaky)
        with pytest.raises(KeyboardInterrupt):
            trainer.fit(cfg, data, out, progress=False)
        monkeypatch.setattr(engine, "train_one_epoch", real)
        return None
    return trainer.fit(cfg, data, out, progress=False)


def _history(path):
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for r in rows:
        r.pop("seconds")
        r["train"].pop("seconds")
        r["val"].pop("seconds")
    return rows


def test_resume_after_an_interruption_gives_the_same_run_as_no_interruption(tmp_path,
                                                                            monkeypatch):
    data = tiny_dataset(tmp_path / "data")
    cfg = tiny_config(cache_dir=tmp_path / "cache", epochs=2)

    straight = _train(cfg, data, tmp_path / "a")
    _train(cfg, data, tmp_path / "b", interrupt_after=1, monkeypatch=monkeypatch)
    assert json.loads((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()[-1])["epoch"] == 1
    resumed = _train(cfg, data, tmp_path / "b")

    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    assert _history(tmp_path / "a" / "metrics.jsonl") == _history(tmp_path / "b" / "metrics.jsonl")
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    assert straight["best_epoch"] == resumed["best_epoch"]


def test_checkpoints_carry_what_eval_and_the_daemon_need(tmp_path):
    from detector.checkpoint import load_checkpoint
    from detector.model import count_parameters

    data = tiny_dataset(tmp_path / "data")
    cfg = tiny_config(cache_dir=tmp_path / "cache", epochs=1)
    result = _train(cfg, data, tmp_path / "run")
    for name in ("best.pt", "last.pt"):
        model, mcfg, meta = load_checkpoint(tmp_path / "run" / name)
        assert meta["num_parameters"] == count_parameters(model) == result["parameters"]
        # 16 frames at 10 fps: the clip spans 1.6 s, which the daemon needs.
        assert mcfg.input.clip_seconds == pytest.approx(1.6)
        assert meta["class_names"] == ["fight", "collapse"]
        assert meta["train_config"]["optim"]["epochs"] == 1
    assert (tmp_path / "run" / "config.yaml").is_file()
    # A finished run resumed again trains nothing more and reports the same best epoch.
    again = _train(cfg, data, tmp_path / "run")
    assert again["best_epoch"] == result["best_epoch"] and len(again["history"]) == 1


def test_resuming_with_a_different_recipe_is_refused(tmp_path):
    from detector.errors import CheckpointError

    data = tiny_dataset(tmp_path / "data")
    cfg = tiny_config(cache_dir=tmp_path / "cache", epochs=1)
    _train(cfg, data, tmp_path / "run")
    changed = tiny_config(cache_dir=tmp_path / "cache", epochs=1, **{"optim.lr": 0.01})
    with pytest.raises(CheckpointError, match=r"optim\.lr=0\.001.*0\.01"):
        _train(changed, data, tmp_path / "run")
    # A longer run of the same recipe continues: only the new epoch is trained.
    longer = _train(tiny_config(cache_dir=tmp_path / "cache", epochs=2), data, tmp_path / "run")
    assert [h["epoch"] for h in longer["history"]] == [1, 2]
