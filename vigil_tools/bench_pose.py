"""`vigil bench pose`: what one frame through the pose path costs on this machine.

Per frame at the pose path's size (a 640x360 camera shrunk to 480x270, as its display ring
holds it), one BlazePose call per sample:
- **tracked**: the person was found in the previous frame; the landmark model alone runs on
  the region the previous landmarks give (the common case while someone is in view);
- **found afresh**: the tracker is reset each call; the detector, then the landmark model (a
  person walks in, or tracking was lost);
- **nobody**: an empty room: the detector alone, every sample (the pose path looks at an empty
  camera 4 times a second, a tracked person 8 times);
and a window's features plus the collapse model. The frames are `train.synth_photo` scenes (a
photographed person), so the numbers do not depend on footage that cannot ship.

A camera's pose CPU follows: 8 x tracked (+ the rare re-detection) per second while someone is
in view, 4 x nobody while the room is empty. How many cameras a machine holds with the pose path
on, with everything else the daemon does, is `vigil bench pipeline --pose both|only`.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Optional

import cv2
import numpy as np

from detector.timing import median, percentile, time_samples

from .kit import BenchReport, Section, bench_env

log = logging.getLogger(__name__)


@dataclass
class PoseBenchOptions:
    """What `vigil bench pose` measures.

    Args:
        quick: fewer samples.
        threads: LiteRT threads per model call, each measured.
        size: the camera's (width, height); frames are shrunk as the daemon shrinks them.
        command: the command line, stated above the table.
    """
    quick: bool = False
    threads: tuple[int, ...] = (1, 2)
    size: tuple[int, int] = (640, 360)
    command: Optional[str] = None


def _frames(size: tuple[int, int], n: int) -> list[np.ndarray]:
    """`n` consecutive frames of a standing photographed person, at the pose path's size (RGB)."""
    from detector.pose.sequence import pose_frame_size
    from train.synth_photo import PhotoScene

    scene = PhotoScene("none", 3, size[0], size[1], fps=8, frames=n)
    small = pose_frame_size(*size)
    return [cv2.cvtColor(cv2.resize(scene.render(i), small, interpolation=cv2.INTER_AREA),
                         cv2.COLOR_BGR2RGB) for i in range(n)]


def run_pose_bench(opts: PoseBenchOptions) -> BenchReport:
    """Time the pose path's pieces; see the module docstring."""
    import torch

    from detector.pose.blazepose import BlazePose
    from detector.pose.collapse import load_pose_checkpoint
    from detector.pose.sequence import PoseSequence

    repeats = 20 if opts.quick else 100
    frames = _frames(opts.size, repeats + 8)
    empty = np.zeros_like(frames[0])
    rows: list[dict[str, Any]] = []
    for threads in opts.threads:
        pose = BlazePose(threads=threads)
        if pose(frames[0]) is None:
            raise RuntimeError("the benchmark's photographed person was not found")
        it = iter(frames[1:] * 2)
        cases = {
            "tracked": lambda: pose(next(it)),
            "found afresh": lambda: (pose.reset(), pose(frames[0])),
            "nobody": lambda: pose(empty),
        }
        for case, fn in cases.items():
            samples = time_samples(fn, repeats=repeats, warmup=3)
            cpu = time_samples(fn, repeats=repeats, warmup=0, clock=time.process_time)
            rows.append({"case": case, "threads": threads,
                         "ms/frame (median)": 1e3 * median(samples),
                         "ms/frame (p95)": 1e3 * percentile(samples, 95),
                         "CPU ms/frame (median)": 1e3 * median(cpu),
                         "frames": f"{frames[0].shape[1]}x{frames[0].shape[0]}",
                         "samples": repeats})
    model, _ = load_pose_checkpoint("vigil")
    tracker = BlazePose()
    found = [tracker(f) for f in frames[:16]]
    window = PoseSequence.from_frames([i / 8 for i in range(16)], found,
                                      (frames[0].shape[1], frames[0].shape[0]))
    samples = time_samples(lambda: model.score_window(window), repeats=repeats, warmup=3)
    cpu = time_samples(lambda: model.score_window(window), repeats=repeats, warmup=0,
                       clock=time.process_time)
    rows.append({"case": "window: features + collapse model", "threads": torch.get_num_threads(),
                 "ms/frame (median)": 1e3 * median(samples),
                 "ms/frame (p95)": 1e3 * percentile(samples, 95),
                 "CPU ms/frame (median)": 1e3 * median(cpu), "frames": "16 samples",
                 "samples": repeats})
    env = bench_env(torch.device("cpu"), opts.command)
    report = BenchReport("vigil bench pose", env)
    report.sections.append(Section(
        f"Pose path: one frame through BlazePose ({opts.size[0]}x{opts.size[1]} camera)",
        ["case", "threads", "ms/frame (median)", "ms/frame (p95)", "CPU ms/frame (median)",
         "frames", "samples"], rows,
        ["tracked: the landmark model on the previous frame's region; found afresh: detector "
         "+ landmark model; nobody: the detector alone",
         "a camera with someone in view costs about 8 x tracked per second, an empty one "
         "4 x nobody (streamer/pose/worker.py)",
         "CPU ms: the process's CPU time (time.process_time), which a busy machine does not "
         "inflate as it does the wall clock; with 2 threads it counts both"]))
    return report
