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

from streamer.masking import (CREDENTIAL_KEYS, SAFE_QUERY_KEYS, SecretLogFilter, mask_secrets,
                              mask_url, url_secrets)

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
           lambda k: k not in SAFE_QUERY_KEYS        # those show short plain values by design
           # `_` before a known key starts a parameter (XMEye paths): `__key=` masks more
           and not any(f"_{c}" in k for c in CREDENTIAL_KEYS + tuple(SAFE_QUERY_KEYS))))
@example(password="ZqSecret", key="loginpas")
def test_query_values_are_masked_whatever_their_key(password, key):
    url = f"http://192.0.2.7/video.cgi?{key}={password}&res=hd"
    assert password not in mask_url(url)
    assert password not in mask_url(f"http://192.0.2.7/video.cgi?_{key}={password}&res=hd")
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


# ----------------------------------------------------------------------------- credentials anywhere
# Cameras of the XMEye/Xiongmai family (and others) take credentials as parameters in the PATH,
# `rtsp://host:554/user=admin&password=SECRET&channel=1&stream=0.sdp`, joined by `&`, `;` or
# `_`, in any case, sometimes %-encoded. Every such value is masked wherever the URL is printed;
# the stream selectors stay readable.
@pytest.mark.parametrize("url, masked", [
    ("rtsp://10.0.0.9:554/user=admin&password=SECRET1&channel=1&stream=0.sdp",
     "rtsp://10.0.0.9:554/user=*&password=*&channel=1&stream=0.sdp"),
    ("rtsp://10.0.0.9:554/user=admin_password=tlJwpbo6_channel=1_stream=0.sdp?real_stream",
     "rtsp://10.0.0.9:554/user=*_password=*_channel=1_stream=0.sdp?*"),
    ("rtsp://10.0.0.9/USER=admin;PWD=SECRET1;Channel=2;subtype=1",
     "rtsp://10.0.0.9/USER=*;PWD=*;Channel=2;subtype=1"),
    ("rtsp://10.0.0.9/user%3Dadmin%26password%3DSECRET1%26channel%3D1",
     "rtsp://10.0.0.9/user%3D*%26password%3D*%26channel%3D1"),
    ("rtsp://10.0.0.9/live/pass%77ord=SECRET1&channel=1", "rtsp://10.0.0.9/live/pass%77ord=*&channel=1"),
    ("rtsp://10.0.0.9/user=admin&password=SEC&RET1&channel=1",      # '&' inside the password
     "rtsp://10.0.0.9/user=*&password=*&*&channel=1"),
    ("rtsp://10.0.0.9/cam/access_token=SECRET1_stream=1", "rtsp://10.0.0.9/cam/access_token=*_stream=1"),
    ("rtsp://10.0.0.9/h264/ch1/main/av_stream", "rtsp://10.0.0.9/h264/ch1/main/av_stream"),
    ("rtsp://admin:x@10.0.0.9/user=admin&password=SECRET1", "rtsp://*:*@10.0.0.9/user=*&password=*"),
])
def test_credentials_in_the_path_are_masked_and_selectors_kept(url, masked):
    assert mask_url(url) == masked
    assert "SECRET1" not in mask_secrets(f"camera door: cannot open {url}: 401")


KEY_NAMES = st.sampled_from(["user", "password", "pass", "pwd", "passwd", "token", "key", "auth",
                             "secret", "username", "pw", "loginpas", "apikey", "access_token",
                             "login", "session", "sig", "mysecret", "code"])
SEPARATORS = st.sampled_from(["&", ";", "%26", "%3B", "%3b", "_"])
EQUALS = st.sampled_from(["=", "=", "%3D", "%3d"])
SECRETS = st.builds(lambda s: "Zq" + s, st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FF,
                           blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"),
                           blacklist_characters="/?#@%"), min_size=1, max_size=12))


def _case(key: str, flips: list[bool]) -> str:
    return "".join(c.upper() if f else c for c, f in zip(key, flips + [False] * len(key)))


def _encode_one(key: str, at: int) -> str:
    """The key with one letter %-encoded (`pass%77ord`), as some clients write it."""
    at %= len(key)
    return key[:at] + "%%%02X" % ord(key[at]) + key[at + 1:]


@FAST
@given(secret=SECRETS, key=KEY_NAMES, flips=st.lists(st.booleans(), max_size=12),
       encode_at=st.none() | st.integers(0, 20), sep=SEPARATORS, eq=EQUALS,
       in_path=st.booleans(), channel=st.integers(0, 64), stream=st.integers(0, 3),
       first=st.booleans())
@example(secret="ZqSECRET", key="password", flips=[], encode_at=None, sep="&", eq="=",
         in_path=True, channel=1, stream=0, first=False)
def test_a_credential_parameter_is_masked_wherever_and_however_it_is_written(
        secret, key, flips, encode_at, sep, eq, in_path, channel, stream, first):
    written = _case(key, flips) if encode_at is None else _encode_one(_case(key, flips), encode_at)
    if sep == "_" and (encode_at is not None or key.lower() not in (
            "user", "password", "pass", "pwd", "passwd", "token", "key", "auth", "secret",
            "username", "pw", "loginpas", "apikey", "access_token", "login", "session", "sig")):
        sep = "&"            # `_` joins parameters only before a key it knows
    secret_part = f"{written}{eq}{secret}"
    selectors = [f"channel={channel}", f"stream={stream}.sdp"]
    params = [secret_part, *selectors] if first else [selectors[0], secret_part, selectors[1]]
    joined = sep.join(params)
    url = (f"rtsp://192.0.2.7:554/{joined}" if in_path
           else f"rtsp://192.0.2.7:554/live/main?{joined}")
    masked = mask_url(url)
    assert secret not in masked, masked
    assert urllib.parse.unquote(secret) not in masked or len(urllib.parse.unquote(secret)) < 3
    assert masked.startswith("rtsp://192.0.2.7:554/")
    for selector in selectors:            # the stream selectors stay readable
        assert selector in masked, masked
    # In a log line, quoted, and as the config's literal secrets see it.
    for text in (f"camera door: cannot open {url}: 401 Unauthorized", f"open '{url}' failed",
                 f'{{"url": "{url}"}}'):
        assert secret not in mask_secrets(text), text
    if not any(c in secret for c in "&;_="):      # one value, not pieces split by a separator
        assert secret in url_secrets(url) or urllib.parse.unquote(secret) in url_secrets(url)


@FAST
@given(secret=SECRETS.filter(lambda s: not any(c in s for c in "&;'\"_")),
       key=st.sampled_from(["password", "pass", "pwd", "passwd", "user", "token", "auth",
                            "secret", "key"]),
       flips=st.lists(st.booleans(), max_size=8), eq=EQUALS,
       lead=st.sampled_from(["", "/", "?", "&", ";", " ", "'"]))
def test_a_credential_parameter_outside_a_url_is_masked_too(secret, key, flips, eq, lead):
    """A library quoting only the path or the query of a camera URL (no `scheme://`)."""
    text = f"cannot open{lead if lead.strip() else ' '}{_case(key, flips)}{eq}{secret}&channel=1"
    masked = mask_secrets(text)
    assert secret not in masked, masked
    assert "channel=1" in masked
