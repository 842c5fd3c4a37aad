"""An event's evidence from its camera's ring (`streamer.event_evidence.EventEvidence`): the
snapshot at `start` is the window's last frame, the clip at `end` is the pre-roll plus every frame
since the start, and a camera that is gone or a clip turned off leaves the alert without one."""
import time

import cv2
import numpy as np
import pytest

from streamer.config import EvidenceConfig
from streamer.event_evidence import EventEvidence, concat_frames
from streamer.evidence import EvidenceWriter
from streamer.ringbuffer import RingBuffer

WHEN = time.time()


@pytest.fixture
def evidence(tmp_path):
    writer = EvidenceWriter(tmp_path, max_age_days=30, max_bytes=10**9, queue_size=8).start()
    yield EventEvidence(writer)
    writer.close()


def _ring(frames: int) -> RingBuffer:
    ring = RingBuffer(64, 48, 64)
    for i in range(frames):
        ring.write(np.full((48, 64, 3), 8 * i, np.uint8), float(i), WHEN + i / 10, (64, 48))
    return ring


def _alert(kind: str, end_seq: int) -> dict:
    return {"type": kind, "camera": "lobby", "event_id": "ev1", "label": "fight", "score": 0.9,
            "box": [0.2, 0.2, 0.8, 0.8], "_end_seq": end_seq, "_t_end_wall": WHEN}


def test_start_writes_the_snapshot_and_end_the_clip_with_pre_roll(evidence, tmp_path):
    ring, cfg = _ring(10), EvidenceConfig(pre_roll_s=0.2)
    start = _alert("start", 5)
    evidence.attach(start, ring, 10.0, cfg)
    for i in range(10, 20):
        ring.write(np.full((48, 64, 3), 8 * i, np.uint8), float(i), WHEN + i / 10, (64, 48))
    end = _alert("end", 15)
    evidence.attach(end, ring, 10.0, cfg)
    assert evidence.writer.flush(10)
    assert start["snapshot"].endswith("start.jpg") and (tmp_path / start["snapshot"]).is_file()
    cap = cv2.VideoCapture(str(tmp_path / end["clip"]))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3 + 10   # seqs 3..5 of pre-roll, 6..15
    cap.release()


def test_no_clip_when_clips_are_off_or_the_start_was_never_seen(evidence):
    cfg = EvidenceConfig(clip=False)
    ring = _ring(10)
    start = _alert("start", 5)
    evidence.attach(start, ring, 10.0, cfg)
    end = _alert("end", 9)
    evidence.attach(end, ring, 10.0, cfg)
    assert "snapshot" in start and "clip" not in end
    orphan = dict(_alert("end", 9), event_id="ev-never-started")
    evidence.attach(orphan, ring, 10.0, EvidenceConfig())
    assert "clip" not in orphan


def test_a_gone_camera_leaves_the_start_without_a_snapshot(evidence):
    start = _alert("start", 5)
    evidence.attach(start, None, None, EvidenceConfig())
    assert "snapshot" not in start


def test_frames_of_another_size_are_resized_to_the_first_parts():
    a, b = np.zeros((2, 48, 64, 3), np.uint8), np.zeros((3, 24, 32, 3), np.uint8)
    assert concat_frames([a, b]).shape == (5, 48, 64, 3)
