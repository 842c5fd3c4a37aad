"""Video probing, frame sampling and sequential decoding (tiny 64x48 videos)."""
from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from detector.errors import DataError
from train import video_io


def _level(i: int) -> int:
    return 20 + 20 * i


def write_coded_video(path: Path, n: int, fps: float = 10.0, size=(64, 48)) -> Path:
    """Frame i: BGR (200, level(i), 30), so red is low, blue high and green encodes i."""
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened()
    for i in range(n):
        frame = np.empty((h, w, 3), np.uint8)
        frame[:] = (200, _level(i), 30)
        writer.write(frame)
    writer.release()
    return path


def frame_number(rgb_frame: np.ndarray) -> int:
    """Invert `_level` from the mean green value of an RGB frame."""
    return int(round((float(rgb_frame[..., 1].mean()) - 20) / 20))


@pytest.fixture
def video(tmp_path: Path) -> Path:
    return write_coded_video(tmp_path / "clip.mp4", 10)


def test_probe_reports_frames_fps_and_size(video: Path) -> None:
    info = video_io.probe(video)
    assert info == video_io.VideoInfo(frames=10, fps=pytest.approx(10.0), width=64, height=48)


def test_probe_counts_frames_when_container_reports_none(video: Path, monkeypatch) -> None:
    real = cv2.VideoCapture

    class NoCount:
        """A capture whose container claims no frame count (as some AVI/MKV files do)."""

        def __init__(self, *args):
            self._cap = real(*args)

        def get(self, prop):
            return 0.0 if prop == cv2.CAP_PROP_FRAME_COUNT else self._cap.get(prop)

        def __getattr__(self, name):
            return getattr(self._cap, name)

    monkeypatch.setattr(video_io.cv2, "VideoCapture", NoCount)
    assert video_io.probe(video).frames == 10


def test_probe_missing_and_corrupt_files_raise_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nothing.mp4"):
        video_io.probe(tmp_path / "nothing.mp4")
    bad = tmp_path / "garbage.mp4"
    bad.write_bytes(b"\x00not a video" * 100)
    with pytest.raises(DataError, match="garbage.mp4"):
        video_io.probe(bad)


@pytest.mark.parametrize("n,T", [(64, 16), (10, 16), (1, 4), (300, 16), (17, 1)])
def test_sample_indices_without_jitter_is_the_reference_linspace(n: int, T: int) -> None:
    idx = video_io.sample_indices(n, T)
    assert idx.dtype.kind == "i" and idx.shape == (T,)
    np.testing.assert_array_equal(idx, np.linspace(0, n - 1, T).astype(int))


def test_sample_indices_jitter_stays_in_segment_sorted_and_seeded() -> None:
    n, T = 64, 16
    spacing = (n - 1) / (T - 1)
    base = np.linspace(0, n - 1, T)
    runs = [video_io.sample_indices(n, T, 1.0, np.random.default_rng(s)) for s in range(20)]
    for idx in runs:
        assert idx.min() >= 0 and idx.max() <= n - 1
        assert np.all(np.diff(idx) >= 0)
        assert np.all(np.abs(idx - base) <= spacing / 2 + 1)
    assert any(not np.array_equal(r, base.astype(int)) for r in runs)
    again = video_io.sample_indices(n, T, 1.0, np.random.default_rng(3))
    np.testing.assert_array_equal(again, runs[3])


def test_read_frames_returns_rgb_resized_frames_in_requested_order(video: Path) -> None:
    clip = video_io.read_frames(video, [7, 2, 2, 9, 0], size=(32, 40))
    assert clip.dtype == np.uint8 and clip.shape == (5, 32, 40, 3)
    assert [frame_number(f) for f in clip] == [7, 2, 2, 9, 0]
    # Written as BGR (200, g, 30): read back as RGB the red channel is the low one.
    assert clip[..., 0].mean() < 60 and clip[..., 2].mean() > 170


def test_read_frames_reads_sequentially_without_seeking(video: Path, monkeypatch) -> None:
    calls = {"set": 0, "retrieve": 0}

    real = cv2.VideoCapture

    class Spy:
        """Counts seeks (`set`) and colour conversions (`retrieve`) of a real capture."""

        def __init__(self, *args):
            self._cap = real(*args)

        def set(self, *args):
            calls["set"] += 1
            return self._cap.set(*args)

        def retrieve(self, *args):
            calls["retrieve"] += 1
            return self._cap.retrieve(*args)

        def __getattr__(self, name):
            return getattr(self._cap, name)

    monkeypatch.setattr(video_io.cv2, "VideoCapture", Spy)
    video_io.read_frames(video, [1, 1, 4, 8], size=(24, 32))
    assert calls == {"set": 0, "retrieve": 3}


def test_read_frames_pads_a_short_video_with_its_last_frame(video: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="train.video_io"):
        clip = video_io.read_frames(video, [8, 9, 12, 15], size=None)
    assert [frame_number(f) for f in clip] == [8, 9, 9, 9]
    assert clip.shape[1:] == (48, 64, 3)
    assert any("clip.mp4" in r.getMessage() for r in caplog.records)


def test_read_frames_raises_when_no_requested_frame_exists(video: Path) -> None:
    with pytest.raises(DataError, match="clip.mp4.*too few frames"):
        video_io.read_frames(video, [50, 60], size=(24, 32))
