"""The training verbs of `vigil`: help, synth, data check, train -> eval, import-reference."""
from __future__ import annotations

import json

import pytest

from streamer.cli import build_parser
from streamer.cli import main as vigil

from ._training import tiny_dataset

VERBS = [["train"], ["eval"], ["cv"], ["detect"], ["synth"], ["data"], ["data", "check"],
         ["import-reference"]]

TINY = ["--set", "model.backbone.name=small3d", "--set", "model.backbone.channels=[4,8,8,8]",
        "--set", "model.backbone.pool=[1,2,2]", "--set", "model.input.frames=8",
        "--set", "model.input.size=[32,32]", "--set", "model.d_model=16",
        "--set", "model.nheads=2", "--set", "model.dim_feedforward=32",
        "--set", "model.decoder_layers=1", "--set", "model.num_queries=3",
        "--set", "data.num_workers=0", "--set", "data.batch_size=4"]


@pytest.mark.parametrize("verb", VERBS, ids=" ".join)
def test_every_verb_has_help(verb, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(verb + ["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert f"usage: vigil {' '.join(verb)}" in text and len(text.splitlines()) > 3


def test_synth_then_data_check_prints_a_summary(tmp_path, capsys):
    data = tmp_path / "data"
    assert vigil(["synth", "--out", str(data), "--videos", "6", "--seed", "3", "--width", "64",
                  "--height", "48", "--frames", "12", "--no-vary"]) == 0
    assert "wrote 6 videos" in capsys.readouterr().out
    assert vigil(["data", "check", str(data)]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "fight 2" in out and "collapse 2" in out and "none 2" in out
    assert "64x48 (6)" in out


def test_data_check_on_a_broken_dataset_lists_every_problem_and_exits_1(tmp_path, capsys):
    data = tiny_dataset(tmp_path / "data", videos=6)
    labels = sorted((data / "labels").glob("fight_*.txt")) + \
        sorted((data / "labels").glob("collapse_*.txt"))
    labels[0].write_text("7 1 1 10 10\n")                  # class id outside {0, 1}
    labels[1].write_text("0 20 5 10 30\n")                 # x2 <= x1
    (data / "labels" / "orphan.txt").write_text("0 1 1 5 5\n")   # label without a video
    (data / "videos" / "corrupt.mp4").write_bytes(b"\x00" * 100)  # unreadable video
    assert vigil(["data", "check", str(data)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) >= 4
    text = "\n".join(out)
    for name in (labels[0].name, labels[1].name, "orphan.txt", "corrupt.mp4"):
        assert name in text


def test_train_then_eval_writes_checkpoints_metrics_and_pngs(tmp_path, capsys):
    data = tiny_dataset(tmp_path / "data")
    run = tmp_path / "run"
    code = vigil(["train", "--data", str(data), "--out", str(run), "--epochs", "1",
                  "--device", "cpu", "--no-progress", "--set", "data.cache=false",
                  "--set", "model.backbone.pretrained=null"] + TINY)
    assert code == 0
    out = capsys.readouterr().out
    assert "video accuracy" in out and "det-acc@IoU>=0.5" in out and "parameters" in out
    assert (run / "best.pt").is_file() and (run / "last.pt").is_file()

    code = vigil(["eval", "--checkpoint", str(run / "best.pt"), "--data", str(data),
                  "--split", "all", "--out", str(run / "eval"), "--workers", "0"])
    assert code == 0
    out = capsys.readouterr().out
    assert "confusion" in out or "true \\ pred" in out
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["num_videos"] == 12
    for key in ("video_acc", "det_acc", "miou", "report", "confusion_matrix", "ap50", "map",
                "loss_ce", "per_source"):
        assert key in metrics
    assert metrics["per_source"]["overall"]["videos"] == 12
    assert "per source at threshold" in out and "ROC AUC" in out
    for png in ("confusion.png", "curves.png", "worst.png"):
        assert (run / "eval" / png).stat().st_size > 1000
    assert len((run / "eval" / "predictions.jsonl").read_text().splitlines()) == 12

    # The same videos as a dark infrared camera would show them.
    code = vigil(["eval", "--checkpoint", str(run / "best.pt"), "--data", str(data),
                  "--split", "all", "--out", str(run / "eval-ir"), "--workers", "0",
                  "--perturb", "low_light", "greyscale"])
    assert code == 0
    assert "perturbed: low_light greyscale" in capsys.readouterr().out
    ir = json.loads((run / "eval-ir" / "metrics.json").read_text())
    assert ir["num_videos"] == 12 and ir["loss"] != metrics["loss"]


def test_a_bad_override_is_reported_without_a_traceback(tmp_path, capsys):
    code = vigil(["train", "--data", str(tmp_path), "--out", str(tmp_path / "r"),
                  "--set", "loss.gioux=0"])
    assert code == 2
    err = capsys.readouterr().err
    assert "loss.gioux: unknown key" in err and "Traceback" not in err


def test_import_reference_writes_a_checkpoint_of_the_reference_model(tmp_path, capsys):
    import torch

    from detector.checkpoint import load_checkpoint
    from detector.reference import expected_reference_shapes

    g = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(shape, generator=g) * 0.02 for k, shape in
          expected_reference_shapes().items()}
    src, out = tmp_path / "best_model.pth", tmp_path / "model.pt"
    torch.save(sd, src)
    assert vigil(["import-reference", str(src), "--out", str(out)]) == 0
    assert "40,509,220 parameters" in capsys.readouterr().out
    model, cfg, meta = load_checkpoint(out)
    assert cfg.pos_table_len == 10000 and meta["source"] == str(src)
    assert torch.equal(model.state_dict()["queries.weight"], sd["queries.weight"])


def test_the_worst_sheet_shows_a_video_without_a_true_box_by_its_class(tmp_path):
    import numpy as np

    from train.cli import _sheet_item, _worst_first
    from train.plots import plot_contact_sheet

    boxless = {"stem": "fall_3", "true": "collapse", "pred": "collapse", "score": 0.8,
               "iou": float("nan"), "correct": True, "in_box_metrics": False,
               "box": [0.5, 0.5, 0.2, 0.4], "gt_boxes": np.zeros((1, 4))}
    missed = dict(boxless, stem="fall_4", pred="none", score=0.6, correct=False, box=None)
    placed = dict(boxless, stem="fight_1", true="fight", pred="fight", iou=0.4, in_box_metrics=True,
                  gt_boxes=np.array([[0.5, 0.5, 0.2, 0.2]]))
    # Wrong first, then right ones by IoU, then right ones with nothing to place.
    assert [p["stem"] for p in sorted([boxless, placed, missed], key=_worst_first)] == [
        "fall_4", "fight_1", "fall_3"]
    item = _sheet_item(boxless, np.zeros((2, 16, 16, 3), np.uint8))
    assert item["true_box"] is None and item["pred_box"] is not None
    assert item["title"] == "fall_3: true collapse, pred collapse (0.80), no true box"
    png = plot_contact_sheet([item, _sheet_item(placed, np.zeros((2, 16, 16, 3), np.uint8))],
                             tmp_path / "worst.png")
    assert png.stat().st_size > 1000
