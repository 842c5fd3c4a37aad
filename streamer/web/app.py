"""The review page's routes: server-rendered HTML, forms that work without JavaScript.

Built on bottle (one file, no dependencies, WSGI; its SimpleTemplate escapes every `{{value}}`
it prints). Pages:

    GET  /                          cameras: up or down, fps, open events, a recent frame
    GET  /cameras/<name>/frame.jpg  the camera's newest frame (from the daemon's memory)
    GET  /events                    the event list, newest first, filtered, paged by seq
    GET  /events/<id>               snapshot, clip, score over time, the event's alerts, marks
    GET  /events/<id>/clip.webm     the clip as a browser plays it (`media.ClipCache`)
    GET  /evidence/<path>           evidence files under data_dir (`paths.evidence_path`)
    POST /events/<id>/mark          verdict=real|false_alarm (CSRF token required)
    POST /events/<id>/missed        label, start_s, end_s of the clip (CSRF token required)
    POST /cameras/<name>/missed     label: the camera's last seconds should have raised one
    GET|POST /login, POST /logout   when a token or a users file is configured

Every response passes `guard`: the Host header must name a loopback host when no login is
configured (a DNS-rebinding page cannot reach it), a login is required when one is, and POSTs
need the CSRF token. Oversized POSTs are refused before bottle reads them (`server.py`).
"""
from __future__ import annotations

import datetime as dt
import functools
import logging
import secrets
import time
import urllib.parse
from pathlib import Path
from typing import Any, Callable, Optional

import bottle
import cv2

from ..protocol import parse_iso_utc
from .auth import Authenticator
from .live import LiveView
from .media import ClipCache, clip_info
from .paths import PathRefused, evidence_path, existing_evidence
from .review import MarkRefused, ReviewDataset
from .settings import is_loopback
from .store import EventFilter, JournalView

log = logging.getLogger(__name__)

VIEWS = Path(__file__).with_name("views")
CSRF_COOKIE = "vigil_csrf"
SESSION_COOKIE = "vigil_session"
# A failed login waits this long: a password guesser gets a few tries a second, not thousands.
LOGIN_FAIL_DELAY_S = 0.5


class ReviewApp:
    """The WSGI application of the review page for one data_dir.

    Args:
        data_dir: the daemon's data_dir (journal, evidence, review dataset).
        auth: who may log in (`Authenticator()` without token and users: nobody needs to).
        live: the daemon's cameras and model (`LiveView()`: none).
        page_size: events per page.
    """

    def __init__(self, data_dir: Path, auth: Optional[Authenticator] = None,
                 live: Optional[LiveView] = None, page_size: int = 50) -> None:
        self.data_dir = Path(data_dir)
        self.auth = auth or Authenticator()
        self.live = live or LiveView()
        self.page_size = int(page_size)
        self.journal = JournalView(self.data_dir / "journal.sqlite3")
        self.clips = ClipCache(self.data_dir)
        self.app = bottle.Bottle()
        self._templates: dict[str, bottle.SimpleTemplate] = {}
        self._routes()

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        return self.app(environ, start_response)

    # ---- plumbing -------------------------------------------------------------------------
    def _routes(self) -> None:
        app, page = self.app, self._guarded
        app.route("/", "GET", page(self.cameras))
        app.route("/cameras/<name>/frame.jpg", "GET", page(self.frame))
        app.route("/events", "GET", page(self.events))
        app.route("/events/<event_id>", "GET", page(self.event))
        app.route("/events/<event_id>/clip.webm", "GET", page(self.clip))
        app.route("/evidence/<rel:path>", "GET", page(self.evidence))
        app.route("/events/<event_id>/mark", "POST", page(self.mark, post=True))
        app.route("/events/<event_id>/missed", "POST", page(self.missed, post=True))
        app.route("/cameras/<name>/missed", "POST", page(self.missed_live, post=True))
        app.route("/login", "GET", page(self.login_form, login=False))
        app.route("/login", "POST", page(self.login, post=True, login=False))
        app.route("/logout", "POST", page(self.logout, post=True))
        app.error(404)(lambda err: self._error_page("Not found", str(err.body)))
        app.error(405)(lambda err: self._error_page("Method not allowed", str(err.body)))

    def _guarded(self, fn: Callable, post: bool = False, login: bool = True) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            req, resp = bottle.request, bottle.response
            resp.set_header("X-Frame-Options", "DENY")
            resp.set_header("X-Content-Type-Options", "nosniff")
            resp.set_header("Referrer-Policy", "same-origin")
            resp.set_header("Content-Security-Policy",
                            "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                            "frame-ancestors 'none'; form-action 'self'")
            if not self.auth.required:
                host = urllib.parse.urlsplit("//" + (req.get_header("Host") or "")).hostname
                if host is None or not is_loopback(host):
                    return self._error_page("Forbidden", "This page answers only on loopback "
                                            "(no login is configured).", 403)
            user = self._user()
            if login and self.auth.required and user is None:
                if req.method == "GET":
                    nxt = urllib.parse.quote(req.fullpath + ("?" + req.query_string
                                                             if req.query_string else ""))
                    return bottle.redirect(f"/login?next={nxt}", 303)
                return self._error_page("Log in first", "Your session ended; log in again.",
                                        401)
            if post and not self.auth.csrf_ok(req.get_cookie(CSRF_COOKIE),
                                              req.forms.getunicode("csrf")):
                return self._error_page("Refused", "The form's security token did not match "
                                        "(an old page or another site's form): reload the page "
                                        "and try again.", 403)
            return fn(*args, **kwargs)
        return wrapper

    def _user(self) -> Optional[str]:
        req = bottle.request
        return (self.auth.session_user(req.get_cookie(SESSION_COOKIE))
                or self.auth.bearer(req.get_header("Authorization") or ""))

    def _secure(self) -> bool:
        req = bottle.request
        return (req.urlparts.scheme == "https"
                or (req.get_header("X-Forwarded-Proto") or "").lower() == "https")

    def _csrf(self) -> str:
        """The form token, setting the CSRF cookie on first use."""
        cookie = bottle.request.get_cookie(CSRF_COOKIE)
        if not cookie or len(cookie) < 16:
            cookie = secrets.token_urlsafe(24)
            bottle.response.set_cookie(CSRF_COOKIE, cookie, path="/", httponly=True,
                                       samesite="strict", secure=self._secure())
        return self.auth.csrf_token(cookie)

    def _render(self, name: str, **values: Any) -> str:
        tpl = self._templates.get(name)
        if tpl is None:
            tpl = self._templates[name] = bottle.SimpleTemplate(name=name, lookup=[str(VIEWS)])
        values.setdefault("msg", bottle.request.query.getunicode("msg") or "")
        values.setdefault("model", self.live.model() or {})
        values.setdefault("user", self._user() if self.auth.required else None)
        return tpl.render(**values)

    def _error_page(self, heading: str, text: str, status: int = 404) -> str:
        """An error page; it names neither the model nor the user (it may answer a stranger)."""
        bottle.response.status = status
        return self._render("error.tpl", heading=heading, text=text, msg="", model={},
                            user=None)

    # ---- pages ----------------------------------------------------------------------------
    def cameras(self) -> str:
        return self._render("cameras.tpl", cameras=self.live.cameras(),
                            open_events=self.journal.open_events(), classes=self._classes(),
                            csrf=self._csrf())

    def frame(self, name: str) -> Any:
        image = self.live.frame(name)
        if image is None:
            return self._error_page("No frame", f"camera {name!r} has no recent frame")
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, 80])
        bottle.response.content_type = "image/jpeg"
        bottle.response.set_header("Cache-Control", "no-store")
        return buf.tobytes()

    def events(self) -> str:
        q = bottle.request.query
        flt = EventFilter(camera=q.getunicode("camera") or None,
                          label=q.getunicode("label") or None,
                          since=_parse_local(q.getunicode("since")),
                          until=_parse_local(q.getunicode("until")),
                          state=q.getunicode("state") or None)
        before = _int_or_none(q.getunicode("before"))
        review = ReviewDataset(self.data_dir)
        started = time.perf_counter()
        rows, next_before = self.journal.events(flt, before, self.page_size, review.verdicts())
        log.debug("web: event page in %.1f ms", (time.perf_counter() - started) * 1000)
        params = {k: v for k, v in (("camera", flt.camera), ("label", flt.label),
                                     ("state", flt.state), ("since", q.getunicode("since")),
                                     ("until", q.getunicode("until"))) if v}
        older = (f"/events?{urllib.parse.urlencode({**params, 'before': next_before})}"
                 if next_before is not None else None)
        newer = f"/events?{urllib.parse.urlencode(params)}" if before is not None else None
        cameras = sorted({c["name"] for c in self.live.cameras()} | set(self.journal.cameras()))
        labels = sorted(set(self.live.model().get("classes") or []) | set(self.journal.labels()))
        return self._render("events.tpl", rows=rows, flt=flt, older=older, newer=newer,
                            camera_choices=cameras, label_choices=labels,
                            since=q.getunicode("since") or "", until=q.getunicode("until") or "")

    def event(self, event_id: str) -> str:
        detail = self.journal.event(event_id)
        if detail is None:
            return self._error_page("No such event", f"The journal holds no event {event_id!r} "
                                    "(never there, or pruned by journal retention).")
        start, end = detail.start or detail.first, detail.end
        _, snap_missing = existing_evidence(self.data_dir, start.get("snapshot"))
        clip_path, clip_missing = (existing_evidence(self.data_dir, end.get("clip")) if end
                                   else (None, "written when the event ends"))
        info = clip_info(clip_path) if clip_path is not None else None
        review = ReviewDataset(self.data_dir)
        verdicts = review.verdicts()
        return self._render(
            "event.tpl", event=detail, first=detail.first, start=start, end=end,
            snapshot_missing=snap_missing, clip_missing=clip_missing,
            duration=info.duration_s if info else None, chart=score_chart(detail.scores()),
            verdict=verdicts.get(event_id), marks=[_MarkRow(m) for m in review.marks(event_id)],
            classes=self._classes(), csrf=self._csrf(),
            camera_known=self._camera_known(str(detail.first.get("camera"))))

    def clip(self, event_id: str) -> Any:
        detail = self.journal.event(event_id)
        end = detail.end if detail is not None else None
        path, why = existing_evidence(self.data_dir, end.get("clip") if end else None)
        if path is None:
            return self._error_page("No clip", f"Clip of {event_id}: {why}.")
        try:
            webm = self.clips.webm(event_id, path)
        except OSError as exc:
            log.warning("web: cannot make a playable copy of %s: %s", path, exc)
            return self._error_page("No clip", f"The clip cannot be decoded: {exc}", 500)
        return bottle.static_file(webm.name, root=str(webm.parent), mimetype="video/webm")

    def evidence(self, rel: str) -> Any:
        try:
            path = evidence_path(self.data_dir, rel)
        except PathRefused as exc:
            return self._error_page("Refused", f"{exc}.", 403)
        if not path.is_file():
            return self._error_page("Missing", "The evidence file is missing (deleted by "
                                    "retention or by hand).")
        return bottle.static_file(path.name, root=str(path.parent))

    # ---- marks ----------------------------------------------------------------------------
    def mark(self, event_id: str) -> Any:
        return self._mark(event_id, lambda review, detail, by, cams: review.mark(
            detail, bottle.request.forms.getunicode("verdict") or "", by, cams))

    def missed(self, event_id: str) -> Any:
        forms = bottle.request.forms

        def record(review: ReviewDataset, detail: Any, by: str, cams: set[str]) -> Any:
            start, end = _float(forms.getunicode("start_s")), _float(forms.getunicode("end_s"))
            if start is None or end is None:
                raise MarkRefused("give the range's start and end in seconds of the clip")
            return review.missed(detail, forms.getunicode("label") or "", start, end, by, cams)
        return self._mark(event_id, record)

    def missed_live(self, name: str) -> Any:
        review = ReviewDataset(self.data_dir, tuple(self._classes()))
        names = self._camera_names()
        recent = self.live.recent(name) if names is not None and name in names else None
        try:
            if recent is None:
                raise MarkRefused(f"camera {name!r} has no recent frames (it is not running, or "
                                  "evidence clips are off so no display ring is kept)")
            msg = review.missed_live(name, bottle.request.forms.getunicode("label") or "",
                                     recent[0], recent[1], self._user() or "local").message
        except MarkRefused as exc:
            msg = f"Not recorded: {exc}"
        return bottle.redirect(f"/?{urllib.parse.urlencode({'msg': msg})}", 303)

    def _mark(self, event_id: str, record: Callable) -> Any:
        detail = self.journal.event(event_id)
        if detail is None:
            return self._error_page("No such event", f"The journal holds no event {event_id!r}.")
        review = ReviewDataset(self.data_dir, tuple(self._classes()))
        try:
            result = record(review, detail, self._user() or "local", self._camera_names())
            msg = result.message
        except MarkRefused as exc:
            msg = f"Not recorded: {exc}"
        target = f"/events/{urllib.parse.quote(event_id)}?{urllib.parse.urlencode({'msg': msg})}"
        return bottle.redirect(target, 303)

    def _classes(self) -> list[str]:
        return list(self.live.model().get("classes") or ["fight", "collapse"])

    def _camera_names(self) -> Optional[set[str]]:
        cams = self.live.cameras()
        return {c["name"] for c in cams} if cams else None

    def _camera_known(self, name: str) -> bool:
        names = self._camera_names()
        return names is None or name in names

    # ---- login ----------------------------------------------------------------------------
    def login_form(self) -> str:
        nxt = bottle.request.query.getunicode("next") or "/"
        return self._render("login.tpl", csrf=self._csrf(), next=nxt,
                            users=bool(self.auth.users), token=self.auth.token is not None)

    def login(self) -> Any:
        forms = bottle.request.forms
        user = self.auth.login(forms.getunicode("user") or "", forms.getunicode("secret") or "")
        if user is None:
            time.sleep(LOGIN_FAIL_DELAY_S)
            log.warning("web: failed login from %s", bottle.request.remote_addr)
            bottle.response.status = 401
            return self._render("login.tpl", csrf=self._csrf(), msg="Wrong user or password.",
                                next=forms.getunicode("next") or "/",
                                users=bool(self.auth.users), token=self.auth.token is not None)
        bottle.response.set_cookie(SESSION_COOKIE, self.auth.session_cookie(user), path="/",
                                   httponly=True, samesite="strict", secure=self._secure())
        nxt = forms.getunicode("next") or "/"
        if not nxt.startswith("/") or nxt.startswith("//"):
            nxt = "/"                      # never redirect off the site
        return bottle.redirect(nxt, 303)

    def logout(self) -> Any:
        bottle.response.delete_cookie(SESSION_COOKIE, path="/")
        return bottle.redirect("/login", 303)


class _MarkRow:
    """A mark as the event page lists it."""

    def __init__(self, m: Any) -> None:
        self.when = dt.datetime.fromtimestamp(m.at, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        self.by = m.by
        self.clip = m.clip
        self.what = (f"missed {m.label} {m.start_s:g}-{m.end_s:g} s" if m.kind == "missed"
                     else str(m.verdict).replace("_", " "))


def score_chart(points: list[tuple[float, float]], width: int = 640, height: int = 160) -> str:
    """An inline SVG line of (seconds, score) points (no script, no library)."""
    if not points:
        return '<p class="muted">No scores.</p>'
    span = max(points[-1][0], 1e-6)
    pad = 24
    coords = " ".join(f"{pad + (t / span) * (width - 2 * pad):.1f},"
                      f"{height - pad - max(min(s, 1.0), 0.0) * (height - 2 * pad):.1f}"
                      for t, s in points)
    return (f'<svg id="scores" width="{width}" height="{height}" role="img" '
            f'aria-label="score over time" style="background:#fff;border:1px solid #ddd">'
            f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" '
            f'stroke="#999"/><line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" '
            f'stroke="#999"/><text x="2" y="{pad + 4}" font-size="11">1</text>'
            f'<text x="2" y="{height - pad + 4}" font-size="11">0</text>'
            f'<text x="{width - pad - 40}" y="{height - 6}" font-size="11">{span:.1f} s</text>'
            f'<polyline fill="none" stroke="#b3261e" stroke-width="2" points="{coords}"/>'
            + "".join(f'<circle cx="{c.split(",")[0]}" cy="{c.split(",")[1]}" r="3" '
                      f'fill="#b3261e"/>' for c in coords.split())
            + "</svg>")


def _parse_local(value: Optional[str]) -> Optional[float]:
    """A `datetime-local` field (read as UTC) or an ISO time -> epoch seconds; None if empty/bad."""
    if not value:
        return None
    try:
        return parse_iso_utc(value if value.endswith("Z") else value + "Z")
    except ValueError:
        try:
            return dt.datetime.fromisoformat(value).replace(tzinfo=dt.timezone.utc).timestamp()
        except ValueError:
            return None


def _int_or_none(value: Optional[str]) -> Optional[int]:
    try:
        return int(value) if value else None
    except ValueError:
        return None


def _float(value: Optional[str]) -> Optional[float]:
    try:
        out = float(value) if value not in (None, "") else None
    except ValueError:
        return None
    return out if out is not None and out == out and abs(out) < 1e7 else None
