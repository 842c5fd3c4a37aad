#!/usr/bin/env bash
# Download, into wheels/ (git-ignored), the Python packages Vigil needs that a fresh GPU machine
# without internet lacks. That machine has PyTorch, torchvision, OpenCV, numpy, pillow, scipy,
# prometheus-client, pyyaml, onnxruntime and tqdm; everything else `setup.cfg` asks for (its
# install_requires and the `dev` extra: pyzmq, matplotlib, pytest, hypothesis) and their own
# requirements comes from here. `scripts/gpu-check.sh` installs from wheels/ whatever of it is
# missing there (`pip install --no-index --find-links wheels`).
#
#   bash scripts/fetch-gpu-wheels.sh [PYTHON_VERSION ...]     e.g. 3.12, or 3.11 3.12
#
# PYTHON_VERSION defaults to this machine's Python (the venv's when .venv exists). Wheels only
# (--only-binary=:all:), CPython manylinux x86_64, versions pinned by constraints.txt where it
# pins them. Several versions may be given: pip later picks the wheel matching the machine's
# Python. Then carry `wheels` to the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-}
if [[ -z $PY ]]; then
    if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
versions=("$@")
if [[ ${#versions[@]} -eq 0 ]]; then
    versions=("$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')")
fi

# The packages (name, no version: constraints.txt pins those it knows). Requirements that only
# apply to Python < 3.11 (tomli, exceptiongroup) are added below for such versions.
PACKAGES=(
    pyzmq                                   # install_requires: alerts over ZeroMQ
    matplotlib contourpy cycler fonttools kiwisolver pyparsing python-dateutil tzdata
    pytest iniconfig pluggy packaging pygments     # dev extra: the test runner
    hypothesis sortedcontainers                    # dev extra: property tests
)

mkdir -p wheels
for v in "${versions[@]}"; do
    extra=()
    if [[ $v =~ ^3\.(10)$ ]]; then extra=(tomli exceptiongroup); fi
    echo "fetch-gpu-wheels: CPython $v manylinux x86_64 -> wheels/"
    "$PY" -m pip download --disable-pip-version-check -q --no-deps --only-binary=:all: \
        --implementation cp --python-version "$v" \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux_2_26_x86_64 --platform manylinux_2_24_x86_64 \
        --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 \
        -c constraints.txt -d wheels "${PACKAGES[@]}" "${extra[@]}" \
        2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
done
ls -1 wheels
du -sh wheels
