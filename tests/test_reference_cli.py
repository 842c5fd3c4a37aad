"""`vigil import-reference --clip-seconds`, and `vigil serve --check` on a checkpoint without a
clip length saying what the daemon's start-up log says."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import yaml

from streamer.cli import main as vigil

from ._training import tiny_config
from .test_reference import random_reference_state_dict


@pytest.fixture(scope="module")
def best_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "best_model.pth"
    torch.save(random_reference_state_dict(), path)
    return path


def test_import_reference_records_the_clip_length_and_fp16_inference(best_model, tmp_path,
                                                                      capsys):
    from detector.checkpoint import load_checkpoint
    from train.detect import checkpoint_precision

    out = tmp_path / "model.pt"
    assert vigil(["import-reference", str(best_model), "--out", str(out),
                  "--clip-seconds", "3.2"]) == 0
    assert "clip length 3.2 s" in capsys.readouterr().out
    _, cfg, meta = load_checkpoint(out)
    assert cfg.input.clip_seconds == 3.2 and meta["clip_seconds"] == 3.2
    assert checkpoint_precision(meta) == "fp16"     # the reference's test.py autocasts in fp16

    plain = tmp_path / "plain.pt"
    assert vigil(["import-reference", str(best_model), "--out", str(plain)]) == 0
    said = capsys.readouterr().out
    assert "16 consecutive frames" in said and "--clip-seconds" in said
    assert load_checkpoint(plain)[1].input.clip_seconds is None
    assert vigil(["import-reference", str(best_model), "--out", str(plain),
                  "--clip-seconds", "0"]) != 0


def test_serve_check_says_windows_are_consecutive_frames_without_a_clip_length(tmp_path, capsys):
    from detector.checkpoint import save_checkpoint
    from detector.model import build_model
    from streamer.daemon import unknown_clip_length_message
    from vigil_tools.harness import base_config

    cfg = tiny_config().model
    assert cfg.input.clip_seconds is None
    ckpt = save_checkpoint(tmp_path / "m.pt", build_model(cfg), cfg)
    conf = base_config(tmp_path / "data", ckpt, {"lobby": "synth://fight?seed=1", "hall":
                                                 "synth://none?seed=2"})
    conf["cameras"][1]["window_seconds"] = 2.5
    (tmp_path / "vigil.yaml").write_text(yaml.safe_dump(conf))
    assert vigil(["serve", "--check", "--config", str(tmp_path / "vigil.yaml")]) == 0
    out = capsys.readouterr().out
    assert f"warning: {unknown_clip_length_message(cfg.input.frames)}" in out
    assert f"window {cfg.input.frames} consecutive frames" in out
    assert "window 2.5 s" in out

    timed = dataclasses.replace(cfg, input=dataclasses.replace(cfg.input, clip_seconds=1.5))
    save_checkpoint(tmp_path / "m.pt", build_model(timed), timed)
    assert vigil(["serve", "--check", "--config", str(tmp_path / "vigil.yaml")]) == 0
    out = capsys.readouterr().out
    assert "consecutive" not in out and "window 1.5 s" in out
