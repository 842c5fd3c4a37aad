"""`scripts/alert-check.py`: the daemon's windows, worker and event logic on labelled clips."""
from __future__ import annotations

import subprocess
import sys

from vigil_tools.harness import REPO, tiny_checkpoint


def test_it_tabulates_starts_on_quiet_clips_and_latency_on_action_clips(tmp_path):
    from train.synth_dataset import write_dataset

    data = tmp_path / "data"
    write_dataset(data, videos=6, seed=3, width=64, height=48, fps=15, frames=40)
    ckpt = tiny_checkpoint(tmp_path / "tiny.pt")
    out = tmp_path / "table.md"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "alert-check.py"),
                           "--checkpoint", str(ckpt), "--data", str(data), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    table = out.read_text()
    assert "| source | none clips | none minutes | starts on none |" in table
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith("| all |")]
    assert len(rows) == 1
    none_clips, action_clips = int(rows[0][1]), int(rows[0][6])
    assert none_clips + action_clips == 6 and action_clips >= 1
    assert ", 6 clips," in table


def test_a_score_cache_replays_the_smoothing_without_the_model_and_sweeps_thresholds(tmp_path):
    from train.synth_dataset import write_dataset

    data = tmp_path / "data"
    write_dataset(data, videos=4, seed=5, width=64, height=48, fps=15, frames=40)
    ckpt = tiny_checkpoint(tmp_path / "tiny.pt")
    cache, first, second = tmp_path / "scores.pkl", tmp_path / "a.md", tmp_path / "b.md"
    run = [sys.executable, str(REPO / "scripts" / "alert-check.py"), "--data", str(data),
           "--scores", str(cache)]
    proc = subprocess.run(run + ["--checkpoint", str(ckpt), "--out", str(first)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert cache.exists()
    ckpt.unlink()                       # the second run must not need the model
    proc = subprocess.run(run + ["--checkpoint", str(ckpt), "--out", str(second), "--sweep",
                                 "--on-grid", "0.5", "0.9", "--min-windows-grid", "1", "3"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    table_rows = lambda text: [l for l in text.splitlines() if l.startswith("| ") and
                               "/10 min" not in l]
    a, b = first.read_text(), second.read_text()
    assert table_rows(a) == table_rows(b)[:len(table_rows(a))]
    sweep = [l for l in b.splitlines() if l.startswith(("| fight |", "| collapse |"))]
    assert len(sweep) == 2 * 2 * 2      # classes x on values x min_windows values


def test_folds_are_checked_with_the_last_epoch_model_that_the_cross_validation_scores(tmp_path):
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("alert_check", REPO / "scripts" / "alert-check.py")
    alert_check = importlib.util.module_from_spec(spec)
    sys.modules["alert_check"] = alert_check      # its dataclasses look their module up there
    try:
        spec.loader.exec_module(alert_check)
    finally:
        del sys.modules["alert_check"]

    class Rec:
        def __init__(self, stem):
            self.stem = stem

    for k, stems in ((1, ["a", "b"]), (2, ["c"])):
        fold = tmp_path / f"fold{k}"
        fold.mkdir()
        (fold / "val_predictions.jsonl").write_text(
            "".join(json.dumps({"stem": s}) + "\n" for s in stems))
    jobs = alert_check.fold_jobs(tmp_path, [Rec(s) for s in "abc"])
    assert [(ckpt.relative_to(tmp_path).as_posix(), [r.stem for r in recs])
            for ckpt, recs in jobs] == [("fold1/last.pt", ["a", "b"]), ("fold2/last.pt", ["c"])]


def test_a_bad_file_is_one_line_not_a_traceback(tmp_path):
    script = [sys.executable, str(REPO / "scripts" / "alert-check.py"), "--data", str(tmp_path)]
    proc = subprocess.run(script + ["--checkpoint", str(tmp_path / "nope.pt")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"alert-check: {tmp_path / 'nope.pt'}: no such checkpoint file"
    config = tmp_path / "vigil.yaml"
    config.write_text("smoothing:\n  classes:\n    collapse: {on_treshold: 0.9}\n")
    proc = subprocess.run(script + ["--config", str(config)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "smoothing.classes.collapse.on_treshold: unknown key" in proc.stderr
