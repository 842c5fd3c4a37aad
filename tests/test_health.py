"""The watchdog decision (`streamer.health.health_problem`): healthy unless the replay server
ended, a capture thread hangs in native code, or the event loop or a pose thread fell silent."""
from streamer.health import health_problem


class Capture:
    def __init__(self, stuck: bool = False) -> None:
        self._stuck, self.read_timeout_s, self.open_timeout_s = stuck, 1.0, 2.0

    def stuck(self, now: float) -> bool:
        return self._stuck


def test_healthy_when_nothing_is_wrong():
    assert health_problem(100.0, None, {"a": Capture()}, 5.0, loop_beat=99.0) is None


def test_an_ended_replay_server_withholds_the_pings_first():
    problem = health_problem(100.0, "replay thread ended", {"a": Capture(stuck=True)}, 5.0, 0.0)
    assert problem.startswith("replay thread ended; the replay server cannot be restarted")


def test_a_stuck_capture_thread_is_named_with_how_long_it_hung():
    problem = health_problem(100.0, None, {"a": Capture(), "b": Capture(stuck=True)}, None, 0.0)
    assert problem.startswith("camera b: capture thread stuck") and "over 5 s" in problem


def test_a_silent_event_loop_counts_only_under_a_watchdog():
    assert "event loop unresponsive for 11 s" in health_problem(111.0, None, {}, 5.0, 100.0)
    assert health_problem(109.0, None, {}, 5.0, 100.0) is None          # within max(2x5, 10) s
    assert health_problem(1000.0, None, {}, None, 100.0) is None        # no watchdog


def test_a_silent_pose_thread_counts_like_the_event_loop():
    beats = {"vigil-pose-0": 99.0, "vigil-pose-1": 80.0}
    assert "vigil-pose-1 unresponsive for 20 s" in health_problem(100.0, None, {}, 5.0, 99.5,
                                                                   beats=beats)
    assert health_problem(100.0, None, {}, 5.0, 99.5, beats={"vigil-pose-0": 95.0}) is None
    assert health_problem(100.0, None, {}, None, 99.5, beats=beats) is None   # no watchdog
