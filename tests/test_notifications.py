"""Notifications through apprise against a local HTTP endpoint the test starts (apprise's
`json://` webhook target): what arrives (title, body, the snapshot attached), which alerts a
rule takes (camera, class, type, schedule on a fake clock), the rate limit, retries and failures
counted, a slow service that never blocks `offer`, and notification URLs never logged.
"""
from __future__ import annotations

import base64
import calendar
import io
import http.server
import json
import logging
import threading
import time
from pathlib import Path

import pytest

from detector.errors import ConfigError
from streamer.comms.notifications import Notifications, render
from streamer.comms.settings import NotifyConfig, NotifyRule
from streamer.metrics import VigilMetrics
from streamer.schedule import ScheduleConfig
from vigil_tools.harness import wait_until

pytest.importorskip("apprise")


class Endpoint:
    """A webhook on 127.0.0.1: records each POST's JSON; `status` and `delay_s` set how it
    answers."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.status = 200
        self.delay_s = 0.0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:           # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if owner.delay_s:
                    time.sleep(owner.delay_s)
                owner.received.append({"path": self.path, **json.loads(body)})
                self.send_response(owner.status)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "hook") -> str:
        return f"json://127.0.0.1:{self.port}/{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint():
    ep = Endpoint()
    yield ep
    ep.close()


def alert(camera="bar", label="fight", kind="start", snapshot=None, seq=1, **extra) -> dict:
    return {"schema": "vigil.alert/2", "seq": seq, "journal_id": "j1", "type": kind,
            "event_id": f"{camera}-20261124T221502Z-{seq:04d}", "camera": camera, "label": label,
            "score": 0.913, "box": [0.1, 0.1, 0.5, 0.5],
            "window": {"start": "2026-11-24T22:15:01.12Z", "end": "2026-11-24T22:15:01.76Z"},
            "snapshot": snapshot, "clip": None,
            "reason": "cleared" if kind == "end" else None, **extra}


def notifications(rules, tmp_path, metrics=None, clock=time.time, **cfg) -> Notifications:
    nc = NotifyConfig(rules=rules, retry_delay_s=0.05, timeout_s=2, **cfg)
    nc.validate("notify")
    return Notifications(nc, "site1", tmp_path, metrics=metrics, clock=clock).start()


def test_a_start_is_sent_with_its_title_body_and_snapshot_attached(endpoint, tmp_path):
    snap = tmp_path / "events" / "bar" / "start.jpg"
    snap.parent.mkdir(parents=True)
    snap.write_bytes(b"\xff\xd8\xff\xe0 jpeg bytes \xff\xd9")
    metrics = VigilMetrics()
    rule = NotifyRule(name="bar-night", urls=[endpoint.url()], title="{label} on {camera}",
                      body="{type} {score} {event_id} {zones} {instance}")
    n = notifications([rule], tmp_path, metrics)
    try:
        n.offer(alert(snapshot="events/bar/start.jpg", zones=["floor"]))
        assert wait_until(lambda: endpoint.received, 10)
    finally:
        n.close()
    got = endpoint.received[0]
    assert got["path"] == "/hook"
    assert got["title"] == "fight on bar"
    assert got["message"] == "start 0.91 bar-20261124T221502Z-0001 floor site1"
    assert [base64.b64decode(a["base64"]) for a in got["attachments"]] == [snap.read_bytes()]
    assert metrics.notifications_sent.labels(rule="bar-night")._value.get() == 1


def test_rules_take_only_their_cameras_classes_and_types(endpoint, tmp_path):
    rules = [NotifyRule(name="falls", urls=[endpoint.url("falls")], labels=["collapse"]),
             NotifyRule(name="bar", urls=[endpoint.url("bar")], cameras=["bar"],
                        types=["start", "end"], min_interval_s=0)]
    n = notifications(rules, tmp_path)
    try:
        n.offer(alert(camera="hall", label="collapse", seq=1))
        n.offer(alert(camera="bar", label="fight", seq=2))
        n.offer(alert(camera="bar", label="fight", kind="update", seq=3))
        n.offer(alert(camera="bar", label="fight", kind="end", seq=4))
        n.offer(alert(camera="hall", label="fight", seq=5))
        assert wait_until(lambda: len(endpoint.received) == 3, 10)
        time.sleep(0.3)
    finally:
        n.close()
    assert sorted((r["path"], r["message"].split()[1]) for r in endpoint.received) == [
        ("/bar", "end"), ("/bar", "start"), ("/falls", "start")]


def test_a_rule_schedule_is_evaluated_at_the_alert_time_across_a_dst_change(endpoint, tmp_path):
    # Europe/London went from GMT to BST at 01:00 UTC on 2026-03-29; the rule covers 20:00-02:00
    # local time, Saturday night into Sunday.
    now = {"t": 0.0}
    rule = NotifyRule(name="night", urls=[endpoint.url()], min_interval_s=0,
                      schedule=ScheduleConfig(timezone="Europe/London",
                                              when=["sat 20:00-02:00"]))
    n = notifications([rule], tmp_path, clock=lambda: now["t"])
    utc = lambda text: calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M"))  # noqa: E731
    try:
        for seq, (when, inside) in enumerate([
                ("2026-03-28 19:59", False),   # 19:59 GMT, before the range
                ("2026-03-28 20:00", True),    # 20:00 GMT
                ("2026-03-29 00:59", True),    # 00:59 GMT
                ("2026-03-29 01:00", False),   # = 02:00 BST: the range is over
                ("2026-03-29 00:30", True)], start=1):
            now["t"] = utc(when)
            n.offer(alert(seq=seq, event_id=when))
            time.sleep(0.05)
        assert wait_until(lambda: len(endpoint.received) == 3, 10)
        time.sleep(0.3)
    finally:
        n.close()
    assert len(endpoint.received) == 3


def test_the_rate_limit_keeps_one_notification_per_camera_and_class_per_interval(
        endpoint, tmp_path):
    metrics = VigilMetrics()
    rule = NotifyRule(name="r", urls=[endpoint.url()], min_interval_s=60)
    n = notifications([rule], tmp_path, metrics)
    try:
        for seq in range(1, 5):
            n.offer(alert(seq=seq))
        n.offer(alert(camera="hall", seq=5))
        assert wait_until(lambda: len(endpoint.received) == 2, 10)
        time.sleep(0.3)
    finally:
        n.close()
    assert len(endpoint.received) == 2
    assert metrics.notifications_rate_limited.labels(rule="r")._value.get() == 3


def test_a_failing_service_is_retried_then_counted_and_logged_without_its_url(
        endpoint, tmp_path, caplog):
    from streamer.comms.settings import notify_url_secrets
    from streamer.masking import SecretLogFilter

    endpoint.status = 500
    metrics = VigilMetrics()
    secret_url = f"json://127.0.0.1:{endpoint.port}/hooks/T0kenSecret123"
    rule = NotifyRule(name="ops", urls=[secret_url])
    # What the daemon installs on its log handlers: the config's secrets, this URL's included.
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(SecretLogFilter(notify_url_secrets(secret_url)))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with caplog.at_level(logging.DEBUG):
            n = notifications([rule], tmp_path, metrics, retries=2)
            try:
                n.offer(alert())
                assert wait_until(
                    lambda: metrics.notifications_failed.labels(rule="ops")._value.get() == 1, 10)
            finally:
                n.close()
    finally:
        root.removeHandler(handler)
    assert len(endpoint.received) == 3                      # the first try and two retries
    assert metrics.notification_retries.labels(rule="ops")._value.get() == 2
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("notify ops: could not notify json://***" in r.getMessage() for r in errors)
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("streamer"))
    assert "T0kenSecret123" not in ours
    # apprise's own lines (it logs the URL it posts to at debug) pass the filter masked.
    logged = out.getvalue()
    assert "apprise" in logged.lower() or "JSON" in logged, logged[:500]
    assert "T0kenSecret123" not in logged


def test_a_slow_service_never_blocks_offer_and_overflow_is_dropped_and_counted(
        endpoint, tmp_path):
    endpoint.delay_s = 1.0
    metrics = VigilMetrics()
    rule = NotifyRule(name="slow", urls=[endpoint.url()], min_interval_s=0)
    n = notifications([rule], tmp_path, metrics, queue_size=2)
    try:
        took = []
        for seq in range(1, 11):
            t0 = time.perf_counter()
            n.offer(alert(seq=seq))
            took.append(time.perf_counter() - t0)
        assert max(took) < 0.01
        assert metrics.notifications_dropped.labels(rule="slow")._value.get() >= 7
    finally:
        t0 = time.monotonic()
        n.close(timeout=3)
        assert time.monotonic() - t0 < 4


def test_a_url_apprise_does_not_know_is_refused_naming_the_key_masked(tmp_path):
    rule = NotifyRule(name="bad", urls=["json://127.0.0.1:1/x", "tgramm://123456:SECRETtok/42"])
    with pytest.raises(ConfigError) as err:
        notifications([rule], tmp_path)
    message = str(err.value)
    assert "notify.rules[0].urls[1]" in message and "tgramm://***" in message
    assert "SECRETtok" not in message


def test_templates_know_their_placeholders():
    from streamer.comms.settings import check_template

    check_template("{label} on {camera} at {time}", "k")
    with pytest.raises(ConfigError, match=r"k: unknown placeholder \{where\}"):
        check_template("{label} at {where}", "k")
    text = render("{label} {type} {time}", alert(), "site1", None)
    assert text.startswith("fight start 2026-11-24 ")
