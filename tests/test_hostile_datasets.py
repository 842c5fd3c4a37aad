"""Datasets as careless operators and hostile archives make them (issue 26, kinds 7 to 9).

* File names that are not UTF-8 (unzipped from a Windows archive): OpenCV's `VideoCapture` crashes
  the process on them (SIGSEGV), so every verb that reads videos (`data check`, `train`, `eval`,
  `detect`, `cv`) must name such a file, escaped, as a problem and go on with the rest. The verbs
  run in child processes: a crash fails the test instead of killing pytest.
* Paths that leave the dataset: a manifest's `../outside/secret.mp4` or `/abs/path.mp4`, a
  reference CSV's label file `/etc/passwd`, a symlink in a class folder or in `videos/` pointing
  elsewhere. Each is a problem naming its row; the file is never opened, unless the user asks
  (`allow_outside_root`, `--allow-outside-root`).
* Several problems in one video: all of them are listed, not the first, so a user fixes a
  manifest or a label file in one pass.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from detector.errors import DataError
from train import video_io
from train.dataset import inspect_dataset, scan_dataset, scan_dataset_lenient

ROOT = Path(__file__).resolve().parents[1]
W, H = 64, 48

# Non-UTF-8 names as archives and old file systems leave them: Latin-1, stray continuation
# bytes, a truncated sequence, an encoded surrogate (CESU-8), a 5-byte form, UTF-16 BOM bytes.
BAD_NAMES = [b"caf\xe9_\xff.mp4", b"\x80\x81\x82.mp4", b"bad\xc3(.avi", b"\xed\xa0\x80sur.mp4",
             b"\xf8\x88\x80\x80\x80.mkv", b"\xfe\xff.mov"]


def make_video(path: Path | bytes, n: int = 12, fps: float = 10.0) -> None:
    """A small MP4 at `path` (a bytes path may hold any name: written under a plain name in a
    plain folder first, since OpenCV's writer crashes on such names too)."""
    plain = (Path(tempfile.mkdtemp()) / "clip.mp4") if isinstance(path, bytes) else Path(path)
    writer = cv2.VideoWriter(str(plain), cv2.VideoWriter_fourcc(*"mp4v"), fps, (W, H))
    assert writer.isOpened()
    for i in range(n):
        frame = np.full((H, W, 3), (180, 4 * i, 40), np.uint8)
        writer.write(frame)
    writer.release()
    if isinstance(path, bytes):
        shutil.move(os.fsencode(str(plain)), path)
        plain.parent.rmdir()


def escaped(name: bytes) -> str:
    """How a message shows a non-UTF-8 name: its bytes as \\xNN escapes."""
    return name.decode("utf-8", "backslashreplace")


def vigil(*args, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VIGIL_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "streamer.cli", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, timeout=timeout)


def text(proc: subprocess.CompletedProcess) -> str:
    return (proc.stdout + proc.stderr).decode("utf-8", "replace")


def not_crashed(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode >= 0, f"killed by signal {-proc.returncode}\n{text(proc)}"
    assert "Traceback" not in text(proc), text(proc)


# ----------------------------------------------------------------------------- 7: names
PROBE_EVERY_NAME = """
import os, sys
from detector.errors import DataError
from train import video_io
folder = os.fsencode(sys.argv[1])
for name in os.listdir(folder):
    path = os.fsdecode(folder + b"/" + name)
    for read in (video_io.probe, lambda p: video_io.read_frames(p, [0])):
        try:
            read(path)
            print("READ", video_io.shown(path))
        except DataError as exc:
            print("REFUSED", exc)
"""


def test_a_non_utf8_name_is_never_given_to_opencv(tmp_path):
    """probe and read_frames on each name, in a child process: OpenCV would end it (SIGSEGV)."""
    for name in BAD_NAMES:
        make_video(os.fsencode(str(tmp_path)) + b"/" + name)
        problem = video_io.name_problem(os.fsdecode(os.fsencode(str(tmp_path)) + b"/" + name))
        assert problem is not None and escaped(name) in problem
        assert problem.encode("utf-8")              # printable as it is
    make_video(tmp_path / "Straße_ok.mp4")
    assert video_io.name_problem(tmp_path / "Straße_ok.mp4") is None   # UTF-8 names are fine
    proc = subprocess.run([sys.executable, "-c", PROBE_EVERY_NAME, str(tmp_path)], cwd=ROOT,
                          capture_output=True, timeout=120)
    not_crashed(proc)
    out = proc.stdout.decode("utf-8")
    assert out.count("REFUSED") == 2 * len(BAD_NAMES) and out.count("READ") == 2
    for name in BAD_NAMES:
        assert escaped(name) in out and "not valid UTF-8" in out


def hostile_dataset(root: Path) -> Path:
    """Class folders with good videos, every bad name in them, and a folder with a bad name."""
    data = root / "data"
    for folder, n in (("fight", 3), ("none", 3)):
        (data / folder).mkdir(parents=True)
        for i in range(n):
            make_video(data / folder / f"{folder}{i}.mp4", n=20)
    for i, name in enumerate(BAD_NAMES):
        make_video(os.fsencode(str(data / ("fight" if i % 2 else "none"))) + b"/" + name, n=20)
    os.mkdir(os.fsencode(str(data)) + b"/Fight\xe9")       # a class folder with such a name
    make_video(os.fsencode(str(data)) + b"/Fight\xe9/x.mp4", n=20)
    return data


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict:
    from .test_readme import TINY

    tmp = tmp_path_factory.mktemp("hostile")
    data = hostile_dataset(tmp)
    sets = [x for s in TINY for x in ("--set", s)]
    train = vigil("train", "--data", data, "--out", tmp / "run", "--epochs", "1", "--no-progress",
                  "--set", "data.cache=false", "--set", "data.val_fraction=0.34", *sets,
                  cwd=tmp)
    return {"tmp": tmp, "data": data, "train": train, "checkpoint": tmp / "run" / "best.pt",
            "sets": sets}


def names_every_bad_file(out: str) -> None:
    for name in BAD_NAMES:
        assert escaped(name) in out, (escaped(name), out)


def test_data_check_names_each_non_utf8_file_and_goes_on(hostile):
    proc = vigil("data", "check", hostile["data"], cwd=hostile["tmp"], timeout=180)
    not_crashed(proc)
    assert proc.returncode == 1                     # problems were found
    names_every_bad_file(text(proc))
    assert "Fight\\xe9" in text(proc)              # the folder's name, escaped
    assert "'Fight\\udce9'" not in text(proc)      # shown as its bytes, not as surrogates
    assert "6 usable videos, 7 problem(s)" in text(proc), text(proc)   # the rest was read


def test_train_names_each_non_utf8_file_and_trains_on_the_rest(hostile):
    proc = hostile["train"]
    not_crashed(proc)
    assert proc.returncode == 0, text(proc)
    names_every_bad_file(text(proc))
    assert "Fight\\xe9" in text(proc)              # the folder's name, escaped
    assert hostile["checkpoint"].is_file()


def test_eval_names_each_non_utf8_file_and_scores_the_rest(hostile):
    proc = vigil("eval", "--checkpoint", hostile["checkpoint"], "--data", hostile["data"],
                 "--split", "all", "--workers", "0", cwd=hostile["tmp"])
    not_crashed(proc)
    assert proc.returncode == 0, text(proc)
    names_every_bad_file(text(proc))
    assert "video acc" in text(proc).lower() or "accuracy" in text(proc).lower()


def test_detect_names_each_non_utf8_file_and_detects_the_rest(hostile):
    proc = vigil("detect", hostile["data"], "--checkpoint", hostile["checkpoint"], "--workers",
                 "2", cwd=hostile["tmp"])
    not_crashed(proc)
    assert proc.returncode == 1                      # some videos could not be read
    rows = [json.loads(line) for line in proc.stdout.decode("utf-8").splitlines()]
    good = [r for r in rows if "error" not in r]
    bad = [r for r in rows if "error" in r]
    assert len(good) == 6                            # every plainly named video
    # Each bad name, and the video in the folder with a bad name (its path is not UTF-8).
    assert sorted(Path(r["video"]).name for r in bad) == sorted(
        [escaped(n) for n in BAD_NAMES] + ["x.mp4"])
    assert any(r["video"].endswith("Fight\\xe9/x.mp4") for r in bad)
    names_every_bad_file(proc.stderr.decode("utf-8"))


def test_cv_names_each_non_utf8_file_and_runs_its_folds(hostile):
    proc = vigil("cv", "--data", hostile["data"], "--out", hostile["tmp"] / "cv", "--folds", "2",
                 "--epochs", "1", "--no-progress", "--set", "data.cache=false",
                 *hostile["sets"], cwd=hostile["tmp"])
    not_crashed(proc)
    assert proc.returncode == 0, text(proc)
    names_every_bad_file(text(proc))
    assert (hostile["tmp"] / "cv" / "cv.json").is_file()


def test_a_non_utf8_camera_url_is_a_config_error_not_a_crash():
    from detector.errors import ConfigError
    from streamer.sources import parse_source

    for url in ("file:///videos/caf\udce9.mp4", "/videos/\udcff.mp4",
                "rtsp://cam/\udc80stream"):
        with pytest.raises(ConfigError, match="not valid UTF-8"):
            parse_source(url)


# ----------------------------------------------------------------------------- 8: escapes
@pytest.fixture
def outside(tmp_path) -> dict:
    """A dataset folder with good videos, and videos and a 'secret' outside it."""
    root, away = tmp_path / "data", tmp_path / "outside"
    root.mkdir()
    away.mkdir()
    for name in ("a.mp4", "b.mp4"):
        make_video(root / name)
    make_video(away / "secret.mp4")
    (away / "secret.txt").write_text("0 1 1 10 10\n")
    (root / "sub").mkdir()
    os.symlink(away / "secret.mp4", root / "sub" / "link.mp4")     # a file link out
    os.symlink(away, root / "linkdir")                               # a folder link out
    return {"root": root, "away": away, "tmp": tmp_path}


class Opened:
    """Records every path handed to the decoder."""

    def __init__(self, monkeypatch):
        self.paths: list[Path] = []
        real = video_io.open_video

        def spy(path):
            self.paths.append(Path(path))
            return real(path)
        monkeypatch.setattr(video_io, "open_video", spy)

    def outside(self, away: Path) -> list[Path]:
        return [p for p in self.paths if Path(os.path.realpath(p)).is_relative_to(away)]


ESCAPING_ROWS = ["../outside/secret.mp4", "{away}/secret.mp4", "sub/../../outside/secret.mp4",
                 "sub/link.mp4", "linkdir/secret.mp4", "./sub/../linkdir/secret.mp4",
                 "/etc/../{away}/secret.mp4"]


def test_manifest_paths_that_leave_the_dataset_are_refused_unread(outside, monkeypatch):
    root, away = outside["root"], outside["away"]
    rows = ["file,label", "a.mp4,fight", "./sub/../b.mp4,none"]
    rows += [f"{r.format(away=away)},fight" for r in ESCAPING_ROWS]
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    opened = Opened(monkeypatch)
    records, problems = inspect_dataset(root)
    assert sorted(r.video.name for r in records) == ["a.mp4", "b.mp4"]   # inside: still read
    assert len(problems) == len(ESCAPING_ROWS)
    for line, problem in enumerate(problems, start=4):
        assert f"labels.csv:{line}:" in problem and "outside the dataset folder" in problem
    assert opened.outside(away) == []                 # never handed to the decoder
    # The user who keeps videos elsewhere on purpose says so, and they are read.
    records, problems = inspect_dataset(root, allow_outside_root=True)
    assert problems == [] and len(records) == 2 + len(ESCAPING_ROWS)
    with pytest.raises(DataError, match="outside the dataset folder"):
        scan_dataset(root)                            # the strict scan refuses too


def test_a_csv_given_as_the_dataset_confines_to_its_own_folder(outside):
    root = outside["root"]
    manifest = root / "sub" / "set.csv"
    manifest.write_text("file,label\n../a.mp4,fight\nlink.mp4,none\n")
    records, problems = inspect_dataset(manifest, require_positives=False)
    assert records == [] and len(problems) == 2
    assert all("outside the dataset folder" in p for p in problems)


def test_reference_and_folder_layouts_and_class_folders_are_confined_too(outside, monkeypatch):
    root, away = outside["root"], outside["away"]
    opened = Opened(monkeypatch)
    # The reference layout: a video and a label file outside.
    ref = outside["tmp"] / "ref"
    ref.mkdir()
    make_video(ref / "ok.mp4")
    (ref / "ok.txt").write_text("0 1 1 10 10\n")
    (ref / "action_challenge.csv").write_text(
        f"video_file,label_file\nok.mp4,ok.txt\n../outside/secret.mp4,ok.txt\n"
        f"ok.mp4,{away}/secret.txt\n")
    records, problems = inspect_dataset(ref, label_id_base=0)
    assert [r.video.name for r in records] == ["ok.mp4"]
    assert [p.split(": ", 1)[0][-22:] for p in problems] == ["action_challenge.csv:3",
                                                             "action_challenge.csv:4"]
    # Vigil's own layout: a video and a label file that are symlinks out.
    own = outside["tmp"] / "own"
    (own / "videos").mkdir(parents=True)
    (own / "labels").mkdir()
    make_video(own / "videos" / "ok.mp4")
    (own / "labels" / "ok.txt").write_text("fight\n")
    os.symlink(away / "secret.mp4", own / "videos" / "leak.mp4")
    make_video(own / "videos" / "peek.mp4")
    os.symlink(away / "secret.txt", own / "labels" / "peek.txt")
    records, problems = inspect_dataset(own)
    assert [r.video.name for r in records] == ["ok.mp4"]
    assert len(problems) == 2 and all("outside the dataset folder" in p for p in problems)
    # Class folders: a link to a file out, and a linked folder (not followed anyway).
    cls = outside["tmp"] / "cls"
    (cls / "fight").mkdir(parents=True)
    make_video(cls / "fight" / "ok.mp4")
    os.symlink(away / "secret.mp4", cls / "fight" / "leak.mp4")
    records, problems = inspect_dataset(cls)
    assert [r.video.name for r in records] == ["ok.mp4"]
    assert len(problems) == 1 and "leak.mp4" in problems[0]
    assert opened.outside(away) == []


def test_a_dataset_named_by_a_relative_path_is_read_whole(tmp_path, monkeypatch):
    """`vigil train --data ../clips`: the confinement compares real paths, so a dataset named
    relative to the working directory (the videos' paths then start with that name too) is
    inside itself, in every layout."""
    work = tmp_path / "work"
    work.mkdir()
    sets = tmp_path / "sets"
    own = sets / "own"
    (own / "videos").mkdir(parents=True)
    (own / "labels").mkdir()
    make_video(own / "videos" / "ok.mp4")
    (own / "labels" / "ok.txt").write_text("fight\n")
    cls = sets / "cls"
    for name in ("fight", "none"):
        (cls / name).mkdir(parents=True)
        make_video(cls / name / "v.mp4")
    csv = sets / "csv"
    csv.mkdir()
    make_video(csv / "a.mp4")
    (csv / "labels.csv").write_text("file,label\na.mp4,fight\n")
    monkeypatch.chdir(work)
    for name, count in (("own", 1), ("cls", 2), ("csv", 1)):
        records, problems = inspect_dataset(Path("..") / "sets" / name)
        assert problems == [] and len(records) == count, (name, problems)


def test_data_check_eval_and_detect_labels_refuse_escapes_unless_asked(outside):
    from vigil_tools.harness import tiny_checkpoint

    root, tmp = outside["root"], outside["tmp"]
    (root / "labels.csv").write_text("file,label\na.mp4,fight\nb.mp4,none\n"
                                     "../outside/secret.mp4,fight\n")
    proc = vigil("data", "check", root, cwd=tmp, timeout=180)
    not_crashed(proc)
    assert proc.returncode == 1 and "labels.csv:4" in text(proc)
    assert "outside the dataset folder" in text(proc)
    proc = vigil("data", "check", root, "--allow-outside-root", cwd=tmp, timeout=180)
    assert proc.returncode == 0 and "OK (csv layout)" in text(proc), text(proc)
    ckpt = tiny_checkpoint(tmp / "tiny.pt")
    proc = vigil("eval", "--checkpoint", ckpt, "--data", root, "--split", "all", "--workers",
                 "0", "--out", tmp / "ev", cwd=tmp)
    not_crashed(proc)
    assert proc.returncode == 0 and "outside the dataset folder" in text(proc), text(proc)
    scored = [json.loads(line)["stem"] if "stem" in line else line
              for line in (tmp / "ev" / "predictions.jsonl").read_text().splitlines()]
    assert len(scored) == 2 and not any("secret" in str(s) for s in scored)
    proc = vigil("eval", "--checkpoint", ckpt, "--data", root, "--split", "all", "--workers",
                 "0", "--out", tmp / "ev2", "--allow-outside-root", cwd=tmp)
    assert proc.returncode == 0, text(proc)
    assert len((tmp / "ev2" / "predictions.jsonl").read_text().splitlines()) == 3
    proc = vigil("detect", root / "a.mp4", "--checkpoint", ckpt, "--labels", root, "--workers",
                 "0", cwd=tmp)
    assert proc.returncode == 0 and "outside the dataset folder" in text(proc), text(proc)


# ----------------------------------------------------------------------------- 9: all of them
def test_every_bad_row_of_a_video_is_listed(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    make_video(root / "a.mp4", n=20)        # 2 s at 10 fps, 64x48
    make_video(root / "ok.mp4")
    rows = ["file,label,start_s,end_s,x1,y1,x2,y2",
            "a.mp4,brawl,,,,,,",                      # 2: unknown class
            "a.mp4,fight,0.5,,,,,",                   # 3: half a segment
            "a.mp4,fight,1.5,0.5,,,,",                # 4: reversed segment
            "a.mp4,collapse,,,1,2,500,40",            # 5: box outside the frame
            "a.mp4,,,,,,,",                           # 6: empty label
            "a.mp4,fight,9,12,,,,",                   # 7: segment after the end
            "a.mp4,collapse,0.2,1.0,,,,",             # 8 and 9: overlapping segments
            "a.mp4,collapse,0.5,1.5,,,,",
            "a.mp4,fight,,,1,2,3,",                   # 10: three quarters of a box
            "ok.mp4,fight,,,,,,"]
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    records, problems = inspect_dataset(root)
    assert [r.video.name for r in records] == ["ok.mp4"]
    lines = sorted(int(p.split("labels.csv:")[1].split(":")[0]) for p in problems)
    assert lines == [2, 3, 4, 5, 6, 7, 9, 10], problems
    assert any("overlap" in p for p in problems)
    with pytest.raises(DataError) as err:             # strict: one error, every line in it
        scan_dataset(root)
    assert str(err.value).count("labels.csv:") >= 2
    proc = vigil("data", "check", root, cwd=tmp_path, timeout=180)
    assert proc.returncode == 1
    assert f"{len(problems)} problem(s)" in text(proc)


def test_every_bad_line_of_a_label_file_and_a_broken_video_are_listed(tmp_path):
    root = tmp_path / "d"
    (root / "videos").mkdir(parents=True)
    (root / "labels").mkdir()
    make_video(root / "videos" / "a.mp4", n=20)
    (root / "videos" / "broken.mp4").write_bytes(b"\x00" * 500)
    make_video(root / "videos" / "ok.mp4")
    (root / "labels" / "ok.txt").write_text("fight\n")
    (root / "labels" / "a.txt").write_text("fight t=1-0.5\nbrawl\n0 1 2 3\nnone\n"
                                           "collapse 1 1 900 40\n")
    (root / "labels" / "broken.txt").write_text("fight\nfisticuffs\n")
    records, problems = inspect_dataset(root)
    assert [r.video.name for r in records] == ["ok.mp4"]
    a = [p for p in problems if "a.txt" in p]
    assert [p.split("a.txt:")[1].split(":")[0] for p in a if "a.txt:" in p] == \
        ["1", "2", "3", "5"]
    broken = [p for p in problems if "broken" in p]
    assert any("broken.mp4" in p for p in broken)          # the video itself
    assert any("broken.txt:2" in p for p in broken)        # and its label file's bad line
    _, lenient = scan_dataset_lenient(root)
    assert lenient == problems
