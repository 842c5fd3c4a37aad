"""Every command the README and the pages moved out of it (GUIDES) show is run here, so they
cannot rot.

Each `sh` block line is one command. `vigil` commands are parsed by the real argument parser and
run as written, with only what makes them fit a test (fewer videos, a tiny model, one epoch,
temporary paths, ports) added or substituted; those substitutions are listed next to each
command below. `make` and `sudo` lines are checked against the files they use, with the reason
they cannot run inside the suite. The Python subscriber example runs against a real publisher.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path


from ._training import tiny_config  # noqa: F401  (keeps the tiny model's overrides in one place)

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# The user's guides that were the README's sections, in the order the README had them (the first
# `vigil alerts` line is the single daemon's, the fleet's comes after it).
GUIDES = [ROOT / "docs" / name for name in
          ("your-cameras.md", "configuration.md", "operating.md", "fleet.md", "training.md")]


def guide_text() -> str:
    """The README and GUIDES, one after the other."""
    return "\n".join(path.read_text() for path in [README, *GUIDES])

# A model of a few thousand parameters on 8x32x32 clips: the same as tests/_training.tiny_config.
TINY = ["model.backbone.name=small3d", "model.backbone.channels=[4,8,8,8]",
        "model.backbone.pool=[1,2,2]", "model.input.frames=8", "model.input.size=[32,32]",
        "model.d_model=16", "model.nheads=2", "model.dim_feedforward=32",
        "model.decoder_layers=1", "model.num_queries=3", "data.num_workers=0",
        "data.batch_size=4", "optim.warmup_epochs=0"]


def readme_commands(text: str | None = None) -> list[str]:
    """Every line of every `sh` block of `text` (default: the README and GUIDES)."""
    text = guide_text() if text is None else text
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = line.split(" #")[0].strip()
            if line:
                commands.append(line)
    return commands


def python_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", guide_text(), re.S)
    assert len(blocks) == 1, "the README and its guides have one Python example"
    return blocks[0]


def vigil(args: list[str], cwd: Path, env: dict | None = None, timeout: float = 300
          ) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "streamer.cli", *args], cwd=cwd,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "VIGIL_OFFLINE": "1",
                              **(env or {})},
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"vigil {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
    return out


def test_every_readme_command_is_known_to_this_test():
    """A command added to the README without a runner here fails this test."""
    for cmd in readme_commands():
        words = shlex.split(cmd)
        if words[0] in ("make", "sudo"):   # see the next two tests
            continue
        assert words[0] == "vigil", f"README command this test cannot run: {cmd}"
        assert words[1] in RUNNERS, f"README command this test cannot run: {cmd}"


def test_make_targets_exist_and_ci_runs_make_test():
    makefile = (ROOT / "Makefile").read_text()
    for cmd in readme_commands():
        words = shlex.split(cmd)
        if words[0] == "make":
            # `make test` is what CI runs (.ci/run); `make demo` runs `vigil demo`, which
            # tests/test_demo.py runs in full. Neither can run inside the suite it is part of.
            assert re.search(rf"^{words[1]}:", makefile, re.M), f"no make target {words[1]}"
    assert "make test" in (ROOT / ".ci/run").read_text()
    # ... and the README itself, the front page, states both commands.
    assert {"make test", "make demo"} <= set(readme_commands(README.read_text()))


def test_systemd_install_lines_name_files_that_exist():
    # `sudo` lines install files and start systemd, which a test cannot do here; the unit itself
    # is checked by systemd-analyze in tests/test_systemd_unit.py.
    for cmd in readme_commands():
        if cmd.startswith("sudo"):
            for word in shlex.split(cmd.replace("&&", " ")):
                if "/" in word and not word.startswith("/") and "=" not in word:
                    assert (ROOT / word).exists(), f"{cmd}: {word} does not exist"


def test_training_commands_as_in_the_readme(tmp_path):
    """synth, data check, train, eval, cv, detect, import-reference, ensemble: in README
    order."""
    cmds = [shlex.split(c) for c in readme_commands() if c.startswith("vigil ")]
    ran = set()
    for words in cmds:
        args = words[1:]
        verb = args[0]
        if verb == "synth":           # 1500 videos -> 12 smaller ones
            args = _replace(_replace(_replace(args, "--videos", "12"), "--width", "64"),
                            "--frames", "16")
        elif verb == "train" and "configs/train/finetune-cpu.yaml" in args:
            # Fine-tuning starts from the shipped weights, so it keeps their architecture (734k
            # parameters at 16x64x64: seconds per epoch on 12 videos); 1 epoch.
            args = args + ["--epochs", "1", "--no-progress", "--set", "data.num_workers=0"]
        elif verb in ("train", "cv"):  # the README's recipe, on a tiny model for 1 epoch
            args = args + ["--epochs", "1", "--no-progress"] if verb == "train" else args
            args += [x for s in TINY for x in ("--set", s)]
            if verb == "cv":
                args = _replace(args, "--folds", "2") + ["--set", "optim.epochs=1"]
        elif verb == "import-reference":
            _write_reference_state_dict(tmp_path / "best_model.pth")
        elif verb not in ("data", "eval", "detect", "ensemble"):   # ensemble: as written
            continue
        args = [str(ROOT / a) if a.startswith("configs/") else a for a in args]
        vigil(args, tmp_path, timeout=600)
        ran.add(verb)
    assert ran == {"synth", "data", "train", "eval", "cv", "detect", "import-reference",
                   "ensemble"}
    assert (tmp_path / "runs/mine/best.pt").exists()
    assert (tmp_path / "runs/mine/eval/metrics.json").exists()
    assert (tmp_path / "detections.csv").read_text().count("\n") >= 12
    assert (tmp_path / "model.pt").exists()
    assert (tmp_path / "runs/finetuned/last.pt").exists()
    assert (tmp_path / "mine.pt").exists()      # the fine-tuned member back in the ensemble


def test_serve_check_and_keys_commands_as_in_the_readme(tmp_path):
    # configs/vigil.yaml as shipped: `model.checkpoint: vigil` is the shipped default model.
    text = (ROOT / "configs/vigil.yaml").read_text()
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs/vigil.yaml").write_text(text)
    for words in (shlex.split(c) for c in readme_commands() if c.startswith("vigil ")):
        if words[1] == "serve":
            out = vigil(words[1:], tmp_path, env={"CAM_LOBBY_PASSWORD": "Pw-readme-LEAK"})
            assert "config OK" in out.stdout and "Pw-readme-LEAK" not in out.stdout + out.stderr
        elif words[1] == "keys":
            args = _replace(words[1:], "--out", str(tmp_path / "keys"))
            vigil(args, tmp_path)
            assert list((tmp_path / "keys").rglob("*.key_secret"))


def test_alerts_command_and_python_example_receive_a_published_alert(tmp_path):
    from streamer.publisher import AlertPublisher
    from vigil_tools.harness import free_port

    pub_port, replay_port = free_port(), free_port()
    example = python_example().replace("tcp://127.0.0.1:5557", f"tcp://127.0.0.1:{pub_port}")
    script = tmp_path / "subscriber.py"
    script.write_text(example)
    child = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    publisher = AlertPublisher(f"tcp://127.0.0.1:{pub_port}",
                               f"tcp://127.0.0.1:{replay_port}", tmp_path / "journal.sqlite3")
    try:
        time.sleep(1.0)  # the slow joiner: let the example's SUB connect
        publisher.emit(_alert())
        cmd = next(c for c in readme_commands() if c.startswith("vigil alerts"))
        cmd = cmd.replace(":5557", f":{pub_port}").replace(":5558", f":{replay_port}")
        out = vigil(shlex.split(cmd)[1:] + ["--count", "1", "--timeout", "10"], tmp_path)
        assert "lobby" in out.stdout and "FIGHT" in out.stdout.upper()
        time.sleep(1.0)
    finally:
        publisher.close()
        child.kill()
    printed = child.communicate(timeout=5)[0]
    assert printed.split() == ["1", "start", "lobby", "fight", "0.91"], printed


def test_fleet_relay_and_alerts_commands_as_in_the_readme(tmp_path):
    """The README's `vigil relay` line in front of two publishers named as its shards, and the
    fleet's `vigil alerts` line on the relay (ports substituted by free ones)."""
    import re as _re

    from streamer.publisher import AlertPublisher
    from vigil_tools.harness import free_port

    relay_cmd = next(c for c in readme_commands() if c.startswith("vigil relay"))
    alerts_cmd = next(c for c in readme_commands() if c.startswith("vigil alerts")
                      and ":5567" in c)
    ports = {p: free_port() for p in sorted(set(_re.findall(r":(\d{4})\b",
                                                            relay_cmd + " " + alerts_cmd)))}
    sub = lambda c: _re.sub(r":(\d{4})\b", lambda m: f":{ports[m.group(1)]}", c)  # noqa: E731
    relay_args = shlex.split(sub(relay_cmd))[1:]
    if "--endpoint" not in relay_args:       # the README relies on the defaults 5567/5568
        relay_args += ["--endpoint", f"tcp://127.0.0.1:{ports['5567']}",
                       "--replay-endpoint", f"tcp://127.0.0.1:{ports['5568']}"]
    shards = dict(_re.findall(r"--replay (\w+)=(\S+)", sub(relay_cmd)))
    daemons = _re.findall(r"--daemon (\S+)", sub(relay_cmd))
    assert list(shards) == ["gpu0", "gpu1"] and len(daemons) == 2
    pubs = [AlertPublisher(ep, replay, tmp_path / f"{name}.sqlite3", instance=name)
            for ep, (name, replay) in zip(daemons, shards.items())]
    relay = subprocess.Popen([sys.executable, "-m", "streamer.cli", *relay_args], cwd=tmp_path,
                             env={**os.environ, "PYTHONPATH": str(ROOT)},
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for pub in pubs:
            pub.emit(_alert())
        out = vigil(shlex.split(sub(alerts_cmd))[1:] + ["--count", "2", "--timeout", "20"],
                    tmp_path)
        lines = out.stdout.splitlines()
        assert sorted(line.split()[1] for line in lines) == ["gpu0/#1", "gpu1/#1"], out.stdout
    finally:
        relay.terminate()
        assert relay.wait(10) == 0, relay.stdout.read()
        for pub in pubs:
            pub.close()


def _alert() -> dict:
    return {"schema": "vigil.alert/1", "type": "start", "event_id": "lobby-20261124T101502Z-0001",
            "camera": "lobby", "label": "fight", "score": 0.91, "box": [0.2, 0.3, 0.6, 0.9],
            "box_px": [128, 108, 384, 324], "frame_size": [640, 360],
            "window": {"start": "2026-11-24T10:15:01.12Z", "end": "2026-11-24T10:15:01.76Z"},
            "snapshot": None, "clip": None, "reason": None, "_t_end_wall": time.time()}


def _replace(args: list[str], flag: str, value: str) -> list[str]:
    i = args.index(flag)
    return args[:i + 1] + [value] + args[i + 2:]


def _write_reference_state_dict(path: Path) -> None:
    import torch

    from .test_reference import random_reference_state_dict

    torch.save(random_reference_state_dict(), path)


# The verbs the tests above run; a README command with another verb fails the first test.
RUNNERS = {"synth", "data", "train", "eval", "cv", "detect", "import-reference", "ensemble",
           "serve", "keys", "alerts", "relay"}
