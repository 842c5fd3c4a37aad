"""The soak (`vigil soak`): the leak detector itself, and a short real soak (`slow`)."""
from __future__ import annotations

import csv
import os

import pytest

from vigil_tools.soak import FD_BUDGET, RSS_BUDGET_MIB, Sample, analyse, fit_growth


def _samples(rss, threads=None, fds=None, rate=None, step=5.0):
    n = len(rss)
    threads = threads or [30] * n
    fds = fds or [25] * n
    rate = rate or [10.0] * n
    return [Sample(t_s=i * step, rss_mib=rss[i], threads=threads[i], fds=fds[i],
                   windows_total=0, windows_per_s=rate[i], frames_total=0, windows_skipped=0,
                   cameras_up=3, alerts_total=0) for i in range(n)]


def test_fit_growth_measures_the_second_half_only():
    ts = [float(i) for i in range(20)]
    warmup_then_flat = [100 + 10 * i if i < 10 else 200 for i in range(20)]
    growth, per_hour = fit_growth(ts, warmup_then_flat)
    assert abs(growth) < 1e-9 and abs(per_hour) < 1e-9
    growth, per_hour = fit_growth(ts, [2.0 * t for t in ts])
    assert growth == pytest.approx(2.0 * 9) and per_hour == pytest.approx(7200)


def test_a_steady_leak_fails_and_a_plateau_with_spikes_passes():
    n = 40
    plateau = [800.0 + (60.0 if i % 6 == 0 else 0.0) for i in range(n)]   # reconnect spikes
    assert analyse(_samples(plateau))[4] == []
    leak = [800.0 + 2.0 * i for i in range(n)]                 # +2 MiB a sample (every 5 s)
    failures = analyse(_samples(leak))[4]
    assert any("rss_mib" in f for f in failures)
    fd_leak = [25 + i for i in range(n)]                         # one fd per sample
    assert any("fds" in f for f in analyse(_samples([800.0] * n, fds=fd_leak))[4])
    assert RSS_BUDGET_MIB > 0 and FD_BUDGET > 0


def test_a_decaying_windows_rate_fails():
    n = 40
    rate = [10.0] * 20 + [3.0] * 20
    assert any("windows/s" in f for f in analyse(_samples([800.0] * n, rate=rate))[4])


@pytest.mark.slow
@pytest.mark.integration
def test_a_short_soak_finds_nothing_growing(tmp_path, _rtsp_available):
    """~75 s of churn: 2 file cameras, 1 RTSP camera restarted every 15 s, a subscriber flapping
    every 6 s."""
    from vigil_tools.soak import run_soak

    minutes = float(os.environ.get("VIGIL_SOAK_TEST_MINUTES", "1.25"))
    report = run_soak(minutes, tmp_path, file_cameras=2, rtsp_cameras=1, restart_every_s=15,
                      restart_down_s=2, flap_every_s=6, sample_every_s=2.5)
    print(report.summary())
    assert report.passed, report.summary()
    assert report.rtsp_restarts >= 3
    assert report.subscriber_connects >= 3 and report.subscriber_received > 0
    assert report.png_path is not None and report.png_path.stat().st_size > 0
    with open(report.csv_path) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(report.samples) >= 20
    assert {"rss_mib", "threads", "fds", "windows_per_s"} <= set(rows[0])


def test_soak_verb_registers_and_refuses_bad_numbers():
    import argparse

    from detector.errors import ConfigError
    from vigil_tools import soak_cli

    parser = argparse.ArgumentParser(prog="vigil")
    soak_cli.register(parser.add_subparsers(dest="verb"))
    args = parser.parse_args(["soak", "--minutes", "0", "--out", "x"])
    assert args.func is soak_cli.cmd_soak and args.rtsp_cameras == 2
    with pytest.raises(ConfigError, match="--minutes"):
        args.func(args)
