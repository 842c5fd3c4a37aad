"""The Grafana dashboard and Prometheus rules only name metrics the daemon really exports."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from streamer.metrics import VigilMetrics

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "configs/grafana/vigil-dashboard.json"
RULES = ROOT / "configs/prometheus/vigil-rules.yml"
METRIC_RE = re.compile(r"\b(vigil_[a-z_]+)\b")


def exported_sample_names() -> set[str]:
    """Every sample name the daemon's exposition contains once each metric has a series."""
    m = VigilMetrics()
    m.add_camera("cam", labels=("fight",))
    m.alerts.labels(camera="cam", label="fight", type="start").inc()
    m.set_build_info("0", "model", "cpu")
    m.track_frame_age("cam", lambda: None)
    m.add_notification_rule("ops")          # a `notify:` rule's series, as the daemon makes them
    text = m.exposition().decode()
    return {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs += [v["query"] for v in dash["templating"]["list"] if v.get("type") == "query"]
    return exprs


def test_every_dashboard_query_names_an_exported_metric():
    exported = exported_sample_names()
    exprs = dashboard_exprs()
    assert len(exprs) >= 10
    for expr in exprs:
        names = METRIC_RE.findall(expr)
        assert names, f"query names no vigil metric: {expr}"
        for name in names:
            assert name in exported, f"{name} (in {expr!r}) is not exported by the daemon"


def test_dashboard_covers_what_an_operator_watches():
    text = " ".join(dashboard_exprs())
    for metric in ("vigil_camera_up", "vigil_frames_total", "vigil_windows_skipped_total",
                   "vigil_inference_seconds_bucket", "vigil_alert_latency_seconds_bucket",
                   "vigil_alerts_total", "vigil_events_active", "vigil_publish_dropped_total"):
        assert metric in text


def test_alert_rules_name_exported_metrics():
    exported = exported_sample_names()
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert {r["alert"] for r in rules} >= {"VigilCameraDown", "VigilWindowsSkipped",
                                           "VigilAlertLatencyHigh", "VigilDown",
                                           "VigilJournalNotWritable", "VigilJournalLost",
                                           "VigilReplayDown"}
    for rule in rules:
        for name in METRIC_RE.findall(rule["expr"]):
            assert name in exported, f"rule {rule['alert']}: {name} is not exported"


def test_promtool_accepts_the_rules():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package 'prometheus'; `make test` installs it)")
    out = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


# ---- a fleet of shards (issue 15) --------------------------------------------------------------
FLEET_CONFIG = ROOT / "configs/prometheus/prometheus-fleet.yml"
SHARDS = ROOT / "configs/prometheus/vigil-shards.json"
RULES_TEST = ROOT / "configs/prometheus/vigil-rules.test.yml"


def test_dashboard_has_an_instance_variable_used_by_every_query():
    dash = json.loads(DASHBOARD.read_text())
    names = [v["name"] for v in dash["templating"]["list"]]
    assert "instance" in names and names.index("instance") < names.index("camera")
    for expr in dashboard_exprs():
        if "label_values(vigil_build_info" in expr:
            continue
        assert 'instance=~"$instance"' in expr, expr
        assert "sum by (le)" not in expr, f"sums shards together: {expr}"


def test_rules_never_sum_across_instances():
    groups = yaml.safe_load(RULES.read_text())["groups"]
    for rule in (r for g in groups for r in g["rules"]):
        for by in re.findall(r"\bby \(([^)]*)\)", rule["expr"]):
            assert "instance" in by, f"{rule['alert']} aggregates away the instance: {by}"


def test_file_sd_example_names_each_shard_by_its_vigil_instance():
    from streamer.protocol import is_instance

    groups = json.loads(SHARDS.read_text())
    names = [g["labels"]["instance"] for g in groups]
    assert len(names) >= 2 and len(set(names)) == len(names) and all(map(is_instance, names))
    config = yaml.safe_load(FLEET_CONFIG.read_text())
    job = config["scrape_configs"][0]
    assert job["job_name"] == "vigil"                     # what VigilDown matches
    assert job["file_sd_configs"][0]["files"] == [SHARDS.name]


@pytest.mark.parametrize("args", [["check", "config", str(FLEET_CONFIG)],
                                  ["test", "rules", str(RULES_TEST)]])
def test_promtool_accepts_the_fleet_config_and_the_per_instance_rule_tests(args):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package 'prometheus'; `make test` installs it)")
    out = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60,
                         cwd=FLEET_CONFIG.parent)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout + out.stderr
