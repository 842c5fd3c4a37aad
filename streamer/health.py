"""The watchdog decision: whether the service may tell systemd it is healthy.

A pure function of what the daemon sees (the replay server's state, each capture thread's
`stuck(now)`, when the event loop last beat), so the rule is read and tested in one place; the
daemon calls it from the worker loop's heartbeat and logs each new reason once.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional


def health_problem(now: float, replay_problem: Optional[str], captures: Mapping[str, Any],
                   watchdog_interval_s: Optional[float], loop_beat: float,
                   beats: Optional[Mapping[str, float]] = None) -> Optional[str]:
    """Why the service must not ping the watchdog, or None when it is healthy.

    Args:
        now: `time.monotonic()`.
        replay_problem: `AlertPublisher.replay_problem()` (the replay thread ended), or None.
        captures: camera name -> its `CaptureThread` (`stuck(now)`, `read_timeout_s`,
            `open_timeout_s`).
        watchdog_interval_s: the systemd ping interval, None without a watchdog (then the event
            loop's silence is not judged).
        loop_beat: monotonic time of the event loop's last iteration.
        beats: other loop threads (the pose threads) -> monotonic time of their last iteration;
            judged like the event loop (a frame takes milliseconds, so silence is a hang in
            native code).
    Returns:
        The first problem found, as the line to log, or None.
    """
    if replay_problem is not None:
        return (replay_problem + "; the replay server cannot be restarted from inside, so the "
                "watchdog pings stop and systemd restarts the service")
    for name, thread in captures.items():
        if thread.stuck(now):
            hung_s = 3 * thread.read_timeout_s + thread.open_timeout_s
            return (f"camera {name}: capture thread stuck in native code (no return from "
                    f"open/read for over {hung_s:.0f} s); "
                    "it cannot be stopped from Python, so the watchdog pings stop and "
                    "systemd restarts the service")
    if watchdog_interval_s is not None:
        silent = now - loop_beat
        if silent > max(2 * watchdog_interval_s, 10.0):
            return (f"event loop unresponsive for {silent:.0f} s: the watchdog pings stop "
                    "and systemd restarts the service")
        for name, beat in (beats or {}).items():
            silent = now - beat
            if silent > max(2 * watchdog_interval_s, 10.0):
                return (f"{name} unresponsive for {silent:.0f} s: the watchdog pings stop "
                        "and systemd restarts the service")
    return None
