"""Cross-validation: every video is predicted once by a model that did not train on it, the
pooled predictions give the per-source report, and extra training sets are never validated on."""
from __future__ import annotations

import json
from pathlib import Path

from train.cv import cross_validate

from ._training import tiny_config, tiny_dataset


def test_cv_pools_out_of_fold_predictions_into_a_per_source_report(tmp_path: Path) -> None:
    data = tiny_dataset(tmp_path / "data", videos=12, seed=1)
    extra = tiny_dataset(tmp_path / "extra", videos=6, seed=2)
    cfg = tiny_config(epochs=1)
    summary = cross_validate(cfg, data, tmp_path / "cv", folds=3, progress=False,
                             also_train=[extra])
    rows = [json.loads(line) for k in (1, 2, 3)
            for line in (tmp_path / "cv" / f"fold{k}" / "val_predictions.jsonl").read_text()
            .splitlines()]
    stems = sorted(r["stem"] for r in rows)
    # Each video of DATA exactly once; nothing of the extra set is ever validated on.
    assert stems == sorted(p.stem for p in (data / "videos").iterdir())
    assert not any(r["stem"].startswith("extra") for r in rows)
    overall = summary["per_source"]["overall"]
    assert overall["videos"] == 12
    assert summary["per_source"]["data"]["videos"] == 12
    # The pooled accuracy is the share of out-of-fold rows whose prediction is right.
    assert abs(overall["video_acc"] - sum(r["true"] == r["pred"] for r in rows) / 12) < 1e-9
    assert json.loads((tmp_path / "cv" / "cv.json").read_text())["per_source"]["overall"]
