"""The review page (streamer/web/) served by the real `WebServer` on loopback, spoken to over
HTTP: which files it serves, CSRF, logins, oversized posts, paging a 100,000-alert journal,
marks that become a dataset `vigil data check` accepts, and two operators marking at once.
The browser test (a real Chromium against a real daemon) is tests/test_web_browser.py."""
from __future__ import annotations

import http.client
import http.cookiejar
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from detector.errors import ConfigError
from streamer.config import parse_config
from streamer.evidence import EvidenceWriter
from streamer.web.auth import Authenticator, hash_password, read_users, set_user, verify_password
from streamer.web.live import LiveView
from streamer.web.paths import PathRefused, evidence_path
from streamer.web.review import ReviewDataset
from streamer.web.server import WebServer
from streamer.web.settings import WebConfig
from streamer.web.store import EventFilter, JournalView
from train.dataset import inspect_dataset
from vigil_tools.bench_web import fake_journal


# --------------------------------------------------------------------------- fixtures
def _evidence(data_dir: Path, camera: str, event_id: str, frames: int = 30) -> tuple[str, str]:
    """A real snapshot and MP4 clip (the daemon's evidence writer), relative paths."""
    writer = EvidenceWriter(data_dir, max_age_days=14, max_bytes=10 ** 9, min_free_bytes=0)
    writer.start()
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 255, (frames, 96, 128, 3), dtype=np.uint8)
    snap = writer.snapshot(camera, event_id, clip[0], [0.1, 0.2, 0.5, 0.9], "fight", 0.9)
    rel_clip = writer.clip(camera, event_id, clip, 10.0)
    assert writer.close(timeout=20)
    assert snap and rel_clip and (data_dir / rel_clip).is_file()
    return snap, rel_clip


def _event_id(data_dir: Path, index: int) -> str:
    import sqlite3
    db = sqlite3.connect(str(data_dir / "journal.sqlite3"))
    try:
        return db.execute("SELECT event_id FROM alerts WHERE type='start' ORDER BY seq "
                          "LIMIT 1 OFFSET ?", (index,)).fetchone()[0]
    finally:
        db.close()


@pytest.fixture()
def data_dir(tmp_path: Path) -> Path:
    """A journal of 12 events; events 0 and 1 (camera lobby) have real evidence."""
    d = tmp_path / "data"
    d.mkdir()
    ev = {0: _evidence(d, "lobby", "lobby-e0"), 3: _evidence(d, "lobby", "lobby-e3")}
    fake_journal(d, 36, evidence=ev)
    return d


class Client:
    """A cookie-keeping HTTP client for one server (urllib, redirects not followed)."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.jar = http.cookiejar.CookieJar()

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):  # noqa: ANN
                return None
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar),
                                                  NoRedirect)

    def request(self, path: str, data: dict | None = None, headers: dict | None = None):
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        req = urllib.request.Request(self.base + path, data=body, headers=headers or {})
        try:
            with self.opener.open(req, timeout=30) as resp:
                return resp.status, resp.read().decode("utf-8", "replace"), dict(resp.headers)
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode("utf-8", "replace"), dict(err.headers)

    def csrf(self, path: str) -> str:
        status, page, _ = self.request(path)
        assert status == 200, page
        return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def _raw(port: int, method: str, path: str, headers: dict | None = None, body: bytes = b""):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host="Host" in (headers or {}), skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        conn.endheaders(body or None)
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


@pytest.fixture()
def server(data_dir: Path):
    live = LiveView(cameras=lambda: [{"name": "lobby", "url": "rtsp://***@cam/x", "up": True,
                                      "fps": 10.0, "last_frame_age_s": 0.1, "enabled": True}],
                    model=lambda: {"checkpoint": "/models/v2.pt", "name": "v2.pt",
                                   "classes": ["fight", "collapse"], "device": "cpu"})
    srv = WebServer(WebConfig(enabled=True, port=0), data_dir, live).start()
    yield srv
    assert srv.stop()


# --------------------------------------------------------------------------- paths
@pytest.mark.parametrize("rel", ["events/../journal.sqlite3", "../etc/passwd", "/etc/passwd",
                                 "events/%2e%2e/journal.sqlite3", "journal.sqlite3",
                                 "events/a\\..\\b", "review/marks.sqlite3", "events/./x.jpg",
                                 "events//x.jpg", "events/x\x00.jpg"])
def test_only_plain_paths_under_the_served_folders_resolve(tmp_path, rel):
    with pytest.raises(PathRefused):
        evidence_path(tmp_path, rel)


def test_a_symlink_out_of_data_dir_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(b"x")
    data = tmp_path / "data"
    (data / "events").mkdir(parents=True)
    (data / "events" / "cam").symlink_to(outside)
    with pytest.raises(PathRefused, match="outside data_dir"):
        evidence_path(data, "events/cam/secret.jpg")


def test_traversal_over_http_is_refused_and_evidence_is_served(server, data_dir):
    port = server.port
    for path in ("/evidence/events/%2e%2e/journal.sqlite3", "/evidence/events/..%2fjournal.sqlite3",
                 "/evidence/events/%252e%252e/journal.sqlite3", "/evidence/journal.sqlite3",
                 "/evidence/events/../journal.sqlite3"):
        status, body = _raw(port, "GET", path)
        assert status in (403, 404), (path, status)
        assert "SQLite" not in body
    snap = next((data_dir / "events").rglob("start.jpg")).relative_to(data_dir).as_posix()
    status, body = _raw(port, "GET", f"/evidence/{snap}")
    assert status == 200


# --------------------------------------------------------------------------- pages
def test_event_list_pages_and_filters(server, data_dir):
    c = Client(server.url)
    status, page, _ = c.request("/events")
    assert status == 200
    assert page.count('class="event"') == 12            # under one page
    assert "v2.pt" in page                              # the serving model is named
    status, page, _ = c.request("/events?camera=yard")
    assert page.count('class="event"') == 4 and "lobby-" not in page.split('id="events"')[1]


def test_event_list_filters_by_time_and_label(server, data_dir):
    c = Client(server.url)
    # fake_journal: event i starts at t0 + 10 i s, t0 = 2027-01-15T08:00:00Z
    status, page, _ = c.request("/events?since=2027-01-15T08:01")
    assert status == 200 and page.count('class="event"') == 6
    status, page, _ = c.request("/events?since=2027-01-15T08:01&until=2027-01-15T08:01:30")
    assert page.count('class="event"') == 3
    status, page, _ = c.request("/events?label=collapse")
    assert page.count('class="event"') == 6
    status, page, _ = c.request("/events?since=not-a-time&before=x")   # ignored, not a 500
    assert status == 200 and page.count('class="event"') == 12


def test_cameras_page_shows_state_and_masked_url(server):
    status, page, _ = Client(server.url).request("/")
    assert status == 200 and "rtsp://***@cam/x" in page and "/models/v2.pt" in page
    assert 'class="up"' in page


def test_missing_evidence_is_said_on_the_event_page(server, data_dir):
    event_id = _event_id(data_dir, 0)
    c = Client(server.url)
    status, page, _ = c.request(f"/events/{event_id}")
    assert status == 200 and 'id="clip"' in page and "-missing\"" not in page
    for f in (data_dir / "events").rglob("lobby-e0/*"):
        f.unlink()
    status, page, _ = c.request(f"/events/{event_id}")
    assert status == 200
    assert 'id="snapshot-missing"' in page and 'id="clip-missing"' in page
    assert "deleted by retention" in page
    status, page, _ = c.request(f"/events/{event_id}/clip.webm")
    assert status == 404


def test_the_clip_is_served_as_webm(server, data_dir):
    event_id = _event_id(data_dir, 0)
    status, body, headers = Client(server.url).request(f"/events/{event_id}/clip.webm")
    assert status == 200 and headers["Content-Type"] == "video/webm"
    assert (data_dir / "web-cache").is_dir()


def test_unknown_event_is_a_404_page(server):
    status, page, _ = Client(server.url).request("/events/nope-1")
    assert status == 404 and "No such event" in page


# --------------------------------------------------------------------------- security
def test_a_post_without_the_csrf_token_is_refused(server, data_dir):
    event_id = _event_id(data_dir, 0)
    c = Client(server.url)
    status, page, _ = c.request(f"/events/{event_id}/mark", {"verdict": "real"})
    assert status == 403 and "security token" in page
    c.csrf(f"/events/{event_id}")                       # has the cookie now, not the token
    status, _, _ = c.request(f"/events/{event_id}/mark", {"verdict": "real", "csrf": "x" * 64})
    assert status == 403
    other = Client(server.url)                          # another browser's token
    token = other.csrf(f"/events/{event_id}")
    status, _, _ = c.request(f"/events/{event_id}/mark", {"verdict": "real", "csrf": token})
    assert status == 403
    assert ReviewDataset(data_dir).verdicts() == {}


def test_oversized_and_unsized_posts_are_refused(server, data_dir):
    event_id = _event_id(data_dir, 0)
    big = b"csrf=" + b"a" * 20000
    status, _ = _raw(server.port, "POST", f"/events/{event_id}/mark",
                     {"Content-Length": str(len(big)),
                      "Content-Type": "application/x-www-form-urlencoded"}, big)
    assert status == 413
    status, _ = _raw(server.port, "POST", f"/events/{event_id}/mark",
                     {"Transfer-Encoding": "chunked"})
    assert status == 411


def test_without_login_only_loopback_host_names_are_answered(server):
    status, _ = _raw(server.port, "GET", "/events", {"Host": "attacker.example"})
    assert status == 403
    status, _ = _raw(server.port, "GET", "/events", {"Host": f"localhost:{server.port}"})
    assert status == 200


def test_binding_beyond_loopback_needs_a_login(tmp_path):
    cfg = {"data_dir": str(tmp_path), "model": {"checkpoint": "x.pt"},
           "cameras": [{"name": "a", "url": "synth://fight"}],
           "web": {"enabled": True, "host": "0.0.0.0"}}
    with pytest.raises(ConfigError, match="web.host"):
        parse_config(cfg, check_paths=False)
    cfg["web"]["token_file"] = "token.txt"
    parsed = parse_config(cfg, base_dir=tmp_path, check_paths=False)
    assert parsed.web.token_file == tmp_path / "token.txt"
    assert parse_config({**cfg, "web": {}}, check_paths=False).web.enabled is False


def test_token_login(data_dir, tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret-token-0123456789\n")
    srv = WebServer(WebConfig(enabled=True, port=0, token_file=token), data_dir).start()
    try:
        c = Client(srv.url)
        status, _, headers = c.request("/events")
        assert status == 303 and "/login" in headers["Location"]
        csrf = c.csrf("/login")
        t = time.monotonic()
        status, _, _ = c.request("/login", {"csrf": csrf, "secret": "wrong"})
        assert status == 401 and time.monotonic() - t >= 0.4   # a failed login waits
        status, _, headers = c.request("/login", {"csrf": csrf, "secret":
                                                  "s3cret-token-0123456789", "next": "/events"})
        assert status == 303 and headers["Location"].endswith("/events")
        status, page, _ = c.request("/events")
        assert status == 200 and "user token" in page
        # scripts: a bearer header instead of a session
        status, _, _ = Client(srv.url).request(
            "/events", headers={"Authorization": "Bearer s3cret-token-0123456789"})
        assert status == 200
        # a logged-in page is answered whatever the Host (it sits behind a proxy)
        status, _ = _raw(srv.port, "GET", "/events", {"Host": "vigil.example.org",
                         "Authorization": "Bearer s3cret-token-0123456789"})
        assert status == 200
    finally:
        srv.stop()


def test_users_file_with_scrypt_hashes(data_dir, tmp_path):
    users = tmp_path / "users"
    set_user(users, "ana", "correct horse battery")
    set_user(users, "bo", "another long one")
    assert users.stat().st_mode & 0o777 == 0o600
    stored = read_users(users)
    assert set(stored) == {"ana", "bo"} and stored["ana"].startswith("scrypt$16384$8$1$")
    assert "correct horse" not in users.read_text()
    assert verify_password("correct horse battery", stored["ana"])
    assert not verify_password("correct horse batterY", stored["ana"])
    assert hash_password("x") != hash_password("x")     # salted
    srv = WebServer(WebConfig(enabled=True, port=0, users_file=users), data_dir).start()
    try:
        c = Client(srv.url)
        csrf = c.csrf("/login")
        status, _, _ = c.request("/login", {"csrf": csrf, "user": "ana", "secret": "nope"})
        assert status == 401
        status, _, _ = c.request("/login", {"csrf": csrf, "user": "ana",
                                            "secret": "correct horse battery"})
        assert status == 303
        event_id = _event_id(data_dir, 0)
        token = c.csrf(f"/events/{event_id}")
        status, _, _ = c.request(f"/events/{event_id}/mark", {"csrf": token, "verdict": "real"})
        assert status == 303
        assert ReviewDataset(data_dir).marks(event_id)[-1].by == "ana"
    finally:
        srv.stop()
    users.write_text("ana:plaintext\n")
    with pytest.raises(ConfigError, match="users:1"):
        read_users(users)


def test_session_cookies_are_signed_and_expire():
    auth = Authenticator(token="t" * 20, session_s=60)
    cookie = auth.session_cookie("ana", now=1000)
    assert auth.session_user(cookie, now=1030) == "ana"
    assert auth.session_user(cookie, now=1100) is None
    forged = cookie.replace("ana", "bob", 1)
    assert auth.session_user(forged, now=1030) is None
    assert Authenticator(token="t" * 20).session_user(cookie, now=1030) is None   # another key


# --------------------------------------------------------------------------- marks
def test_marks_become_a_dataset_vigil_data_check_accepts(server, data_dir):
    real, false = _event_id(data_dir, 0), _event_id(data_dir, 3)
    c = Client(server.url)
    token = c.csrf(f"/events/{real}")
    status, _, headers = c.request(f"/events/{real}/mark", {"csrf": token, "verdict": "real"})
    assert status == 303
    status, page, _ = c.request(urllib.parse.urlsplit(headers["Location"]).path + "?" +
                                urllib.parse.urlsplit(headers["Location"]).query)
    assert "marked real" in page and 'id="verdict">real' in page
    c.request(f"/events/{false}/mark", {"csrf": token, "verdict": "false_alarm"})
    c.request(f"/events/{real}/missed", {"csrf": token, "label": "collapse", "start_s": "0.5",
                                          "end_s": "2.5"})
    review = data_dir / "review"
    lines = (review / "labels.csv").read_text().splitlines()
    assert lines[0] == "file,label,start_s,end_s,group"
    rows = sorted(lines[1:])
    assert any(r.startswith(f"clips/{false}.mp4,none,,,lobby") for r in rows)
    assert any(r.startswith(f"clips/{real}.mp4,fight,") and r.endswith(",lobby") for r in rows)
    assert any(r == f"clips/{real}.mp4,collapse,0.50,2.50,lobby" for r in rows)
    records, problems = inspect_dataset(review)
    assert problems == []
    assert {r.stem for r in records} == {real, false}
    # the list filters by review state
    status, page, _ = c.request("/events?state=false_alarm")
    assert page.count('class="event"') == 1 and false in page


def test_a_bad_missed_range_is_refused_with_a_message(server, data_dir):
    event_id = _event_id(data_dir, 0)
    c = Client(server.url)
    token = c.csrf(f"/events/{event_id}")
    for form, said in (({"label": "collapse", "start_s": "2", "end_s": "1"}, "empty"),
                       ({"label": "dance", "start_s": "0", "end_s": "1"}, "unknown class"),
                       ({"label": "fight", "start_s": "", "end_s": "1"}, "start and end"),
                       ({"label": "fight", "start_s": "99", "end_s": "100"}, "after the clip")):
        status, _, headers = c.request(f"/events/{event_id}/missed", {"csrf": token, **form})
        assert status == 303
        msg = urllib.parse.parse_qs(urllib.parse.urlsplit(headers["Location"]).query)["msg"][0]
        assert msg.startswith("Not recorded") and said in msg, msg
    assert ReviewDataset(data_dir).marks(event_id) == []


def test_two_operators_last_mark_wins_and_both_are_kept(data_dir):
    event_id = _event_id(data_dir, 0)
    detail = JournalView(data_dir / "journal.sqlite3").event(event_id)
    review = ReviewDataset(data_dir)
    barrier = threading.Barrier(2)

    def operator(name: str, verdict: str) -> None:
        mine = ReviewDataset(data_dir)                  # each request builds its own
        barrier.wait()
        for _ in range(5):
            mine.mark(detail, verdict, name)
    threads = [threading.Thread(target=operator, args=("ana", "real")),
               threading.Thread(target=operator, args=("bo", "false_alarm"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    marks = review.marks(event_id)
    assert len(marks) == 10 and {m.by for m in marks} == {"ana", "bo"}
    last = marks[-1].verdict
    assert review.verdicts() == {event_id: last}
    rows = (data_dir / "review" / "labels.csv").read_text().splitlines()[1:]
    assert len(rows) == 1 and (",none," in rows[0]) == (last == "false_alarm")
    review.mark(detail, "real", "carl")                # a third, later mark decides
    assert review.verdicts()[event_id] == "real"


def test_a_mark_on_a_camera_that_is_gone_is_kept_and_said(data_dir):
    event_id = _event_id(data_dir, 0)
    live = LiveView(cameras=lambda: [{"name": "yard", "url": "synth://none", "up": True}])
    srv = WebServer(WebConfig(enabled=True, port=0), data_dir, live).start()
    try:
        c = Client(srv.url)
        token = c.csrf(f"/events/{event_id}")
        status, page, _ = c.request(f"/events/{event_id}")
        assert "no longer configured" in page
        status, _, headers = c.request(f"/events/{event_id}/mark",
                                       {"csrf": token, "verdict": "false_alarm"})
        msg = urllib.parse.parse_qs(urllib.parse.urlsplit(headers["Location"]).query)["msg"][0]
        assert "camera 'lobby' is no longer configured" in msg
        assert "none,,,lobby" in (data_dir / "review" / "labels.csv").read_text()
    finally:
        srv.stop()


def test_a_mark_without_evidence_is_recorded_but_adds_no_clip(server, data_dir):
    event_id = _event_id(data_dir, 1)                  # no evidence was written for it
    c = Client(server.url)
    token = c.csrf(f"/events/{event_id}")
    _, _, headers = c.request(f"/events/{event_id}/mark", {"csrf": token, "verdict": "real"})
    msg = urllib.parse.parse_qs(urllib.parse.urlsplit(headers["Location"]).query)["msg"][0]
    assert "no clip could be kept" in msg
    assert ReviewDataset(data_dir).verdicts() == {event_id: "real"}
    assert event_id not in (data_dir / "review" / "labels.csv").read_text()


# --------------------------------------------------------------------------- a big journal
def test_paging_through_100k_alerts(tmp_path):
    data = tmp_path / "big"
    data.mkdir()
    events = fake_journal(data, 100_000)
    view = JournalView(data / "journal.sqlite3")
    seen, before, pages = [], None, 0
    while pages < 5:
        rows, before = view.events(EventFilter(), before, 50)
        seen += [r.seq for r in rows]
        pages += 1
    assert len(seen) == 250 and seen == sorted(seen, reverse=True) and len(set(seen)) == 250
    rows, nxt = view.events(EventFilter(), 40, 50)      # the oldest page: no next link
    assert [r.seq for r in rows] == [37, 34, 31, 28, 25, 22, 19, 16, 13, 10, 7, 4, 1] and nxt is None
    rows, _ = view.events(EventFilter(camera="gate", label="collapse"), None, 50)
    assert len(rows) == 50 and {(r.camera, r.label) for r in rows} == {("gate", "collapse")}
    assert all(r.end is not None and r.end["reason"] == "cleared" for r in rows)
    srv = WebServer(WebConfig(enabled=True, port=0), data).start()
    try:
        c = Client(srv.url)
        status, page, _ = c.request("/events")
        assert status == 200 and page.count('class="event"') == 50
        older = re.search(r'id="older" href="([^"]+)"', page).group(1).replace("&amp;", "&")
        status, page2, _ = c.request(older)
        assert status == 200 and page2.count('class="event"') == 50
    finally:
        srv.stop()
    assert events == 33_334


# --------------------------------------------------------------------------- config and verb
def test_a_missing_or_short_token_file_stops_the_start(tiny_checkpoint, tmp_path):
    cfg = {"data_dir": str(tmp_path / "data"), "model": {"checkpoint": str(tiny_checkpoint)},
           "cameras": [{"name": "a", "url": "synth://fight"}],
           "web": {"enabled": True, "host": "0.0.0.0", "token_file": "missing.txt"}}
    with pytest.raises(ConfigError, match="web.token_file: cannot read"):
        parse_config(cfg, base_dir=tmp_path)
    (tmp_path / "missing.txt").write_text("short\n")
    with pytest.raises(ConfigError, match="at least 16 characters"):
        parse_config(cfg, base_dir=tmp_path)


def test_vigil_web_user_writes_a_hashed_password(tmp_path):
    import subprocess
    import sys

    users = tmp_path / "users"
    vigil = [sys.executable, "-m", "streamer.cli"]
    done = subprocess.run([*vigil, "web", "user", "--users-file", str(users), "ana"],
                          input="a long password\n", capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert verify_password("a long password", read_users(users)["ana"])
    short = subprocess.run([*vigil, "web", "user", "--users-file", str(users), "bo"],
                           input="short\n", capture_output=True, text=True, timeout=120)
    assert short.returncode == 1 and "at least 10" in short.stderr
    assert set(read_users(users)) == {"ana"}


def test_a_taken_port_is_a_config_error_naming_web_port(data_dir):
    first = WebServer(WebConfig(enabled=True, port=0), data_dir).start()
    try:
        with pytest.raises(ConfigError, match="web.port: cannot serve the review page"):
            WebServer(WebConfig(enabled=True, port=first.port), data_dir).start()
    finally:
        first.stop()


def test_missed_on_a_camera_keeps_its_last_seconds_as_a_clip(data_dir):
    frames = np.random.default_rng(1).integers(0, 255, (40, 72, 96, 3), dtype=np.uint8)
    live = LiveView(cameras=lambda: [{"name": "lobby", "url": "x", "up": True, "fps": 10.0}],
                    model=lambda: {"classes": ["fight", "collapse"]},
                    recent=lambda name: (frames, 10.0) if name == "lobby" else None)
    srv = WebServer(WebConfig(enabled=True, port=0), data_dir, live).start()
    try:
        c = Client(srv.url)
        token = c.csrf("/")
        status, _, headers = c.request("/cameras/lobby/missed", {"csrf": token,
                                                                 "label": "collapse"})
        msg = urllib.parse.parse_qs(urllib.parse.urlsplit(headers["Location"]).query)["msg"][0]
        assert status == 303 and "last 4.0 s of lobby kept as missed collapse" in msg
        status, _, headers = c.request("/cameras/gone/missed", {"csrf": token, "label": "fight"})
        assert "no recent frames" in urllib.parse.unquote_plus(headers["Location"])
    finally:
        srv.stop()
    review = data_dir / "review"
    row = (review / "labels.csv").read_text().splitlines()[1]
    assert re.fullmatch(r"clips/lobby-\d{8}T\d{6}Z-missed\.mp4,collapse,0\.00,4\.00,lobby", row)
    records, problems = inspect_dataset(review)
    assert problems == [] and len(records) == 1 and records[0].frames == 40


def test_serve_check_names_the_review_page(tiny_checkpoint, tmp_path):
    import subprocess
    import sys

    import yaml

    config = tmp_path / "vigil.yaml"
    config.write_text(yaml.safe_dump({
        "data_dir": str(tmp_path / "data"), "model": {"checkpoint": str(tiny_checkpoint),
                                                      "pose": None},
        "cameras": [{"name": "a", "url": "synth://fight"}],
        "web": {"enabled": True, "port": 8123}}))
    done = subprocess.run([sys.executable, "-m", "streamer.cli", "serve", "--config", str(config),
                           "--check"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "review page: http://127.0.0.1:8123/ (login: none, loopback only)" in done.stdout
