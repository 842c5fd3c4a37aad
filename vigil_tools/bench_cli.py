"""The `vigil bench` verbs.

    vigil bench model    [--quick] [--device D] [--out FILE.md|FILE.json] ...
    vigil bench pipeline [--quick] [--device D] [--out FILE] [--cameras N ...] ...
    vigil bench offline  [--quick] [--device D] [--out FILE] [--data DIR] ...
    vigil bench train    [--quick] [--device D] [--out FILE] [--config YAML] ...
    vigil bench pose     [--quick] [--out FILE] [--threads N,...] [--size WxH]

Each benchmark prints its Markdown tables on stdout (the environment line above them states the
device, versions and this command line) and writes them to --out as Markdown or JSON (by the
file's suffix; JSON rows carry the raw samples). Heavy imports happen inside the verb functions.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger(__name__)


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}")
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _names(text: str | None) -> list[str] | None:
    """A comma-separated option value as a list; None when not given, [] for 'none'."""
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    return [] if names == ["none"] else names


def _resolution(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 640x360, got {text!r}")
    if w < 16 or h < 16:
        raise argparse.ArgumentTypeError(f"resolution too small: {text!r}")
    return w, h


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true",
                   help="a tiny sweep that runs in minutes on a small CPU")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--out", type=Path, default=None, metavar="FILE",
                   help="also write the tables to FILE (.md: Markdown, .json: JSON with samples)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `bench` (model, pipeline, offline) and `export` to the `vigil` command."""
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = subparsers.add_parser(
        "bench", help="measure the model, the daemon and offline detection",
        description="Benchmarks whose every number is measured in the run that prints it: "
                    "medians over repeats after warm-up, comparisons as ratios from one run.")
    sub = p.add_subparsers(dest="bench_verb", metavar="WHAT")
    sub.required = True

    m = sub.add_parser(
        "model", formatter_class=fmt, help="clips/s, FLOPs and roofline of the detector",
        description="Time the seed model (ModelConfig() defaults, 16x224x224) and the CPU model "
                    "(configs/train/cpu-small.yaml) over batch sizes and precisions, with "
                    "channels_last_3d, torch.compile and cudnn.benchmark on and off; FLOPs per "
                    "clip from torch.utils.flop_counter; TFLOP/s against a matmul measured in "
                    "the same run; low precision checked against fp32; on the CPU, the model "
                    "exported to ONNX on onnxruntime against torch.")
    _common(m)
    m.add_argument("--models", default="seed,cpu", help="comma-separated: seed, cpu")
    m.add_argument("--batches", type=_ints, default=None,
                   help="batch sizes (default 1,2,4,...,64 on CUDA, 1,...,16 on CPU; --quick: 1,4)")
    m.add_argument("--repeats", type=int, default=None,
                   help="timed samples per configuration (default 5 CPU, 20 CUDA; --quick 2)")
    m.add_argument("--warmup", type=int, default=None, help="untimed calls per configuration")
    m.add_argument("--no-compile", action="store_true", help="leave out torch.compile rows")
    m.add_argument("--no-onnx", action="store_true",
                   help="leave out the onnxruntime rows (default on the CPU when vigil[onnx] is "
                        "installed: the exported model against torch fp32, batch by batch)")
    m.add_argument("--ablation-batch", type=int, default=None,
                   help="batch of the option comparisons (default: the largest batch, at most 8 "
                        "on CPU)")
    m.add_argument("--seed-size", type=_ints, default=None, metavar="H,W",
                   help="clip size of the seed model (default 224,224; --quick on CPU 112,112)")
    m.add_argument("--cpu-config", default=None, metavar="YAML",
                   help="training config whose model: section is the CPU model")
    m.add_argument("--matmul-n", type=int, default=None,
                   help="roofline matmul size (default 8192 CUDA, 2048 CPU)")
    m.add_argument("--profile", action="store_true",
                   help="also tabulate where the time goes (torch.profiler) at the ablation batch")
    m.add_argument("--ablations", default=None, metavar="A[,A...]",
                   help="option comparisons at the ablation batch, from channels_last, compile, "
                        "channels_last+compile, no-cudnn-benchmark (default: all that apply; "
                        "'none' for none)")
    m.set_defaults(func=cmd_bench_model)

    q = sub.add_parser(
        "pipeline", formatter_class=fmt, help="cameras per machine and alert latency of the daemon",
        description="Run the real daemon in-process on N file cameras paced in real time (H.264 "
                    "when this machine can write it) and measure windows/s, skipped windows, "
                    "dropped frames, CPU per camera and alert latency; find the largest N that "
                    "holds real time by bisection.")
    _common(q)
    q.add_argument("--cameras", type=_ints, default=[], metavar="N[,N...]",
                   help="numbers of cameras to measure (besides the bisection's points)")
    q.add_argument("--no-bisect", action="store_true", help="measure only --cameras")
    q.add_argument("--max-cameras", type=int, default=None,
                   help="bisection upper bound (default 4 --quick, 16 CPU, 128 CUDA)")
    q.add_argument("--start-timeout", type=float, default=120.0, metavar="S",
                   help="a point whose cameras have not all delivered a window S seconds after "
                        "start does not hold real time")
    q.add_argument("--min-cameras", type=int, default=1,
                   help="bisection lower bound (skips probing the smallest counts)")
    q.add_argument("--resolutions", type=lambda s: [_resolution(r) for r in s.split(",")],
                   default=None, help="camera sizes (default 640x360,1280x720)")
    q.add_argument("--fps", type=int, default=25, help="camera frame rate")
    q.add_argument("--stride", type=int, default=8, help="frames between windows")
    q.add_argument("--duration", type=float, default=None,
                   help="measured seconds per point (default 30; --quick 6)")
    q.add_argument("--warmup", type=float, default=None,
                   help="unmeasured seconds per point (default 5; --quick 3)")
    q.add_argument("--model", choices=("cpu", "seed"), default=None,
                   help="random-init model (default: cpu on CPU, seed on CUDA)")
    q.add_argument("--checkpoint", default=None, help="use this checkpoint instead")
    q.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto")
    q.add_argument("--max-batch", type=int, default=None,
                   help="daemon model.max_batch (default 8 CPU, 32 CUDA)")
    q.add_argument("--max-wait-ms", type=float, default=50.0, help="daemon model.max_wait_ms")
    q.add_argument("--threads", type=int, default=None,
                   help="daemon model.threads (default: the daemon's choice)")
    q.add_argument("--alerts", choices=("every-window", "events"), default="every-window",
                   help="every-window: each window publishes an alert (latency samples); "
                        "events: production smoothing")
    q.add_argument("--workdir", default=None,
                   help="keep videos, checkpoint and journals here (default: a temporary folder)")
    q.add_argument("--pose", choices=("off", "both", "only"), default="off",
                   help="the pose path: off (model.pose null), both (every camera watches "
                        "fight and collapse), only (every camera watches collapse: BlazePose "
                        "alone); on: the camera files show a photographed person")
    q.add_argument("--pose-workers", type=int, default=1, help="model.pose.workers")
    q.add_argument("--accel", action="append", default=[], metavar="KEY=VALUE",
                   help="a key of the daemon's accel: section, e.g. device_ring=true or "
                        "capture=processes (repeatable; YAML values)")
    q.set_defaults(func=cmd_bench_pipeline)

    o = sub.add_parser(
        "offline", formatter_class=fmt, help="vigil detect against a reference-style loop",
        description="videos/s of `vigil detect` against a loop doing what the reference "
                    "inference script does (seek per frame, CPU normalisation, batch 1, fp32), "
                    "same process, files and weights; with class agreement and box IoU.")
    _common(o)
    o.add_argument("--data", default=None, help="folder of videos (default: synthetic clips)")
    o.add_argument("--videos", type=int, default=None,
                   help="synthetic clips to write (default 32; --quick 8)")
    o.add_argument("--checkpoint", default=None,
                   help="weights (default: the reference architecture, random init, seed 0)")
    o.add_argument("--batch", type=int, default=8, help="vigil detect --batch")
    o.add_argument("--workers", type=int, default=None, help="vigil detect --workers")
    o.add_argument("--decode-workers", type=int, default=None, metavar="N",
                   help="also time vigil detect --decode-workers N in the same passes")
    o.add_argument("--precision", default=None, choices=("auto", "fp32", "bf16", "fp16"),
                   help="vigil detect --precision (default: its own, auto)")
    o.add_argument("--repeats", type=int, default=None, help="timed passes (default 3; --quick 2)")
    o.set_defaults(func=cmd_bench_offline)

    t = sub.add_parser(
        "train", formatter_class=fmt, help="timed training epochs of a recipe",
        description="`vigil train` (train.trainer.fit) on synthetic videos it writes, backbone "
                    "pretrained weights off: per epoch, the training pass (seconds, s/step, "
                    "clips/s), validation and checkpoints, and peak device memory on CUDA.")
    _common(t)
    t.add_argument("--config", default=None, metavar="YAML",
                   help="training config (default: the report's recipe, configs/train/seed.yaml)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (repeatable)")
    t.add_argument("--videos", type=int, default=None,
                   help="synthetic videos (default 64; --quick 12)")
    t.add_argument("--epochs", type=int, default=None,
                   help="epochs to time (default 2: the first fills the clip cache; --quick 1)")
    t.add_argument("--size", type=_resolution, default=(160, 120), metavar="WxH",
                   help="synthetic video size")
    t.add_argument("--frames", type=int, default=48, help="frames per synthetic video")
    t.add_argument("--workdir", default=None,
                   help="keep data and run here (default: a temporary folder)")
    t.set_defaults(func=cmd_bench_train)

    s = sub.add_parser(
        "pose", formatter_class=fmt, help="milliseconds per frame of the pose path",
        description="One frame through BlazePose on this CPU (tracked, found afresh, nobody in "
                    "view) at the size the daemon's pose path sees a camera, and a window's "
                    "features plus the pose collapse model.")
    _common(s)
    s.add_argument("--threads", type=_ints, default=[1, 2], metavar="N[,N...]",
                   help="LiteRT threads per model call")
    s.add_argument("--size", type=_resolution, default=(640, 360), metavar="WxH",
                   help="the camera's size (shrunk to at most 480 wide, as the daemon does)")
    s.set_defaults(func=cmd_bench_pose)


def _emit(report: Any, out: Path | None) -> None:
    print(report.to_markdown())
    if out is not None:
        from .kit import write_report

        path = write_report(report, out)
        log.info("wrote %s", path)


def _check_out(out: Path | None) -> None:
    """Refuse a bad --out suffix before minutes of measuring."""
    from detector.errors import ConfigError

    if out is not None and out.suffix.lower() not in (".md", ".markdown", ".json"):
        raise ConfigError(f"--out {out}: use a .md or .json file name")


def cmd_bench_model(args: argparse.Namespace) -> int:
    """`vigil bench model`."""
    _check_out(args.out)
    from .bench_model import ModelBenchOptions, run_model_bench
    from .kit import command_line

    opts = ModelBenchOptions(
        device=args.device, quick=args.quick,
        models=[m.strip() for m in args.models.split(",") if m.strip()],
        batches=args.batches, repeats=args.repeats, warmup=args.warmup,
        compile=False if args.no_compile else None, ablation_batch=args.ablation_batch,
        cpu_config=args.cpu_config, seed_size=args.seed_size, matmul_n=args.matmul_n,
        onnx=False if args.no_onnx else None, ablations=_names(args.ablations),
        profile=args.profile, command=command_line())
    _emit(run_model_bench(opts), args.out)
    return 0


def cmd_bench_pipeline(args: argparse.Namespace) -> int:
    """`vigil bench pipeline`."""
    _check_out(args.out)
    from .kit import command_line

    from .bench_pipeline import RESOLUTIONS, PipelineBenchOptions, run_pipeline_bench

    opts = PipelineBenchOptions(
        device=args.device, quick=args.quick, cameras=args.cameras, bisect=not args.no_bisect,
        max_cameras=args.max_cameras, min_cameras=args.min_cameras, resolutions=args.resolutions or RESOLUTIONS,
        fps=args.fps, stride=args.stride, duration_s=args.duration, warmup_s=args.warmup,
        model=args.model, checkpoint=args.checkpoint, precision=args.precision,
        max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, threads=args.threads,
        alerts=args.alerts, start_timeout_s=args.start_timeout, workdir=args.workdir,
        command=command_line(), pose=args.pose, pose_workers=args.pose_workers,
        accel=_accel(args.accel))
    _emit(run_pipeline_bench(opts), args.out)
    return 0


def cmd_bench_offline(args: argparse.Namespace) -> int:
    """`vigil bench offline`."""
    _check_out(args.out)
    from .kit import command_line
    from .bench_offline import OfflineBenchOptions, run_offline_bench

    opts = OfflineBenchOptions(
        device=args.device, quick=args.quick, data=args.data, videos=args.videos,
        checkpoint=args.checkpoint, batch=args.batch, workers=args.workers,
        precision=args.precision, repeats=args.repeats, command=command_line(),
        decode_workers=args.decode_workers)
    _emit(run_offline_bench(opts), args.out)
    return 0


def _accel(pairs: Sequence[str]) -> dict[str, Any]:
    """`--accel KEY=VALUE` pairs -> the `accel:` mapping (values read as YAML: true, null)."""
    import yaml

    from detector.errors import ConfigError

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--accel: expected KEY=VALUE, got {pair!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def cmd_bench_pose(args: argparse.Namespace) -> int:
    """`vigil bench pose`."""
    _check_out(args.out)
    from .bench_pose import PoseBenchOptions, run_pose_bench
    from .kit import command_line

    opts = PoseBenchOptions(quick=args.quick, threads=tuple(args.threads), size=args.size,
                            command=command_line())
    _emit(run_pose_bench(opts), args.out)
    return 0


def cmd_bench_train(args: argparse.Namespace) -> int:
    """`vigil bench train`."""
    _check_out(args.out)
    from .kit import command_line
    from .bench_train import TrainBenchOptions, run_train_bench

    opts = TrainBenchOptions(
        device=args.device, quick=args.quick, config=args.config, overrides=args.overrides,
        videos=args.videos, epochs=args.epochs, width=args.size[0], height=args.size[1],
        frames=args.frames, workdir=args.workdir, command=command_line())
    _emit(run_train_bench(opts), args.out)
    return 0
