# The README's two commands: `make test` and `make demo`. Both set up what they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SYSSTAMP := $(VENV)/.system-packages
# The `slow` tests (a real soak of a few minutes) run with `make test-slow`, not in CI's budget.
PYTEST_ARGS ?= -m "not slow"

.PHONY: install system-packages test test-slow demo train-demo pose-reference clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# Reinstalls only when the package metadata or the pins change, so a second run installs nothing.
$(STAMP): $(VENV)/bin/python setup.cfg pyproject.toml constraints.txt
	$(PY) -m pip install --disable-pip-version-check -q -c constraints.txt -e '.[dev,onnx]'
	touch $(STAMP)

install: $(STAMP)

# GStreamer's RTSP server, Prometheus/promtool and systemd-analyze for the integration tests.
$(SYSSTAMP): scripts/system-packages.sh | $(VENV)/bin/python
	bash scripts/system-packages.sh
	touch $(SYSSTAMP)

system-packages: $(SYSSTAMP)

test: $(STAMP) $(SYSSTAMP)
	@echo "make test: the slow soak test is deselected here; run it with make test-slow"
	$(PY) -m pytest $(PYTEST_ARGS)

test-slow: $(STAMP) $(SYSSTAMP)
	$(PY) -m pytest -m slow -s

demo: $(STAMP)
	$(VENV)/bin/vigil demo

# The quick-start recipe (train/quickstart.py): 1500 small synthetic videos, cpu-small.yaml.
train-demo: $(STAMP)
	$(VENV)/bin/vigil synth --out runs/demo-data --videos 1500 --seed 11 --width 128 --height 96 --frames 48
	$(VENV)/bin/vigil train --config configs/train/cpu-small.yaml --data runs/demo-data --out runs/demo
	$(VENV)/bin/vigil eval --checkpoint runs/demo/best.pt --data runs/demo-data --split val --out runs/demo/eval

# MediaPipe's own landmarks on the pose tests' sample frames (tests/pose_reference.py), recorded
# in tests/fixtures/pose/. mediapipe needs jax and a second OpenCV: it gets its own venv.
.venv-mediapipe/bin/python:
	$(PYTHON) -m venv .venv-mediapipe
	.venv-mediapipe/bin/python -m pip install --disable-pip-version-check -q mediapipe==0.10.14

pose-reference: $(STAMP) .venv-mediapipe/bin/python
	$(PY) scripts/pose-reference.py --python .venv-mediapipe/bin/python

clean:
	rm -rf $(VENV) .venv-mediapipe runs build *.egg-info
