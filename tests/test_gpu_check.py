"""`scripts/gpu-check.sh --dry-run`: the GPU run's script, every step on the CPU with tiny sizes.

What a GPU machine runs is this script with the sizes of `--dry-run` swapped for the real ones,
so here it must exit 0, log every step and write every table (about 1.5 minutes on 2 idle cores).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile

import pytest

from vigil_tools.harness import REPO

pytestmark = pytest.mark.integration

SCRIPT = REPO / "scripts" / "gpu-check.sh"
STEPS = ["install", "env", "tests", "model", "compile", "offline", "pipeline", "pipeline-accel",
         "train", "train-fp32"]
TABLES = {
    "model": ["Roofline: 128x128x128 matmul", "Throughput by batch and precision",
              "Options at batch 1, bf16", "Low precision against fp32"],
    "compile": ["Options at batch 1, bf16"],
    "offline": ["Offline: vigil detect against the reference-style loop", "Decoding only"],
    "pipeline": ["Pipeline: the real daemon on file cameras",
                 "Largest number of cameras in real time (bisection)"],
    "pipeline-accel": ["Pipeline: the real daemon on file cameras",
                       "Largest number of cameras in real time (bisection)"],
    "train": ["Training epochs (vigil train on synthetic data)"],
    "train-fp32": ["Training epochs (vigil train on synthetic data)"],
}


def _run(tmp_path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, os.PathLike]:
    out = tmp_path / "out"
    run_env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable,
               "TMPDIR": str(tmp_path), **env}
    run_env.pop("VIGIL_REQUIRE_CUDA", None)
    proc = subprocess.run(["bash", str(SCRIPT), *args], cwd=REPO, env=run_env,
                          capture_output=True, text=True, timeout=900)
    return proc, out


def test_dry_run_runs_every_step_and_writes_every_table(tmp_path):
    proc, out = _run(tmp_path, "--dry-run")
    summary = (out / "summary.md").read_text() if (out / "summary.md").exists() else ""
    failed = [s for s in STEPS if f"| {s} | ok |" not in summary]
    logs = "".join(f"\n--- {s}.log\n" + (out / f"{s}.log").read_text()[-3000:]
                   for s in failed if (out / f"{s}.log").exists())
    assert proc.returncode == 0 and not failed, proc.stdout + proc.stderr + summary + logs
    assert summary.startswith("# gpu-check (dry run on the CPU, tiny sizes)")
    for step in STEPS:
        assert (out / f"{step}.log").stat().st_size > 0, step
    for name, titles in TABLES.items():
        table = (out / f"{name}.md").read_text()
        assert table.startswith("## vigil bench") and "device cpu" in table, name
        for title in titles:
            assert f"### {title}" in table, (name, title)
            assert f"### {title}" in summary, (name, title)
    # The CUDA tests were collected and skipped, saying why.
    assert "no CUDA device" in (out / "tests.log").read_text()
    assert "| 1 | small3d | 16x32x32 |" in (out / "train.md").read_text()    # epoch 1
    assert "| 1..1 |" in (out / "pipeline.md").read_text()          # the bisection's range
    # No torch.compile on a small CPU: the row is there, saying so.
    assert "skipped: --no-compile given" in (out / "compile.md").read_text()
    # Issue 29's paths against today's, in the same run.
    assert "fold_bn off" in (out / "model.md").read_text()
    assert "vigil detect --decode-workers 2" in (out / "offline.md").read_text()
    assert "accel: none (today's path)" in (out / "pipeline.md").read_text()
    accel = (out / "pipeline-accel.md").read_text()
    assert "accel device_ring=True, capture=processes" in accel and "| 1..1 |" in accel


def test_a_spent_budget_fails_the_run_and_pack_keeps_two_files(tmp_path):
    proc, out = _run(tmp_path, "--dry-run", "--pack", GPU_CHECK_BUDGET_S="0")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["gpu-check.tar.gz", "summary.md"]
    summary = (out / "summary.md").read_text()
    for step in STEPS:
        assert f"| {step} | NOT RUN (budget spent) |" in summary
    with tarfile.open(out / "gpu-check.tar.gz") as tar:
        assert sorted(tar.getnames()) == sorted(f"{s}.log" for s in STEPS)


def test_an_unknown_argument_is_refused():
    proc = subprocess.run(["bash", str(SCRIPT), "--bogus"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--bogus" in proc.stderr


def test_the_gpu_runs_commands_parse_and_ask_for_what_the_issue_lists(tmp_path):
    """The GPU run's own arguments never run here: at least they must parse, on CUDA."""
    import shlex

    from vigil_tools.bench_cli import _names
    from streamer.cli import build_parser

    proc = subprocess.run(["bash", str(SCRIPT), "--commands"], capture_output=True, text=True,
                          env={**os.environ, "OUT": str(tmp_path / "out")})
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(": ", 1) for line in proc.stdout.splitlines())
    assert "VIGIL_REQUIRE_CUDA=1" in lines["tests"] and "tests/test_cuda.py" in lines["tests"]
    parser = build_parser()
    parsed = {}
    for name in ("model", "compile", "offline", "pipeline", "pipeline-accel", "train",
                 "train-fp32"):
        argv = shlex.split(lines[name])
        assert argv[0] == "vigil", lines[name]
        args = parsed[name] = parser.parse_args(argv[1:])
        assert args.device == "cuda" and args.verb == "bench", name
    model, comp = parsed["model"], parsed["compile"]
    assert model.models == "seed" and model.batches == [1, 16, 64]
    assert set(_names(model.ablations)) == {"channels_last", "fold_bn", "fold_bn+channels_last",
                                            "no-cudnn-benchmark"}
    assert _names(comp.ablations) == ["fold_bn+channels_last+compile", "cuda_graphs"]
    assert not comp.no_compile and comp.batches == [64]
    assert parsed["offline"].decode_workers > 1
    for name in ("pipeline", "pipeline-accel"):
        pipe = parsed[name]
        assert (pipe.fps, pipe.stride) == (25, 8) and 1 <= pipe.min_cameras < pipe.max_cameras
        assert not pipe.no_bisect and pipe.resolutions == [(640, 360)]
    assert parsed["pipeline"].accel == []
    assert set(parsed["pipeline-accel"].accel) == {"device_ring=true", "capture=processes",
                                                   "fold_bn=true", "channels_last=true"}
    from detector.schema import from_dict
    from streamer.accel.settings import AccelConfig
    from vigil_tools.bench_cli import _accel

    accel = from_dict(AccelConfig, _accel(parsed["pipeline-accel"].accel), "accel")
    assert accel.device_ring and accel.capture == "processes" and not accel.compiled
    assert parsed["train"].config is None          # the seed recipe
    assert parsed["train-fp32"].overrides == ["train.amp=off"]      # AMP against fp32
