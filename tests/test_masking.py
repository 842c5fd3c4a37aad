"""Credential masking (`streamer/masking.py`): passwords with any character, malformed URLs,
query parameters whose key is on no list, `${VAR}` values, the log filter.

The daemon-level checks (the real `vigil serve` and `--check`) are in `tests/test_security.py`.
"""
from __future__ import annotations

import io
import logging
import urllib.parse

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from streamer.masking import (SAFE_QUERY_KEYS, SecretLogFilter, mask_secrets, mask_url,
                              url_secrets)

FAST = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("url, masked", [
    # The field reports: the tail of a password with '/', '#', '@' or ':' was printed.
    ("rtsp://admin:Pw/slash-x@10.0.0.5/Streaming/101", "rtsp://*:*@10.0.0.5/Streaming/101"),
    ("rtsp://admin:Pw#hash@10.0.0.5:554/s", "rtsp://*:*@10.0.0.5:554/s"),
    ("rtsp://admin:P@ss@w0rd@10.0.0.5/s", "rtsp://*:*@10.0.0.5/s"),
    ("rtsp://admin:a:b:c@10.0.0.5/s", "rtsp://*:*@10.0.0.5/s"),
    ("rtsp://admin:a?b=c@10.0.0.5/s", "rtsp://*:*@10.0.0.5/s"),
    # Query values whose key is on no fixed list.
    ("http://cam/video.cgi?pw=Secret1", "http://cam/video.cgi?pw=*"),
    ("http://cam/video.cgi?loginuse=admin&loginpas=Secret1&res=hd",
     "http://cam/video.cgi?loginuse=*&loginpas=*&res=hd"),
    ("rtsp://cam/live?channel=1&subtype=0&t=Secret1", "rtsp://cam/live?channel=1&subtype=0&t=*"),
    ("rtsp://cam/live?channel=Secret-with-a-long-value-x", "rtsp://cam/live?channel=*"),
    ("http://cam/x?Secret1", "http://cam/x?*"),
    # Cut short inside the password, or no host at all.
    ("rtsp://admin:Secret1", "rtsp://***"),
    ("rtsp://admin:hun...", "rtsp://***..."),
    ("rtsp://admin:Secret1@", "rtsp://*:*@"),
    # Nothing to hide.
    ("rtsp://10.0.0.5:554/stream1", "rtsp://10.0.0.5:554/stream1"),
    ("rtsp://[fe80::1]:554/s", "rtsp://[fe80::1]:554/s"),
    ("synth://fight?seed=3&width=96&height=72", "synth://fight?seed=3&width=96&height=72"),
    ("/videos/lobby.mp4", "/videos/lobby.mp4"),
])
def test_mask_url_field_cases(url, masked):
    assert mask_url(url) == masked


def test_a_password_with_a_space_is_masked_up_to_its_at_sign():
    message = "camera door: cannot open stream rtsp://admin:my pass@10.0.0.5/s: refused"
    assert mask_secrets(message) == ("camera door: cannot open stream rtsp://*:*@10.0.0.5/s: "
                                     "refused")


def test_known_secrets_are_masked_as_literals_anywhere():
    secrets = url_secrets("rtsp://admin:Secret/1@10.0.0.5/s?token=T0k3n")
    assert {"Secret/1", "T0k3n", "admin"} <= secrets
    text = "ffmpeg: auth 'Secret/1' refused; token T0k3n; %s" % urllib.parse.quote("Secret/1")
    out = mask_secrets(text, url_secrets("rtsp://admin:Secret%2F1@h/s?token=T0k3n"))
    assert "Secret" not in out and "T0k3n" not in out


# Any visible character, '#', '/', '@', ':', '?', '&', '%' and quotes included; the fixed
# prefix keeps the password distinctive (a 1-character password is also a substring of the host).
# Whitespace inside a URL is covered with known secrets (the last test).
ANY_PASSWORD = st.builds(lambda s: "Zq" + s, st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FF,
                           blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp")),
    min_size=1, max_size=16))
TAILS = st.sampled_from(["", "/Streaming/Channels/101", ":554/s", ":554/s?channel=1",
                         "/live?subtype=0&x=1", "/a/b.sdp"])


@FAST
@given(password=ANY_PASSWORD, user=st.sampled_from(["admin", "", "u.s-e_r"]), tail=TAILS)
@example(password="ZqPw/slash-x", user="admin", tail="/s")
@example(password="Zq#@:/?", user="admin", tail="")
def test_masked_userinfo_never_shows_any_part_of_the_password(password, user, tail):
    url = f"rtsp://{user}:{password}@192.0.2.7{tail}"
    assert mask_url(url) == "rtsp://*:*@192.0.2.7" + mask_url("rtsp://192.0.2.7" + tail)[16:]
    for text in (f"camera lobby: cannot open stream {url}: timeout", f"cannot open '{url}'",
                 f'{{"url": "{url}"}}', f"[{url!r}]"):
        assert password not in mask_secrets(text)


@FAST
@given(password=ANY_PASSWORD.filter(lambda p: not any(c in p for c in "&;")),
       key=st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=10).filter(
           lambda k: k not in SAFE_QUERY_KEYS))      # those show short plain values by design
@example(password="ZqSecret", key="loginpas")
def test_query_values_are_masked_whatever_their_key(password, key):
    url = f"http://192.0.2.7/video.cgi?{key}={password}&res=hd"
    assert password not in mask_url(url)
    if "@" not in password:     # with one, the host is masked too (as if it were userinfo)
        assert mask_url(url) == f"http://192.0.2.7/video.cgi?{key}=*&res=hd"


@FAST
@given(password=st.builds(lambda s: "Zq" + s, st.text(min_size=1, max_size=16)))
def test_known_secrets_never_survive_whatever_they_contain(password):
    """With the config's secrets (as `${VAR}` values are), even whitespace, newlines and '&'
    inside the password, in the URL or quoted alone, are masked."""
    url = f"rtsp://admin:{password}@192.0.2.7/s"
    secrets = url_secrets(url) | {password}
    for text in (url, f"cannot open {url}: refused", f"password {password!r} refused",
                 f"http://cam/x?pw={password}"):
        assert password not in mask_secrets(text, secrets)


def test_the_log_filter_masks_messages_arguments_and_tracebacks():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(SecretLogFilter({"Env$ecret value"}))
    logger = logging.getLogger("test_masking.filter")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("open %s failed", "rtsp://admin:Pw/slash-x@10.0.0.5/s")
        logger.warning("value Env$ecret value refused")
        try:
            raise OSError("cannot open rtsp://a:Tb/xx@h/s")
        except OSError:
            logger.exception("boom")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert "slash-x" not in out and "Env$ecret" not in out and "Tb/xx" not in out
    assert "rtsp://*:*@10.0.0.5/s" in out
