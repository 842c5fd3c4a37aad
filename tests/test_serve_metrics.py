"""VigilMetrics: every metric of design.md, on a private registry, served on the given host."""
from __future__ import annotations

import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamer.metrics import METRIC_NAMES, MODEL_RELOAD_RESULTS, VigilMetrics

# shared/ sits beside the checkout (as in CI); without it the module's own list is used.
DESIGN = Path(__file__).resolve().parents[2] / "shared" / "design.md"


def design_metric_names() -> list[str]:
    """The metric names of design.md's table (falls back to the module's list without it)."""
    if not DESIGN.is_file():
        return list(METRIC_NAMES)
    return re.findall(r"^\| `(vigil_[a-z_]+)", DESIGN.read_text(encoding="utf-8"), re.M)


def populated() -> VigilMetrics:
    m = VigilMetrics()
    m.add_camera("lobby", labels=("fight", "collapse"))
    m.frames.labels(camera="lobby").inc(25)
    m.camera_up.labels(camera="lobby").set(1)
    m.track_frame_age("lobby", lambda: None)
    m.inference_seconds.observe(0.03)
    m.batch_size.observe(3)
    m.alert_latency.observe(0.4)
    m.alerts.labels(camera="lobby", label="fight", type="start").inc()
    m.publish_dropped.inc()
    m.set_build_info("0.1.0", "best.pt", "cpu")
    return m


def families(text: str) -> dict[str, object]:
    out = {}
    for fam in text_string_to_metric_families(text):
        # The parser names counters without `_total`; design.md names them with it.
        name = fam.name + "_total" if fam.type == "counter" else fam.name
        out[name] = fam
    return out


def test_every_metric_of_the_design_is_exposed_with_its_type():
    names = design_metric_names()
    # Every metric of the design is exported; the daemon may export more (evidence failures).
    assert len(names) >= 14 and set(names) <= set(METRIC_NAMES)
    fams = families(populated().exposition().decode())
    for name in names:
        assert name in fams, f"{name} missing"
        expected = ("counter" if name.endswith("_total") else
                    "histogram" if name in ("vigil_inference_seconds", "vigil_batch_size",
                                            "vigil_alert_latency_seconds") else "gauge")
        assert fams[name].type == expected, name


def test_labels_are_only_camera_label_type_and_build_info():
    allowed = {"camera", "label", "type", "le"}
    # Besides: `reason` (zone, schedule) on vigil_events_suppressed_total and a notification
    # rule's validated name as `rule`: fixed sets, never free text; `result` (ok, refused) on
    # vigil_model_reloads_total; the serving checkpoint's file name and hash on vigil_model_info.
    m = populated()
    m.set_model_info("best.pt", "0123456789abcdef" * 4, 1.7e9)
    m.events_suppressed.labels(camera="lobby", label="fight", reason="zone").inc()
    m.add_notification_rule("ops")
    for fam in text_string_to_metric_families(m.exposition().decode()):
        for sample in fam.samples:
            extra = set(sample.labels) - allowed
            if fam.name == "vigil_build_info":
                extra -= {"version", "model", "device"}
            if fam.name.startswith("vigil_events_suppressed"):
                extra -= {"reason"}
                assert sample.labels["reason"] in ("zone", "schedule")
            if fam.name.startswith(("vigil_notifications_", "vigil_notification_")):
                extra -= {"rule"}
            if fam.name.startswith("vigil_model_reloads"):
                extra -= {"result"}
                assert sample.labels["result"] in MODEL_RELOAD_RESULTS
            if fam.name == "vigil_model_info":
                # The checkpoint's file name (as on vigil_build_info) and a 12-digit hash.
                extra -= {"checkpoint", "sha256"}
                assert "/" not in sample.labels["checkpoint"]
                assert re.fullmatch(r"[0-9a-f]{12}", sample.labels["sha256"])
            assert not extra, (fam.name, extra)


def test_histogram_buckets_fit_what_they_measure():
    m = populated()
    sample = m.registry.get_sample_value
    assert sample("vigil_inference_seconds_bucket", {"le": "0.005"}) is not None
    assert sample("vigil_inference_seconds_bucket", {"le": "10.0"}) is not None
    assert sample("vigil_batch_size_bucket", {"le": "64.0"}) is not None
    assert sample("vigil_batch_size_bucket", {"le": "2.0"}) == 0      # batch of 3 observed
    assert sample("vigil_alert_latency_seconds_bucket", {"le": "0.5"}) == 1
    assert sample("vigil_alert_latency_seconds_bucket", {"le": "30.0"}) is not None


def test_registries_are_private():
    a, b = VigilMetrics(), VigilMetrics()
    a.publish_dropped.inc(5)
    assert b.registry.get_sample_value("vigil_publish_dropped_total") == 0


def test_build_info_is_a_constant_one_and_replaced_on_change():
    m = populated()
    m.set_build_info("0.2.0", "best.pt", "cuda:0")
    text = m.exposition().decode()
    assert 'vigil_build_info{device="cuda:0",model="best.pt",version="0.2.0"} 1.0' in text
    assert 'version="0.1.0"' not in text


def test_model_info_names_only_the_serving_model():
    m = populated()
    m.set_model_info("old.pt", "a" * 64, 1.7e9)
    m.set_model_info("new.pt", "b" * 64, 1.8e9)
    m.model_reloads.labels(result="ok").inc()
    text = m.exposition().decode()
    assert 'vigil_model_info{checkpoint="new.pt",sha256="bbbbbbbbbbbb"} 1.0' in text
    assert "old.pt" not in text
    assert m.registry.get_sample_value("vigil_model_loaded_timestamp_seconds") == 1.8e9
    assert m.registry.get_sample_value("vigil_model_reloads_total", {"result": "ok"}) == 1
    assert m.registry.get_sample_value("vigil_model_reloads_total", {"result": "refused"}) == 0


def test_removed_cameras_disappear():
    m = populated()
    m.remove_camera("lobby", labels=("fight", "collapse"))
    assert 'camera="lobby"' not in m.exposition().decode()


def test_http_server_binds_the_given_host_and_shuts_down():
    m = populated()
    server = m.start_http_server("127.0.0.1", 0)
    try:
        assert server.host == "127.0.0.1" and server.port > 0
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as r:
            body = r.read().decode()
        assert "vigil_frames_total" in body
    finally:
        server.shutdown()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=1)


def test_promtool_accepts_the_exposition(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (make system-packages installs it)")
    text = populated().exposition()
    proc = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
