"""Fuzzing every parser that reads user input: it refuses bad input with the project's own error.

Each property feeds a parser random (or randomly damaged valid) input and requires one of two
outcomes: it parses, or it raises `detector.errors.VigilError` (a subclass) with a non-empty
message. Any other exception (KeyError, TypeError, IndexError, ...) is a crash the user would see
as a stack trace, and fails the test. Parsers covered:

* the daemon config: `streamer.config.parse_config` on random YAML trees and on mutations of a
  valid config, `load_config` on random text; camera URLs (`streamer.sources.parse_source`);
* the training config: `train.config.load_train_config` on random text and `--set` overrides;
* label files: `train.labels.parse_label_file` on random text and bytes;
* `action_challenge.csv`: `train.dataset.scan_dataset` on a folder holding random CSV text;
* alert messages read by `vigil alerts`: `streamer.protocol.parse_alert`/`parse_heartbeat`
  on random frames and on mutations of a valid alert.

`max_examples` is bounded so the file runs in well under 30 s on two cores.
"""
from __future__ import annotations

import copy
import datetime
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from detector.errors import VigilError

# `VIGIL_FUZZ_EXAMPLES=2000` fuzzes longer (and at random rather than with a fixed seed).
_LONG = int(os.environ.get("VIGIL_FUZZ_EXAMPLES", "0"))
FAST = settings(max_examples=_LONG or 60, deadline=None, derandomize=not _LONG,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FEW = settings(max_examples=_LONG // 4 or 25, deadline=None, derandomize=not _LONG,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def refuses_cleanly(parse: Callable[[], Any]) -> Any:
    """Run `parse`; a VigilError with a message is fine, any other exception fails the test."""
    try:
        return parse()
    except VigilError as exc:
        assert str(exc).strip(), f"{type(exc).__name__} raised with an empty message"
        return None


# ----------------------------------------------------------------------------- strategies
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12), st.integers(),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.dates(), st.binary(max_size=8),
    st.sampled_from(["", "0", "-1", "1e3", "auto", "cpu", "cuda:7", "${UNSET_VAR}", "${HOME}",
                     "rtsp://u:p@h/x", "synth://fight", "/dev/video99", ".nan", "~"]))
KEYS = st.one_of(
    st.sampled_from(["data_dir", "model", "cameras", "defaults", "smoothing", "alerts",
                     "evidence", "metrics", "logging", "checkpoint", "name", "url", "enabled",
                     "stride", "roi", "fps", "curve", "port", "host", "format", "level",
                     "method", "k", "n", "max_batch", "device", "precision", "backbone",
                     "input", "loss", "optim", "data", "augment", "train", "lr", "epochs"]),
    st.text(max_size=10), st.integers(-3, 3), st.booleans(), st.none())
TREES = st.recursive(
    SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(KEYS, children, max_size=5)),
    max_leaves=25)


def _valid_serve_config() -> dict:
    return {
        "data_dir": "data",
        "defaults": {"stride": 8, "open_timeout_s": 2, "read_timeout_s": 1, "stall_timeout_s": 3},
        "cameras": [{"name": "lobby", "url": "rtsp://admin:Pw-fuzz@127.0.0.1:9/x", "stride": 4,
                     "roi": [0.0, 0.1, 1.0, 1.0]},
                    {"name": "desk", "url": "synth://fight?seed=1&fps=15"}],
        "model": {"checkpoint": "best.pt", "device": "cpu", "max_batch": 4},
        "smoothing": {"method": "ema", "on_threshold": 0.6, "off_threshold": 0.4},
        "alerts": {"endpoint": "tcp://127.0.0.1:5557", "replay_endpoint": "tcp://127.0.0.1:5558",
                   "curve": {"server_secret_key": "k/server.key_secret",
                             "authorized_clients": "k/authorized_clients"}},
        "evidence": {"enabled": True, "pre_roll_s": 2.0},
        "metrics": {"host": "127.0.0.1", "port": 9108},
        "logging": {"format": "json", "level": "info"},
    }


def _paths(tree: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys/indices) into a YAML tree, the root included."""
    out = [prefix]
    if isinstance(tree, dict):
        for k, v in tree.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out += _paths(v, prefix + (i,))
    return out


@st.composite
def mutated(draw, base: dict, n_max: int = 3) -> dict:
    """`base` with 1..n_max random edits: a value replaced, a key deleted or a key added."""
    tree = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, n_max))):
        paths = _paths(tree)
        path = draw(st.sampled_from(paths[1:] or paths))
        parent = tree
        for step in path[:-1]:
            parent = parent[step]
        if not path:
            break
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(TREES)
        elif action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == "delete" and isinstance(parent, list):
            parent.pop(path[-1])
        elif isinstance(parent, dict):
            parent[draw(KEYS)] = draw(TREES)
        else:
            parent.append(draw(TREES))
    return tree


@pytest.fixture(scope="module")
def workdir():
    path = Path(tempfile.mkdtemp(prefix="vigil-fuzz-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


# ----------------------------------------------------------------------------- serve config
@FAST
@given(data=TREES)
def test_serve_config_random_trees_are_refused_with_a_config_error(data):
    from streamer.config import parse_config

    refuses_cleanly(lambda: parse_config(data if isinstance(data, dict) else {"x": data},
                                         "fuzz.yaml", environ={}, check_paths=False))


@FAST
@given(data=mutated(_valid_serve_config()))
def test_serve_config_mutations_of_a_valid_config_parse_or_name_the_problem(data):
    from streamer.config import parse_config

    for check_paths in (False, True):
        refuses_cleanly(lambda: parse_config(data, "fuzz.yaml", base_dir=Path("/nonexistent"),
                                             environ={"HOME": "/root"},
                                             check_paths=check_paths))


YAML_TEXT = st.one_of(
    st.text(max_size=200),
    st.lists(st.sampled_from([
        "data_dir: d", "model:", "  checkpoint: x.pt", "cameras:", "  - name: a",
        "    url: rtsp://u:Pw-x@h/s", "  - [1, 2", "defaults: {stride: '8'}", "- - -",
        "alerts: !!python/object/apply:os.system ['true']", "metrics: {port: 99999}",
        "&a [*a]", "key: *undefined", "\t- tab", "? [complex, key]\n: v", "x: !!binary Zm9v",
        "%YAML 9.9", "---", "...", "smoothing: {on_threshold: .nan}", "logging: {level: 3}",
        "\x00", "\ufeff", "cameras: 5", "model: []",
    ]), max_size=10).map("\n".join))


@FAST
@given(text=YAML_TEXT)
def test_load_config_on_random_text_refuses_with_a_config_error(workdir, text):
    from streamer.config import load_config

    path = workdir / "serve.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    refuses_cleanly(lambda: load_config(path, environ={}, check_paths=False))


@FAST
@given(raw=st.binary(max_size=120))
@example(raw=b"\x80")            # was a raw UnicodeDecodeError (fixed in detector/schema.py)
def test_load_config_on_random_bytes_refuses_with_a_config_error(workdir, raw):
    from streamer.config import load_config

    path = workdir / "serve-bytes.yaml"
    path.write_bytes(raw)
    refuses_cleanly(lambda: load_config(path, environ={}, check_paths=False))


URLS = st.one_of(
    st.text(max_size=60),
    st.builds(lambda scheme, rest: f"{scheme}{rest}",
              st.sampled_from(["rtsp://", "synth://", "synth:", "file://", "webcam:", "/dev/",
                               "http://", "ftp://", "synth://fight?", "synth://none?seed="]),
              st.text(max_size=40)),
    st.integers(-5, 10**6), st.booleans())


@FAST
@given(url=URLS)
@example(url="synth://[")        # urlsplit's "Invalid IPv6 URL" ValueError, found by this test
@example(url="file://[]")
def test_camera_urls_parse_or_are_refused_with_a_config_error(url):
    from streamer.sources import parse_source

    refuses_cleanly(lambda: parse_source(url))


# A password may use any character RFC 3986 allows unencoded in userinfo except the ones that
# end it (':' '@' '/' '?' '#'), plus %-escapes. The fixed prefix keeps it distinctive.
PASSWORDS = st.builds(lambda s: "Zq" + s,
                      st.text(alphabet="abcXYZ0189-._~!$&()*+,;=%", min_size=1, max_size=12))


@FAST
@given(password=PASSWORDS, user=st.sampled_from(["admin", "", "u.s-e_r"]),
       tail=st.sampled_from(["", "/Streaming/102", ":554/s?x=1", "/a b"]))
def test_masked_urls_never_contain_the_password(password, user, tail):
    from streamer.config import mask_secrets, mask_url

    url = f"rtsp://{user}:{password}@192.0.2.7{tail}"
    assert password not in mask_url(url)
    assert password not in mask_secrets(f"camera lobby: cannot open stream {url}: timeout")
    assert password not in mask_secrets(f"cannot open '{url}'")


# ----------------------------------------------------------------------------- training config
@FAST
@given(text=YAML_TEXT | st.text(max_size=200))
def test_training_config_on_random_text_refuses_with_a_config_error(workdir, text):
    from train.config import load_train_config

    path = workdir / "train.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    refuses_cleanly(lambda: load_train_config(path))


TRAIN_KEYS = st.sampled_from([
    "model.backbone.name", "model.backbone.channels", "model.backbone.pool", "model.input.frames",
    "model.input.size", "model.input.mean", "model.d_model", "model.num_queries", "loss.giou",
    "optim.lr", "optim.lr_min", "optim.betas", "optim.epochs", "optim.warmup_epochs",
    "data.batch_size", "data.val_fraction", "augment.crop_scale", "train.score_threshold",
    "train.device", "model", "optim", "x.y", "", "model..d_model", "model.backbone.name.x"])
TRAIN_VALUES = st.one_of(
    st.sampled_from(["", "0", "-1", "1e-4", "3e-4", "nan", ".inf", "[]", "[1]", "[0, 0, 0, 0]",
                     "[1, 2]", "{}", "null", "true", "r3d_18", "[1e9, 2]", "[-1, 0.5]", "'8'",
                     "[[1]]", "!!python/object/apply:os.system ['true']", "{a: 1}", "[1,"]),
    st.text(max_size=15))


@FAST
@given(overrides=st.lists(st.one_of(st.builds(lambda k, v: f"{k}={v}", TRAIN_KEYS, TRAIN_VALUES),
                                    st.text(max_size=20)), min_size=1, max_size=4))
def test_training_config_overrides_refuse_with_a_config_error(overrides):
    from train.config import load_train_config

    refuses_cleanly(lambda: load_train_config(None, overrides))


# ----------------------------------------------------------------------------- label files
LABEL_LINES = st.lists(st.one_of(
    st.builds(lambda *v: " ".join(map(str, v)), st.integers(-1, 3),
              *[st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                          st.integers(-400, 400)) for _ in range(4)]),
    st.sampled_from(["", "# comment", "0 1 2 3", "0 1 2 3 4 5", "1e400 0 0 1 1", "0x1 1 1 2 2",
                     "0 nan 0 1 1", "0 10 10 5 5", "\t0\t1\t1\t9\t9", "0 1 1 9 9 # x",
                     "-0 0 0 1 1", "1.5 0 0 1 1", "0 -5 -5 2 2", "0 0 0 1e308 1e308"]),
    st.text(max_size=40)), max_size=8).map("\n".join)


@FAST
@given(text=LABEL_LINES, width=st.integers(1, 2000), height=st.integers(1, 2000),
       num_classes=st.integers(1, 3), offset=st.integers(0, 1))
def test_label_files_parse_or_name_file_and_line(workdir, text, width, height, num_classes,
                                                 offset):
    from train.labels import parse_label_file

    path = workdir / "clip.txt"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    actions = refuses_cleanly(lambda: parse_label_file(path, width, height,
                                                       num_classes=num_classes,
                                                       class_offset=offset))
    if actions is not None:
        rows = actions.annotations
        assert rows.ndim == 2 and rows.shape[1] == 5 and actions.segments.shape == (len(rows), 2)
        assert ((rows[:, 0] >= 0) & (rows[:, 0] < num_classes)).all()
        boxed = rows[~np.isnan(rows[:, 1:]).any(axis=1)]     # class-only lines have no box
        assert ((boxed[:, 3] > boxed[:, 1]) & (boxed[:, 4] > boxed[:, 2])).all()


@FAST
@given(raw=st.binary(max_size=100))
def test_label_files_of_random_bytes_refuse_with_a_data_error(workdir, raw):
    from train.labels import parse_label_file

    path = workdir / "bytes.txt"
    path.write_bytes(raw)
    refuses_cleanly(lambda: parse_label_file(path, 320, 240))


# ----------------------------------------------------------------------------- action_challenge.csv
@pytest.fixture(scope="module")
def reference_folder(workdir) -> Path:
    """A reference-layout folder with one real tiny video and one valid label file."""
    from train.synth import Scene, write_video

    root = workdir / "ref"
    root.mkdir()
    write_video(root / "fight1.avi", Scene("fight", 1, width=48, height=32, fps=10, frames=8))
    (root / "fight1.txt").write_text("1 4 4 20 20\n")
    (root / "bad.txt").write_text("9 0 0 1 1\n")
    return root


CSV_CELLS = st.one_of(st.sampled_from(["fight1.avi", "fight1.txt", "bad.txt", "missing.avi",
                                       "", " ", "video_file", "label_file", "../etc/passwd",
                                       "fight1.txt/..", '"', '""', "a\nb", "\x00"]),
                      st.text(max_size=12))
CSV_TEXT = st.one_of(
    st.text(max_size=150),
    st.lists(st.lists(CSV_CELLS, max_size=4).map(",".join), max_size=6).map("\n".join),
    st.lists(st.lists(CSV_CELLS, max_size=3).map(",".join), max_size=5)
    .map(lambda rows: "\n".join(["video_file,label_file", *rows])))


@FEW
@given(text=CSV_TEXT)
def test_action_challenge_csv_scans_or_names_the_file_and_line(reference_folder, text):
    from train.dataset import check_dataset, scan_dataset

    (reference_folder / "action_challenge.csv").write_text(text, encoding="utf-8",
                                                           errors="surrogatepass")
    records = refuses_cleanly(lambda: scan_dataset(reference_folder))
    if records is not None:
        assert all(r.video.is_file() for r in records)
    problems = check_dataset(reference_folder)      # collects instead of raising
    assert all(isinstance(p, str) and p for p in problems)


@FEW
@given(raw=st.binary(max_size=80))
def test_action_challenge_csv_of_random_bytes_refuses_with_a_data_error(reference_folder, raw):
    from train.dataset import scan_dataset

    (reference_folder / "action_challenge.csv").write_bytes(raw)
    refuses_cleanly(lambda: scan_dataset(reference_folder))


# ----------------------------------------------------------------------------- alert messages
def _valid_alert() -> dict:
    return {"schema": "vigil.alert/1", "seq": 7, "type": "end", "event_id": "lobby-1",
            "camera": "lobby", "label": "fight", "score": 0.9, "box": [0.1, 0.2, 0.5, 0.9],
            "box_px": [10, 20, 50, 90], "frame_size": [100, 100],
            "window": {"start": "2026-11-24T10:15:01.12Z", "end": "2026-11-24T10:15:01.76Z"},
            "published_at": "2026-11-24T10:15:02.03Z", "latency_s": 0.27,
            "snapshot": None, "clip": None, "reason": "cleared"}


def test_the_valid_alert_used_for_mutation_is_accepted():
    from streamer.protocol import parse_alert

    assert parse_alert([b"alert.lobby.fight", json.dumps(_valid_alert()).encode()])["seq"] == 7


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime.date, bytes)):
        return str(value)
    raise TypeError(type(value).__name__)


FRAME = st.one_of(st.binary(max_size=60), st.text(max_size=20), st.integers(), st.none(),
                  TREES.map(lambda t: json.dumps(t, default=_json_default).encode()))


@FAST
@given(frames=st.one_of(st.lists(FRAME, max_size=4), FRAME, st.tuples(FRAME, FRAME)))
def test_alert_frames_of_random_content_raise_alert_format_error(frames):
    from streamer.protocol import parse_alert, parse_heartbeat

    refuses_cleanly(lambda: parse_alert(frames))
    refuses_cleanly(lambda: parse_heartbeat(frames))


@FAST
@given(msg=mutated(_valid_alert()),
       topic=st.sampled_from([b"alert.lobby.fight", b"alert.", b"heartbeat", b"alert.x.y", b""]))
def test_damaged_alerts_raise_alert_format_error(msg, topic):
    from streamer.protocol import format_alert, parse_alert

    body = json.dumps(msg, default=_json_default, allow_nan=True).encode()
    parsed = refuses_cleanly(lambda: parse_alert([topic, body]))
    if parsed is not None:
        assert isinstance(format_alert(parsed), str)    # what `vigil alerts` prints next


# ----------------------------------------------------------------------------- labels.csv manifest
@pytest.fixture(scope="module")
def manifest_folder(workdir) -> Path:
    """A CSV-manifest folder with one real tiny video."""
    from train.synth import Scene, write_video

    root = workdir / "manifest"
    root.mkdir()
    write_video(root / "clip.avi", Scene("fight", 1, width=48, height=32, fps=10, frames=8))
    return root


MANIFEST_CELLS = st.one_of(st.sampled_from(["clip.avi", "missing.mp4", "fight", "collapse", "none",
                                            "0", "1", "7", "-1", "", " ", "0.5", "1e400", "nan",
                                            "3", "2.5", "\ufeff", '"', "a\r\nb"]),
                           st.text(max_size=8))
MANIFEST_TEXT = st.lists(st.lists(MANIFEST_CELLS, min_size=2, max_size=9).map(",".join),
                         max_size=5).map(
    lambda rows: "\r\n".join(["file,label,start_s,end_s,x1,y1,x2,y2,group", *rows]))


@FEW
@given(text=MANIFEST_TEXT, bom=st.booleans())
def test_labels_csv_scans_or_names_the_file_and_line(manifest_folder, text, bom):
    from train.dataset import inspect_dataset, scan_dataset

    (manifest_folder / "labels.csv").write_text(("\ufeff" if bom else "") + text,
                                                encoding="utf-8", errors="surrogatepass")
    records = refuses_cleanly(lambda: scan_dataset(manifest_folder, require_positives=False))
    if records is not None:
        assert all(r.video.is_file() for r in records)
    records, problems = inspect_dataset(manifest_folder)     # collects instead of raising
    assert all(isinstance(p, str) and p for p in problems)
