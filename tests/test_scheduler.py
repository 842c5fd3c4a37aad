"""The batching policy (`streamer.scheduler.Scheduler`): a batch waits until it is full or the
oldest window has waited `max_wait_ms`, only each camera's newest due window is kept, and under
overload no backlog grows."""
from streamer.scheduler import BatchPolicy, CameraWindow, Scheduler
from streamer.windows import window_span

T = 4


def _cams(n, fps=15.0, stride=2, clip_seconds=0.5):
    return {f"c{i}": CameraWindow(fps=fps, clip_seconds=clip_seconds, frames=T, stride=stride)
            for i in range(n)}


def test_scheduler_waits_for_a_full_batch_or_max_wait():
    sched = Scheduler(_cams(3), BatchPolicy(max_batch=2, max_wait_ms=40))
    n = window_span(15.0, 0.5, T)
    assert sched.poll(0.0, {"c0": n - 1}) == []                       # not enough frames yet
    assert sched.poll(0.0, {"c0": n}) == []                           # due, waiting for company
    assert sched.poll(0.039, {"c0": n}) == []
    batch = sched.poll(0.041, {"c0": n + 1})                          # max_wait reached
    assert [(w.camera, w.end_seq) for w in batch] == [("c0", n)]      # the newest frame
    assert batch[0].seqs[-1] == n and len(batch[0].seqs) == T
    sched.poll(0.05, {"c1": n})
    batch = sched.poll(0.051, {"c2": n})                              # two due: full batch now
    assert sorted(w.camera for w in batch) == ["c1", "c2"]


def test_scheduler_keeps_only_the_newest_window_and_counts_the_rest():
    sched = Scheduler(_cams(1, stride=2), BatchPolicy(max_batch=4, max_wait_ms=1000))
    n = window_span(15.0, 0.5, T)
    sched.poll(0.0, {"c0": n})                 # due point 1, pending
    sched.poll(0.1, {"c0": n + 2})             # due point 2 supersedes 1
    sched.poll(0.2, {"c0": n + 7})             # points 3, 4 crossed at once: 2 and 3 superseded
    assert sched.pending == 1 and sched.skipped["c0"] == 3
    batch = sched.poll(1.2, {"c0": n + 7})
    assert len(batch) == 1 and batch[0].end_seq == n + 6
    assert sched.released["c0"] == 1


def test_overload_grows_no_backlog_and_accounts_for_every_due_window():
    """Four 15 fps cameras due every 2 frames; the (fake) worker needs 300 ms per batch of 2."""
    fps, stride, busy_s, max_wait_s = 15.0, 2, 0.3, 0.05
    cams = _cams(4, fps=fps, stride=stride)
    sched = Scheduler(cams, BatchPolicy(max_batch=2, max_wait_ms=max_wait_s * 1000))
    n = window_span(fps, 0.5, T)
    dt = 1 / fps / 4
    busy_until, last_counts, last_release = 0.0, {}, {}
    max_gap = 0.0
    for step in range(int(20 / dt)):
        now = step * dt
        counts = {name: int(now * fps) + i for i, name in enumerate(cams)}
        if now < busy_until:
            continue                                   # the worker thread is inside infer()
        last_counts = counts
        batch = sched.poll(now, counts)
        assert sched.pending <= len(cams)              # never more than one per camera
        assert len(batch) <= 2
        for w in batch:
            assert w.end_seq == counts[w.camera] - 1   # the newest frame, not an old one
            assert now - w.due_since <= max_wait_s + dt + 1e-9
            if w.camera in last_release:
                max_gap = max(max_gap, now - last_release[w.camera])
            last_release[w.camera] = now
        if batch:
            busy_until = now + busy_s
    for name in cams:
        c = last_counts[name]
        due_points = 0 if c < n else (c - n) // stride + 1
        pending = 1 if name in sched._pending else 0
        assert sched.released[name] + sched.skipped[name] + pending == due_points
        assert sched.skipped[name] > 0
    # fairness: every camera gets a fresh window within two batches (+ waiting and one stride)
    assert max_gap <= 2 * busy_s + max_wait_s + stride / fps + 2 * dt
