"""The benchmarks report what they measured: FLOP counts equal hand counts, medians and ratios come
from the recorded samples, the bisection finds a planted limit, and the offline comparison and the
pipeline's real-time test are computed from their inputs. Nothing here is timed against a target.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import vigil_tools.bench_model as bench_mod
from detector.config import BackboneConfig, InputConfig, ModelConfig
from detector.errors import ConfigError
from detector.timing import percentile, time_samples
from vigil_tools.bench_model import (MatmulPeak, ModelBenchOptions, ModelRow, compare_outputs,
                                        count_flops, model_flops_per_clip, model_table_rows,
                                        run_model_bench)
from vigil_tools.bench_offline import box_iou_px, compare_rows, reference_clip, reference_input
from vigil_tools.bench_pipeline import (PointStats, find_max_cameras, holds_real_time,
                                           latency_summary, point_row, thread_cpu_seconds)
from vigil_tools.kit import BenchReport, Section, bench_env, markdown_table, write_report

TINY_MODEL_YAML = """
model:
  backbone: {name: small3d, channels: [4, 8, 8, 16], pool: [1, 2, 2]}
  input: {frames: 8, size: [32, 32]}
  d_model: 16
  num_queries: 4
  decoder_layers: 1
  nheads: 2
  dim_feedforward: 32
"""


# ----------------------------------------------------------------------------- FLOPs
def test_flop_count_of_a_conv3d_is_twice_its_multiply_adds():
    conv = nn.Conv3d(3, 8, kernel_size=3, padding=1)
    x = torch.randn(2, 3, 4, 8, 8)
    outputs = 2 * 8 * 4 * 8 * 8                  # batch x C_out x T x H x W
    macs_per_output = 3 * 3 * 3 * 3              # C_in x kT x kH x kW
    assert count_flops(conv, x) == 2 * outputs * macs_per_output


def test_flop_count_of_a_linear_layer_is_twice_its_multiply_adds():
    fc = nn.Linear(16, 32)
    assert count_flops(fc, torch.randn(5, 16)) == 2 * 5 * 16 * 32


def test_flop_count_runs_on_the_meta_device_without_memory():
    fc = nn.Linear(1000, 1000, device="meta")
    assert count_flops(fc, torch.empty(7, 1000, device="meta")) == 2 * 7 * 1000 * 1000


def test_model_flops_per_clip_are_one_clip_of_a_batch():
    from detector.model import build_model

    cfg = ModelConfig(backbone=BackboneConfig(name="small3d", channels=[4, 8, 8, 16],
                                              pool=[1, 2, 2]),
                      input=InputConfig(frames=8, size=[32, 32]), d_model=16, num_queries=4,
                      decoder_layers=1, nheads=2, dim_feedforward=32)
    per_clip = model_flops_per_clip(cfg)
    with torch.device("meta"):
        model = build_model(cfg)
        batch = count_flops(model, torch.empty(3, 3, 8, 32, 32))
    assert per_clip > 0 and batch == 3 * per_clip
    # The stem convolution alone (4 filters of 1x3x3 over 3 channels, stride 1x2x2 -> 8x16x16)
    # is a lower bound counted by hand.
    assert per_clip > 2 * (4 * 8 * 16 * 16) * (3 * 1 * 3 * 3)


# ----------------------------------------------------------------------------- statistics
def test_time_samples_records_repeats_and_leaves_the_warmup_out():
    calls = []

    def work():
        calls.append(1)
        if len(calls) == 1:          # the warm-up call is slow (think: compilation)
            time.sleep(0.05)

    samples = time_samples(work, repeats=3, warmup=1)
    assert len(calls) == 4 and len(samples) == 3
    assert max(samples) < 0.05


def test_percentile_interpolates_between_order_statistics():
    xs = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert percentile(xs, 50) == 3.0
    assert percentile(xs, 0) == 1.0 and percentile(xs, 100) == 5.0
    assert percentile(xs, 95) == pytest.approx(4.8)
    assert percentile([1.0, 2.0], 50) == pytest.approx(1.5)


def test_model_table_derives_every_number_from_the_samples():
    peak = MatmulPeak("bf16", 1000, samples=[0.004, 0.002, 0.003])     # median 3 ms
    base = ModelRow("m", (8, 32, 32), "cpu", "fp32", 4, samples=[0.9, 0.6, 0.7],
                    flops_per_clip=2_000_000_000)
    fast = ModelRow("m", (8, 32, 32), "cpu", "bf16", 4, samples=[0.5, 0.1, 0.3, 0.2, 0.4],
                    flops_per_clip=2_000_000_000)
    rows = model_table_rows([base, fast], {"bf16": peak}, {fast.key(): base})
    r = rows[1]
    t = statistics.median(fast.samples)                                  # 0.3 s
    assert r["ms/batch"] == pytest.approx(1e3 * t)
    assert r["clips/s"] == pytest.approx(4 / t)
    assert r["TFLOP/s"] == pytest.approx(4 * 2e9 / t / 1e12)
    peak_tflops = 2 * 1000 ** 3 / 0.003 / 1e12
    assert peak.tflops == pytest.approx(peak_tflops)
    assert r["% of matmul peak"] == pytest.approx(100 * (4 * 2e9 / t / 1e12) / peak_tflops)
    assert r["speed-up"] == pytest.approx(0.7 / 0.3)
    assert r["vs"] == "fp32" and r["repeats"] == 5
    assert rows[0]["% of matmul peak"] is None       # no fp32 matmul measured: no ratio
    assert "speed-up" not in rows[0]


def test_markdown_table_prints_missing_values_as_dashes_and_escapes_pipes():
    text = markdown_table(["a", "b", "c"], [{"a": 1.23456, "b": None, "c": "x|y"}])
    lines = text.splitlines()
    assert lines[0] == "| a | b | c |"
    assert lines[2] == "| 1.23 | - | x\\|y |"


def test_report_is_written_as_markdown_or_json_by_suffix(tmp_path):
    env = bench_env(torch.device("cpu"), command="vigil bench model --quick")
    report = BenchReport("t", env, [Section("s", ["x"], [{"x": 2.0, "samples_s": [1.0]}])])
    md = write_report(report, tmp_path / "r.md").read_text()
    assert "vigil bench model --quick" in md and "| 2.00 |" in md
    data = json.loads(write_report(report, tmp_path / "r.json").read_text())
    row = data["sections"][0]["rows"][0]
    assert row["samples_s"] == [1.0] and row["env"]["torch"] == torch.__version__
    with pytest.raises(ConfigError, match="r.txt"):
        write_report(report, tmp_path / "r.txt")


def test_compare_outputs_reports_class_agreement_and_box_iou():
    logits = torch.tensor([[[4.0, 0.0, 0.0]], [[0.0, 4.0, 0.0]]])      # clip 0 fight, 1 collapse
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2]], [[0.5, 0.5, 0.4, 0.4]]])
    ref = {"pred_logits": logits, "pred_boxes": boxes}
    flipped = {"pred_logits": logits.clone(), "pred_boxes": boxes.clone()}
    flipped["pred_logits"][1] = torch.tensor([[4.0, 0.0, 0.0]])        # clip 1 now says fight
    dl, db, agree, iou = compare_outputs(ref, flipped)
    assert dl == pytest.approx(4.0) and db == 0.0
    assert agree == 0.5 and iou == pytest.approx(1.0)


def test_model_bench_rows_state_the_configuration_and_match_their_samples(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY_MODEL_YAML)
    torch.set_num_threads(1)
    report = run_model_bench(ModelBenchOptions(device="cpu", quick=True, models=["cpu"],
                                               batches=[1, 2], cpu_config=str(cfg), matmul_n=64,
                                               command="vigil bench model --quick"))
    data = json.loads(report.to_json())
    sweep = next(s for s in data["sections"] if s["title"].startswith("Throughput"))
    onnx = not bench_mod.onnx_available()
    expected = {(1, "fp32", "torch"), (1, "bf16 autocast", "torch"), (2, "fp32", "torch"),
                (2, "bf16 autocast", "torch")}
    if onnx:
        expected |= {(1, "fp32", "onnxruntime"), (2, "fp32", "onnxruntime")}
    else:
        print(f"onnxruntime rows not checked: {bench_mod.onnx_available()}")
    assert {(r["batch"], r["precision"], r["runtime"]) for r in sweep["rows"]} == expected
    by = {(r["batch"], r["precision"], r["runtime"]): r for r in sweep["rows"]}
    for row in sweep["rows"]:
        assert row["device"] == "cpu" and row["env"]["command"] == "vigil bench model --quick"
        assert row["repeats"] == 2
        assert row["clips/s"] == pytest.approx(row["batch"] / (row["ms/batch"] / 1e3))
        if row["runtime"] == "onnxruntime":   # compared with torch fp32 of the same batch
            base = by[(row["batch"], "fp32", "torch")]
            assert row["vs"] == "torch"
            assert row["speed-up"] == pytest.approx(base["ms/batch"] / row["ms/batch"])
    flops = next(s for s in data["sections"] if s["title"].startswith("FLOPs"))["rows"][0]
    assert flops["GFLOP/clip"] > 0
    check = next(s for s in data["sections"] if s["title"].startswith("Low precision"))
    assert check["rows"][0]["clips"] == 4
    assert any("torch.compile rows skipped" in n for n in sweep["notes"])


# ----------------------------------------------------------------------------- bisection
@pytest.mark.parametrize("limit", [0, 1, 2, 7, 37, 63, 64])
def test_bisection_finds_a_planted_limit_with_few_probes(limit):
    probes = []

    def holds(n):
        probes.append(n)
        return n <= limit

    assert find_max_cameras(holds, 1, 64) == limit
    assert len(probes) == len(set(probes))                 # each N measured once
    assert len(probes) <= 2 + math.ceil(math.log2(64))     # bisection, not a linear scan


def test_bisection_on_a_single_point_range():
    assert find_max_cameras(lambda n: True, 5, 5) == 5
    assert find_max_cameras(lambda n: False, 5, 5) == 4


def test_bisection_rejects_an_empty_range():
    with pytest.raises(ValueError):
        find_max_cameras(lambda n: True, 5, 4)


# ----------------------------------------------------------------------------- pipeline
def _point(**kw) -> PointStats:
    p = PointStats(cameras=2, width=640, height=360, fps=25.0, stride=8, codec="x",
                   duration_s=10.0, frames=[250, 249], windows=62, cpu_s=4.0,
                   capture_cpu_s=[1.0, 3.0], worker_cpu_s=2.0, batches=31, batch_windows=62,
                   batch_seconds=3.1, alert_latencies=[0.1, 0.2, 0.3, 0.4],
                   window_latencies=[0.05, 0.15])
    for k, v in kw.items():
        setattr(p, k, v)
    return p


def test_a_point_that_keeps_up_holds_real_time():
    assert holds_real_time(_point()) == (True, "")


@pytest.mark.parametrize("change,reason", [
    (dict(skipped=1), "skipped"),
    (dict(dropped=3), "dropped"),
    (dict(frames=[250, 200]), "capture behind"),
    (dict(windows=40), "windows inferred"),
    (dict(error="daemon did not become ready"), "ready"),
])
def test_a_point_that_falls_behind_does_not_hold(change, reason):
    ok, why = holds_real_time(_point(**change))
    assert not ok and reason in why


def test_point_row_derives_rates_from_the_counts():
    row = point_row(_point())
    assert row["windows/s"] == pytest.approx(6.2)
    assert row["due/s"] == pytest.approx(2 * 25 / 8)
    assert row["capture fps (min)"] == pytest.approx(24.9)
    assert row["CPU % per camera"] == pytest.approx(100 * 4.0 / 10.0 / 2)
    assert row["capture CPU % per camera"] == pytest.approx(100 * 2.0 / 10.0)
    assert row["batch (mean)"] == pytest.approx(2.0)
    assert row["ms/batch"] == pytest.approx(100.0)
    assert row["alert p50 s"] == pytest.approx(0.25)
    assert row["alert p99 s"] == pytest.approx(percentile([0.1, 0.2, 0.3, 0.4], 99))
    assert row["window p50 s"] == pytest.approx(0.1)
    assert row["holds"] == "yes"


def test_latency_summary_without_samples_is_empty():
    assert latency_summary([]) == {"p50": None, "p95": None, "p99": None}


def test_thread_cpu_seconds_grows_while_a_thread_computes():
    import threading

    before = thread_cpu_seconds(threading.get_native_id())
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:
        pass
    assert thread_cpu_seconds(threading.get_native_id()) > before
    assert thread_cpu_seconds(None) == 0.0


# ----------------------------------------------------------------------------- offline
def test_box_iou_of_pixel_boxes():
    assert box_iou_px([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert box_iou_px([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)
    assert box_iou_px([0, 0, 1, 1], [2, 2, 3, 3]) == 0.0


def test_offline_comparison_counts_class_disagreements_and_box_ious():
    ref = [{"video": "a.mp4", "class": "fight", "box": [0, 0, 10, 10]},
           {"video": "b.mp4", "class": "none", "box": None},
           {"video": "c.mp4", "class": "collapse", "box": [0, 0, 10, 10]},
           {"video": "d.mp4", "class": "fight", "box": [0, 0, 10, 10]}]
    fast = [{"video": "a.mp4", "class": "fight", "box": [5, 0, 15, 10]},
            {"video": "b.mp4", "class": "none", "box": None},
            {"video": "c.mp4", "class": "fight", "box": [0, 0, 10, 10]},
            {"video": "d.mp4", "error": "cannot open"}]
    agree = compare_rows(ref, fast)
    assert agree.videos == 4 and agree.same_class == 2
    assert agree.class_agreement == 0.5
    assert agree.ious == [pytest.approx(50 / 150)]
    assert len(agree.mismatches) == 2 and "c.mp4" in agree.mismatches[0]


@pytest.fixture(scope="module")
def tiny_video(tmp_path_factory) -> Path:
    import cv2

    path = tmp_path_factory.mktemp("v") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (64, 48))
    rng = np.random.default_rng(0)
    for i in range(40):
        frame = np.full((48, 64, 3), (i * 6) % 256, np.uint8)
        frame[:, :, 0] = rng.integers(0, 255)        # each frame distinct
        writer.write(frame)
    writer.release()
    return path


def test_reference_style_decoding_sees_the_frames_vigil_reads(tiny_video):
    from train.video_io import probe, read_frames, sample_indices

    ref = reference_clip(tiny_video, frames=16, size=(24, 32))
    ours = read_frames(tiny_video, sample_indices(probe(tiny_video).frames, 16), (24, 32))
    assert ref.shape == ours.shape == (16, 24, 32, 3)
    # MJPG is intra-only, so seeking is exact: both strategies must decode the same pixels.
    assert np.array_equal(ref, ours)


def test_reference_input_normalises_like_the_model_input_path():
    from detector.preprocess import normalize_clips

    clip = np.random.default_rng(1).integers(0, 256, (4, 6, 8, 3), dtype=np.uint8)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    ref = reference_input(clip, mean, std)
    ours = normalize_clips(torch.from_numpy(clip)[None], mean, std)
    assert ref.shape == (1, 3, 4, 6, 8)
    assert torch.allclose(ref, ours, atol=1e-5)


# ----------------------------------------------------------------------------- command line
def _parser() -> argparse.ArgumentParser:
    from vigil_tools import bench_cli

    parser = argparse.ArgumentParser(prog="vigil")
    bench_cli.register(parser.add_subparsers(dest="verb"))
    return parser


def test_bench_verbs_take_quick_device_and_out():
    from vigil_tools import bench_cli

    parser = _parser()
    for what, func in (("model", bench_cli.cmd_bench_model),
                       ("pipeline", bench_cli.cmd_bench_pipeline),
                       ("offline", bench_cli.cmd_bench_offline)):
        args = parser.parse_args(["bench", what, "--quick", "--device", "cpu", "--out", "b.json"])
        assert args.quick and args.device == "cpu" and args.out == Path("b.json")
        assert args.func is func
    args = parser.parse_args(["bench", "pipeline", "--cameras", "1,2,4",
                              "--resolutions", "640x360,1280x720"])
    assert args.cameras == [1, 2, 4] and args.resolutions == [(640, 360), (1280, 720)]


def test_export_verb_defaults_to_onnx_opset_17():
    from train import cli as train_cli

    parser = argparse.ArgumentParser(prog="vigil")
    train_cli.register(parser.add_subparsers(dest="verb"))
    args = parser.parse_args(["export", "--checkpoint", "m.pt"])
    assert args.format == "onnx" and args.opset == 17 and args.out is None


def test_bench_refuses_an_unknown_output_suffix_before_measuring(tmp_path):
    args = _parser().parse_args(["bench", "model", "--out", str(tmp_path / "x.csv")])
    with pytest.raises(ConfigError, match="x.csv"):
        args.func(args)


# ----------------------------------------------------------------------------- the real daemon
@pytest.mark.integration
def test_pipeline_point_measures_the_real_daemon_on_a_file_camera(tmp_path):
    pytest.importorskip("zmq")
    from detector.checkpoint import save_checkpoint
    from detector.model import build_model
    from vigil_tools.bench_pipeline import Encoder, make_camera_videos, measure_point, pipeline_config

    cfg = ModelConfig(backbone=BackboneConfig(name="small3d", channels=[4, 8, 8, 16],
                                              pool=[1, 2, 2]),
                      input=InputConfig(frames=8, size=[32, 32], clip_seconds=0.5),
                      d_model=16, num_queries=4, decoder_layers=1, nheads=2, dim_feedforward=32)
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "tiny.pt", build_model(cfg), cfg)
    videos = make_camera_videos(tmp_path / "v", 96, 64, 25, 2.0, 1,
                                Encoder("opencv", "mp4v", "mp4v"))
    data = pipeline_config(tmp_path / "data", ckpt, videos, 1, 8, "cpu", "auto", 4, 20, 1,
                           "every-window")
    p = measure_point(data, PointStats(1, 96, 64, 25.0, 8, codec="mp4v"), warmup_s=1.0,
                      duration_s=2.0)
    assert p.error == ""
    assert p.duration_s == pytest.approx(2.0, abs=0.5)
    assert p.frames[0] > 0 and p.windows > 0 and p.batches > 0
    # Every window publishes (every-window mode): alert latencies arrived over ZeroMQ.
    assert p.alert_latencies and all(0 <= v < 5 for v in p.alert_latencies)
    # One latency per window handled by the event loop (the interval's edges may shift one).
    assert abs(len(p.window_latencies) - p.windows) <= 2
    assert p.capture_cpu_s and p.cpu_s > 0


# ----------------------------------------------------------------------------- options for the GPU run
def test_model_bench_times_only_the_ablations_asked_for(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY_MODEL_YAML)
    torch.set_num_threads(1)
    report = run_model_bench(ModelBenchOptions(device="cpu", quick=True, models=["cpu"],
                                               batches=[2], cpu_config=str(cfg), matmul_n=64,
                                               onnx=False, ablations=["channels_last"]))
    options = next(s for s in report.sections if s.title.startswith("Options"))
    assert [(r["channels_last_3d"], r["compile"]) for r in options.rows] == [(False, False),
                                                                              (True, False)]
    assert options.rows[1]["vs"] == "channels_last_3d off"
    with pytest.raises(ConfigError, match="--ablations: unknown cudagraphs"):
        run_model_bench(ModelBenchOptions(device="cpu", ablations=["cudagraphs"]))


def test_bench_options_of_the_gpu_check_parse():
    from vigil_tools import bench_cli

    parser = _parser()
    args = parser.parse_args(["bench", "model", "--ablations", "channels_last,compile"])
    assert bench_cli._names(args.ablations) == ["channels_last", "compile"]
    assert bench_cli._names("none") == [] and bench_cli._names(None) is None
    args = parser.parse_args(["bench", "pipeline", "--min-cameras", "8", "--max-cameras", "64"])
    assert (args.min_cameras, args.max_cameras) == (8, 64)
    args = parser.parse_args(["bench", "train", "--quick", "--device", "cpu", "--config", "c.yaml",
                              "--set", "data.batch_size=2", "--size", "64x48", "--out", "t.md"])
    assert args.func is bench_cli.cmd_bench_train
    assert (args.config, args.overrides, args.size) == ("c.yaml", ["data.batch_size=2"], (64, 48))


def test_pipeline_bench_refuses_a_lower_bound_above_the_upper_before_measuring():
    from vigil_tools.bench_pipeline import PipelineBenchOptions, run_pipeline_bench

    with pytest.raises(ConfigError, match="--min-cameras 9 is above --max-cameras 4"):
        run_pipeline_bench(PipelineBenchOptions(device="cpu", min_cameras=9, max_cameras=4))


def test_train_bench_times_each_epoch_of_the_real_trainer(tmp_path):
    from vigil_tools.bench_train import TrainBenchOptions, run_train_bench

    sets = ["model.backbone.name=small3d", "model.backbone.channels=[4,8,8,8]",
            "model.backbone.pool=[1,2,2]", "model.input.frames=8", "model.input.size=[32,32]",
            "model.d_model=16", "model.nheads=2", "model.dim_feedforward=32",
            "model.decoder_layers=1", "model.num_queries=3", "data.num_workers=0",
            "data.batch_size=4"]
    report = run_train_bench(TrainBenchOptions(device="cpu", overrides=sets, videos=10, epochs=2,
                                               width=64, height=48, frames=16,
                                               workdir=str(tmp_path)))
    rows = report.sections[0].rows
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        assert r["input"] == "8x32x32" and r["device"] == "cpu" and r["amp"] == "off"
        assert r["steps"] == math.ceil(r["train videos"] / 4)
        assert r["s/step"] == pytest.approx(r["train s"] / r["steps"])
        assert r["epoch s"] >= r["train s"] > 0 and math.isfinite(r["loss"])
    assert (tmp_path / "run" / "last.pt").is_file()


def test_time_samples_reads_the_clock_it_is_given():
    from detector.timing import time_samples

    ticks = iter(range(0, 100, 5))
    samples = time_samples(lambda: None, repeats=3, warmup=0, clock=lambda: next(ticks))
    assert samples == [5, 5, 5]


def test_bench_pose_reports_wall_and_cpu_time_per_case():
    from vigil_tools.bench_pose import PoseBenchOptions, run_pose_bench

    report = run_pose_bench(PoseBenchOptions(quick=True, threads=(1,)))
    rows = report.sections[0].rows
    assert [r["case"] for r in rows] == ["tracked", "found afresh", "nobody",
                                         "window: features + collapse model"]
    for r in rows:
        assert r["ms/frame (median)"] > 0 and r["CPU ms/frame (median)"] > 0
