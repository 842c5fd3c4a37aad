"""The pose path's thread: BlazePose on each collapse-watching camera, windows scored by the pose
collapse model, `WindowResult`s handed to the event loop like the video worker's.

One `PoseWorker` serves a share of the cameras (`model.pose.workers` threads, a camera always in
the same one). For each camera it looks at the newest frame of the camera's display-size ring
about `fps` times a second (`detector.pose.sequence.POSE_FPS`, the rate the model was trained
at; `IDLE_FPS` while nobody is in view), tracks the person with the camera's own `BlazePose`
(the models are loaded once per thread), and keeps the last few seconds of landmarks. Every `stride_s` of camera time the last
`window_s` of them go to the collapse model; the result carries the collapse score and the
person's box, and 0 when nobody was seen (no person, no collapse).

When the thread cannot keep up (too many cameras for one core), every camera still gets its
newest frame in turn: the pose rate drops, nothing queues. `vigil_pose_frames_total` says the
rate each camera gets, `vigil_pose_seconds` what a frame costs.
"""
from __future__ import annotations

import logging
import math
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Sequence

from detector.pose.blazepose import BlazePose
from detector.pose.collapse import PoseCollapseModel
from detector.pose.sequence import POSE_FPS, PoseSequence

from ..loop_thread import LoopThread
from ..regions.mask import FrameMask, frame_mask
from ..regions.polygons import Polygon
from ..ringbuffer import FramesUnavailableError, RingBuffer
from ..types import ClassScore, WindowResult

log = logging.getLogger(__name__)
# A frame is due once this share of the period has passed since the last one: a camera's
# frames do not arrive on the pose path's beat, and waiting for the whole period would often
# skip to the frame after.
PERIOD_SLACK = 0.9


def sampled_fps(camera_fps: float, target_fps: float = POSE_FPS) -> float:
    """Pose frames per second a camera at `camera_fps` gives the pose path when it keeps up:
    the first frame at least `PERIOD_SLACK` periods after the last (15 fps: every second frame,
    7.5 a second; 25 fps: every third, 8.3)."""
    if camera_fps <= 0 or target_fps <= 0:
        return 0.0
    return camera_fps / max(1, math.ceil(PERIOD_SLACK * camera_fps / target_fps - 1e-9))



# Landmarks kept per camera beyond the model's window (seconds).
HISTORY_SLACK_S = 1.0
# While nobody is in view a camera is looked at this many times a second instead of the model's
# rate: the detector pass that finds nobody is the costly one (~35 ms against ~20 ms for a
# tracked frame), and a fall happens to someone already in view, so a newcomer found a quarter of
# a second later changes nothing.
IDLE_FPS = 4.0
# A box for a window where nobody was seen (its score is 0; the box is never shown).
NO_BOX = (0.0, 0.0, 0.0, 0.0)


@dataclass
class _Camera:
    """One camera's pose state, owned by the pose thread."""
    ring: RingBuffer
    tracker: BlazePose
    history: deque = field(default_factory=deque)   # (t_mono, t_wall, seq, landmarks or None)
    last_t: float = -math.inf                        # capture time of the last frame looked at
    next_window: Optional[float] = None              # camera time of the next window's end
    last_box: tuple[float, float, float, float] = NO_BOX
    person: bool = False                             # the last frame showed someone
    mask: Optional[FrameMask] = None                 # `cameras[].mask` at the frames' size
    mask_key: tuple = ()                             # (polygons, height, width) it was built for


class PoseWorker(LoopThread):
    """BlazePose + the pose collapse model over a share of the cameras.

    Args:
        model: the pose collapse model (its `cfg.window_s`, `cfg.fps`, `cfg.label`).
        cameras: callable returning {camera: its display-size ring or None} for the cameras
            this thread serves (read each iteration: reloads add and remove cameras).
        on_results: called with (results, seconds) from this thread after each window batch.
        stride_s: camera seconds between a camera's windows.
        threads: CPU threads of each BlazePose model call.
        model_dir: BlazePose's files (default: the shipped ones).
        on_frame: called with (camera, seconds, person seen) after each pose frame (metrics).
        clock: monotonic clock; poll_s: sleep when no camera has a new frame due.
        mask_of: camera -> its `cameras[].mask` polygons, blanked in each frame before
            BlazePose sees it (the display ring keeps the whole picture for evidence).
    Raises:
        CheckpointError: a BlazePose file is missing or unreadable (from the constructor).
    """

    def __init__(self, model: PoseCollapseModel,
                 cameras: Callable[[], Mapping[str, Optional[RingBuffer]]],
                 on_results: Callable[[list[WindowResult], float], None],
                 stride_s: float = 0.5, threads: int = 1, model_dir=None,
                 on_frame: Optional[Callable[[str, float, bool], None]] = None,
                 clock: Callable[[], float] = time.monotonic, poll_s: float = 0.01,
                 name: str = "vigil-pose",
                 mask_of: Optional[Callable[[str], Sequence[Polygon]]] = None) -> None:
        super().__init__(name)
        self.model = model
        self.cameras = cameras
        self.on_results = on_results
        self.stride_s = float(stride_s)
        self.period = 1.0 / (model.cfg.fps or POSE_FPS)
        self.idle_period = max(self.period, 1.0 / IDLE_FPS)
        self.on_frame = on_frame
        self.clock = clock
        self.poll_s = float(poll_s)
        self.mask_of = mask_of
        self._models = BlazePose(model_dir, threads=threads)   # loaded once, shared per camera
        self._state: dict[str, _Camera] = {}
        self.beat = clock()          # last loop iteration (health: a hung thread stops it)
        self.frames = 0

    def _camera(self, name: str, ring: RingBuffer) -> _Camera:
        st = self._state.get(name)
        if st is None or st.ring is not ring:       # new camera, or its ring was replaced
            st = _Camera(ring, self._models.sharing_models())
            self._state[name] = st
        return st

    def _blank(self, name: str, st: _Camera, frame) -> None:
        """Blank the camera's mask in a frame copy (the mask rebuilt when the polygons or the
        frame size change)."""
        polygons = tuple(self.mask_of(name) or ())
        key = (polygons, frame.shape[0], frame.shape[1])
        if key != st.mask_key:
            st.mask, st.mask_key = frame_mask(polygons, frame.shape[0], frame.shape[1]), key
        if st.mask is not None:
            st.mask.apply(frame)

    def step(self) -> bool:
        """Look at every camera once; True when some camera had a frame due."""
        self.beat = self.clock()
        rings = dict(self.cameras())
        for gone in [n for n in self._state if rings.get(n) is None]:
            del self._state[gone]
        results: list[WindowResult] = []
        busy = 0.0
        did = False
        for name, ring in rings.items():
            if ring is None or ring.count == 0 or self._stop_event.is_set():
                continue
            st = self._camera(name, ring)
            seq = ring.count - 1
            try:
                frame, t_mono, t_wall = ring.gather([seq])
            except FramesUnavailableError:
                continue
            t = float(t_mono[0])
            if t - st.last_t < (self.period if st.person else self.idle_period) * PERIOD_SLACK:
                continue
            did = True
            if self.mask_of is not None:
                self._blank(name, st, frame[0])
            t0 = self.clock()
            found = st.tracker(frame[0])
            spent = self.clock() - t0
            busy += spent
            self.frames += 1
            st.last_t = t
            st.person = found is not None
            st.history.append((t, float(t_wall[0]), seq, found))
            horizon = t - self.model.cfg.window_s - HISTORY_SLACK_S
            while st.history and st.history[0][0] < horizon:
                st.history.popleft()
            if self.on_frame is not None:
                self.on_frame(name, spent, found is not None)
            if st.next_window is None:
                st.next_window = t + self.stride_s
            if t >= st.next_window:
                results.append(self._window(name, st, ring, t, float(t_wall[0]), seq))
                # far behind (a stalled thread): the next window is a stride from now
                st.next_window = max(st.next_window + self.stride_s, t + 0.5 * self.stride_s)
        if results:
            self.on_results(results, busy)
        if not did:
            self._stop_event.wait(self.poll_s)
        return did

    def _window(self, name: str, st: _Camera, ring: RingBuffer, t_end: float, t_wall: float,
                seq: int) -> WindowResult:
        """Score the window of `st.history` ending at `t_end`."""
        w = self.model.cfg.window_s
        items = [h for h in st.history if t_end - w < h[0] <= t_end]
        window = PoseSequence.from_frames([h[0] for h in items], [h[3] for h in items],
                                          (ring.width, ring.height))
        score, box = self.model.score_window(window)
        if box is not None:
            st.last_box = box
        label = self.model.cfg.label
        size = ring.source_size or (ring.width, ring.height)
        return WindowResult(name, {label: ClassScore(label, score, box or st.last_box)}, size,
                            t_wall - w, t_wall, t_end, seq)



def worker_of(camera: str, workers: int) -> int:
    """Which of `workers` pose threads serves `camera`: a stable hash of its name, so a reload
    never moves a camera (and its tracked person) to another thread."""
    return zlib.crc32(camera.encode()) % max(1, workers)
