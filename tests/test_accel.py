"""The `accel:` section (`streamer/accel/settings.py`) and the worker's model switches: every
default is today's path; a switch the device cannot run is refused at load with the reason; the
switches that run on a CPU give today's scores."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from detector.errors import ConfigError
from detector.runtime import load_model
from streamer.accel.settings import AccelConfig
from streamer.config import parse_config
from streamer.worker import InferenceWorker, WindowMeta, fixed_batch_sizes
from vigil_tools.harness import tiny_checkpoint


def _cfg(accel: dict, device: str = "auto", checkpoint: str = "x.pt"):
    return parse_config({"data_dir": "/tmp/vigil-test",
                         "model": {"checkpoint": checkpoint, "device": device, "pose": None},
                         "cameras": [{"name": "a", "url": "synth://fight"}], "accel": accel},
                        source="vigil.yaml", check_paths=False)


def test_defaults_are_todays_path():
    a = _cfg({}).accel
    assert a == AccelConfig()
    assert (a.fold_bn, a.channels_last, a.compile, a.cuda_graphs, a.device_ring, a.capture) == \
        (False, False, None, False, False, "threads")
    assert not a.compiled and a.compile_mode() is None


def test_cuda_graphs_on_a_cpu_are_refused_at_load_with_the_reason():
    with pytest.raises(ConfigError, match=r"vigil.yaml: accel.cuda_graphs: CUDA graphs need a "
                                          r"CUDA device.*model.device cpu"):
        _cfg({"cuda_graphs": True}, device="cpu")
    # `auto` may resolve to a GPU: accepted at load, checked again once the device is known.
    cfg = _cfg({"cuda_graphs": True}, device="auto")
    with pytest.raises(ConfigError, match="cuda_graphs"):
        cfg.accel.check_device("cpu")
    cfg.accel.check_device("cuda:0")


def test_model_rewrites_are_refused_for_an_onnx_model():
    with pytest.raises(ConfigError, match="accel: .*onnx"):
        _cfg({"fold_bn": True}, checkpoint="model.onnx")
    _cfg({"device_ring": True, "capture": "processes"}, checkpoint="model.onnx")


def test_unknown_values_are_refused():
    with pytest.raises(ConfigError, match="accel.compile"):
        _cfg({"compile": "fast"})
    with pytest.raises(ConfigError, match="accel.capture"):
        _cfg({"capture": "fibers"})


def test_compile_modes():
    assert AccelConfig(compile="default").compile_mode() == "default"
    assert AccelConfig(cuda_graphs=True).compile_mode() == "reduce-overhead"
    assert AccelConfig(compile="max-autotune-no-cudagraphs",
                       cuda_graphs=True).compile_mode() == "max-autotune"


def test_fixed_batch_sizes():
    assert fixed_batch_sizes(1) == [1]
    assert fixed_batch_sizes(8) == [1, 2, 4, 8]
    assert fixed_batch_sizes(12) == [1, 2, 4, 8, 12]
    assert fixed_batch_sizes(1000) == [8, 16, 32, 64, 128, 256, 512, 1000]   # 8 graphs at most


# ------------------------------------------------------------------------------ the worker
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tiny_checkpoint(tmp_path_factory.mktemp("accel") / "tiny.pt")
    return load_model(path, torch.device("cpu"))


def _windows(cfg, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    H, W = cfg.input.size
    meta = WindowMeta(end_seq=1, t_start_wall=0.0, t_end_wall=1.0, t_end_mono=1.0,
                      frame_size=(64, 48))
    return [(f"c{i}", rng.integers(0, 256, (cfg.input.frames, H, W, 3), dtype=np.uint8), meta)
            for i in range(n)]


def _scores(results):
    return np.array([[r.scores[k].score for k in sorted(r.scores)] for r in results])


def _boxes(results):
    return np.array([[r.scores[k].box for k in sorted(r.scores)] for r in results])


def test_fold_bn_and_channels_last_give_todays_scores_on_the_cpu(tiny):
    model, cfg, _ = tiny
    windows = _windows(cfg, 3)
    plain = InferenceWorker(model, cfg.input, cfg.class_names, policy=4).infer(windows)
    fast = InferenceWorker(model, cfg.input, cfg.class_names, policy=4,
                           accel=AccelConfig(fold_bn=True, channels_last=True))
    assert fast.batch_sizes is None           # not compiled: any batch size runs as it is
    got = fast.infer(windows)
    np.testing.assert_allclose(_scores(got), _scores(plain), atol=1e-5)
    np.testing.assert_allclose(_boxes(got), _boxes(plain), atol=1e-5)


def test_a_padded_batch_gives_the_unpadded_results(tiny):
    model, cfg, _ = tiny
    windows = _windows(cfg, 3, seed=1)
    plain = InferenceWorker(model, cfg.input, cfg.class_names, policy=4).infer(windows)
    padded = InferenceWorker(model, cfg.input, cfg.class_names, policy=4)
    padded.batch_sizes = [4]                  # what a compiled worker with max_batch 4 runs
    padded._host.fill_(77)                    # padding rows hold an earlier batch's frames
    got = padded.infer(windows)
    assert [r.camera for r in got] == ["c0", "c1", "c2"]
    np.testing.assert_allclose(_scores(got), _scores(plain), atol=1e-6)


def test_cuda_graphs_are_refused_by_a_cpu_worker(tiny):
    model, cfg, _ = tiny
    with pytest.raises(ConfigError, match="cuda_graphs"):
        InferenceWorker(model, cfg.input, cfg.class_names, accel=AccelConfig(cuda_graphs=True))


def test_compiled_worker_warms_up_every_batch_size_before_the_first_window(tiny):
    """torch.compile on the CPU (about a minute here for the two sizes of the tiny model)."""
    from torch._dynamo.utils import counters

    model, cfg, _ = tiny
    windows = _windows(cfg, 2, seed=2)
    plain = InferenceWorker(model, cfg.input, cfg.class_names, policy=2).infer(windows)
    torch._dynamo.reset()
    worker = InferenceWorker(model, cfg.input, cfg.class_names, policy=2,
                             accel=AccelConfig(compile="default", fold_bn=True,
                                               channels_last=True))
    assert worker.batch_sizes == [1, 2]
    worker.warm_up()
    graphs = counters["stats"]["unique_graphs"]
    got = worker.infer(windows) + worker.infer(windows[:1])
    assert counters["stats"]["unique_graphs"] == graphs, "a window waited for a compile"
    np.testing.assert_allclose(_scores(got[:2]), _scores(plain), atol=1e-4)
    np.testing.assert_allclose(_scores(got[2:]), _scores(plain[:1]), atol=1e-4)


def test_the_fleet_pages_accel_example_is_a_valid_section():
    import re

    import yaml

    from detector.schema import from_dict

    page = (Path(__file__).resolve().parents[1] / "docs/fleet.md").read_text()
    block = next(b for b in re.findall(r"```yaml\n(.*?)```", page, re.S)
                 if b.startswith("accel:"))
    accel = from_dict(AccelConfig, yaml.safe_load(block)["accel"], "accel")
    accel.validate()
    assert accel.device_ring and accel.capture == "processes" and accel.cuda_graphs
    assert accel.compile_mode() == "reduce-overhead"


def test_a_compile_that_fails_is_logged_and_the_model_served_uncompiled(tiny, caplog):
    model, cfg, _ = tiny
    windows = _windows(cfg, 2, seed=3)
    plain = InferenceWorker(model, cfg.input, cfg.class_names, policy=2).infer(windows)
    worker = InferenceWorker(model, cfg.input, cfg.class_names, policy=2,
                             accel=AccelConfig(compile="default"))

    class Broken(torch.nn.Module):       # what a missing compiler looks like at the first call
        def __init__(self, inner):
            super().__init__()
            self._orig_mod = inner

        def forward(self, x):
            raise RuntimeError("InductorError: no working C compiler")

    worker.model = Broken(worker.model._orig_mod)
    worker.warm_up()
    assert "torch.compile failed" in caplog.text and worker.batch_sizes is None
    np.testing.assert_allclose(_scores(worker.infer(windows)), _scores(plain), atol=1e-6)


def test_a_model_swapped_in_on_reload_keeps_the_accel_switches(tmp_path):
    """`streamer/models/swap.py`: the new worker runs with the daemon's `accel:` model switches
    (warmed up in the swapper's thread when compiled)."""
    from detector.inference import count_batchnorms
    from streamer.models.swap import SwapRequest, prepare
    from streamer.scheduler import BatchPolicy

    path = tiny_checkpoint(tmp_path / "next.pt")
    req = SwapRequest(checkpoint=path, precision="auto", needed=frozenset({"fight"}), frames=8,
                      size=(32, 32), clip_seconds=1.0, clip_seconds_used=True)
    accel = AccelConfig(fold_bn=True, channels_last=True)
    cand = prepare(req, torch.device("cpu"), 1, BatchPolicy(2), accel=accel)
    assert cand.worker.accel == accel and count_batchnorms(cand.worker.model) == 0
    plain = prepare(req, torch.device("cpu"), 1, BatchPolicy(2))
    assert count_batchnorms(plain.worker.model) > 0
