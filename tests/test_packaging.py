"""An installed Vigil works away from its source tree: the wheel carries every file a verb reads at
run time (training recipes, shipped weights) and none of the test helpers.

The wheel is built from a copy of the checkout and installed into a fresh virtual environment in a
temporary folder; its dependencies (torch, OpenCV, ...) come from this interpreter's
site-packages through a `.pth` line, so nothing is downloaded. Commands run from the temporary
folder with no PYTHONPATH, so the source tree cannot stand in for the installed package.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]


def _source_copy(dest: Path) -> Path:
    """The checkout's tracked and unignored files (no .venv, no build output), copied."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to know which files are the source")
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file():  # follows links: configs/train/*.yaml become plain files
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """Build the wheel, install it into a fresh venv; yields the venv's paths and a clean env."""
    tmp = tmp_path_factory.mktemp("pkg")
    src = _source_copy(tmp / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--no-index", "-q", "-w", str(tmp / "dist"), str(src)], check=True)
    wheel = next((tmp / "dist").glob("vigil-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps",
                    "--no-index", "-q", str(wheel)], check=True)
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True, check=True)
    # The dependencies, after the venv's own site-packages (so the installed vigil comes first).
    Path(site.stdout.strip(), "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["COLUMNS"] = "250"  # argparse help on long lines: paths are not wrapped
    run_dir = tmp / "elsewhere"
    run_dir.mkdir()
    return dict(wheel=wheel, venv=venv, py=py, vigil=venv / "bin" / "vigil", env=env,
                cwd=run_dir)


def _run(inst: dict, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], cwd=inst["cwd"], env={**inst["env"],
                          **(env or {})}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_wheel_carries_recipes_and_weights_but_not_test_helpers(installed):
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    recipes = {Path(n).name for n in names if n.startswith("train/recipes/")}
    assert {"seed.yaml", "cpu-small.yaml", "reference.yaml", "finetune-cpu.yaml",
            "real-cpu.yaml"} <= recipes
    # Every weight the default `vigil` serves or a recipe starts from, with its licence.
    for wanted in ("detector/weights/real-cpu-v2.pt", "detector/weights/synth-cpu-v2.pt",
                   "detector/weights/pose/pose-collapse-v1.pt",
                   "detector/weights/blazepose/pose_detection.tflite",
                   "detector/weights/blazepose/pose_landmark_full.tflite",
                   "detector/weights/blazepose/LICENSE",
                   "detector/weights/pretrained/mobilenet_v2-imagenet.pt",
                   "detector/weights/pretrained/NOTICE",
                   "streamer/web/views/base.tpl"):
        assert wanted in names, wanted
    assert not [n for n in names if "rtsp_test_server" in n]


def test_wheel_holds_the_three_packages_and_none_of_the_tools(installed):
    """The file list of the wheel: the service's packages only. The tools wing (benchmarks, demo,
    soak, the daemon harness of the tests), the tests and the scripts stay in the checkout."""
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert tops - {"detector", "train", "streamer"} == {
        n for n in tops if n.endswith((".dist-info", ".data"))}, sorted(tops)
    leaked = [n for n in names if any(word in n for word in (
        "vigil_tools", "harness", "soak", "bench", "demo", "fleet_bench", "/tools/", "tests/",
        "scripts/", "rtsp_test_server", "conftest"))]
    assert not leaked, leaked
    # The service's modules are all there (a spot check of each package).
    assert {"streamer/daemon.py", "streamer/cli.py", "train/cli.py", "detector/model.py"} \
        <= set(names)
    # the review page's templates are package data (streamer/web/views/)
    assert {"streamer/web/views/base.tpl", "streamer/web/views/event.tpl"} <= set(names)


@pytest.mark.parametrize("argv", [("demo",), ("bench", "model", "--out", "x"), ("soak", "--help"),
                                  ("demo", "--duration", "5")])
def test_tool_verbs_of_an_installed_wheel_say_in_one_line_where_they_run(installed, argv):
    proc = subprocess.run([str(installed["vigil"]), *argv], cwd=installed["cwd"],
                          env=installed["env"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "source checkout" in lines[0] and f"vigil {argv[0]}" in lines[0]
    assert "Traceback" not in proc.stderr and not proc.stdout


def test_installed_package_is_imported_not_the_source_tree(installed):
    out = _run(installed, installed["py"], "-c", "import detector, train, streamer; "
               "print(detector.__file__, train.__file__, streamer.__file__)")
    for path in out.stdout.split():
        assert Path(path).is_relative_to(installed["venv"]), path


def test_vigil_help_lists_the_verbs(installed):
    out = _run(installed, installed["vigil"], "--help")
    for verb in ("train", "serve", "demo", "bench", "export", "import-reference"):
        assert verb in out.stdout


def test_train_help_names_the_default_recipe_inside_the_installed_package(installed):
    out = _run(installed, installed["vigil"], "train", "--help")
    recipe = next(w.strip("()") for w in out.stdout.split() if w.strip("()").endswith("seed.yaml"))
    assert Path(recipe).is_file() and Path(recipe).is_relative_to(installed["venv"])
    # And the README's recipe paths work from anywhere: `configs/train/cpu-small.yaml` is found
    # in the package when there is no such file in the working folder.
    out = _run(installed, installed["py"], "-c",
               "from train.config import load_train_config as l; "
               "print(l('configs/train/cpu-small.yaml').model.backbone.name); "
               "from train.quickstart import CPU_SMALL; print(CPU_SMALL.is_file())")
    assert out.stdout.split()[-1] == "True"  # the recipe `vigil demo` and `bench model` train


def test_serve_check_on_the_example_config_with_the_shipped_weights(installed):
    weights = _run(installed, installed["py"], "-c", "from detector.init_weights import "
                   "default_weights; print(default_weights())").stdout.strip()
    assert Path(weights).is_relative_to(installed["venv"])
    # configs/vigil.yaml as shipped: `model.checkpoint: vigil` is the installed default model.
    text = (ROOT / "configs" / "vigil.yaml").read_text()
    assert "checkpoint: vigil" in text
    cfg = installed["cwd"] / "vigil.yaml"
    cfg.write_text(text)
    out = _run(installed, installed["vigil"], "serve", "--check", "--config", cfg,
               env={"CAM_LOBBY_PASSWORD": "pw"})
    assert "config OK" in out.stdout
