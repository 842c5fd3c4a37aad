#!/usr/bin/env bash
# The whole GPU check in one run, for a fresh GPU machine without internet:
#
#   1. install   what the machine lacks, from the wheels carried in wheels/
#                (scripts/fetch-gpu-wheels.sh), with pip --no-index --no-deps into a folder on
#                PYTHONPATH; Vigil itself runs from this tree through PYTHONPATH
#   2. env       the GPU, driver, torch/CUDA/cuDNN versions
#   3. tests     tests/test_cuda.py with VIGIL_REQUIRE_CUDA=1 (no device = failures, not skips),
#                the accel switches and device rings on CUDA included
#   4. model     vigil bench model: seed model 16x224x224, batches 1, 16, 64, fp32/fp16/bf16, the
#                8192^3 matmul roofline of each precision; at batch 64 in bf16 against the plain
#                row: channels_last_3d, fold_bn, both, cudnn.benchmark off; the profile
#   5. compile   vigil bench model, batch 64 bf16: fold_bn + channels_last_3d + torch.compile,
#                and that with CUDA graphs (mode reduce-overhead), against the plain row
#   6. offline   vigil bench offline: vigil detect against the reference-style loop, and
#                vigil detect --decode-workers 15 in the same passes
#   7. pipeline  vigil bench pipeline: file cameras at 25 fps, stride 8, 640x360, today's path;
#                the largest number of cameras in real time by bisection over 16..64
#   8. pipeline-accel  the same with accel: device_ring, capture processes, fold_bn,
#                channels_last (bisection over 16..128); its ratio to step 7 is the gain
#   9. train     vigil bench train: three timed epochs of the seed recipe on synthetic videos
#                (train.amp auto: fp16 + GradScaler on CUDA)   } not in the GPU run's default
#  10. train-fp32  the same with train.amp=off                   } steps (measured 2026-11-30)
#
# Every step runs under `timeout`, logs to $OUT/<step>.log and writes its table to
# $OUT/<step>.md; a step that fails or times out does not stop the others. $OUT/summary.md has
# each step's status and time, then every table. Exit status 1 when any step failed.
# The default steps' limits add up to 540 s, and GPU_CHECK_BUDGET_S (default 550) caps the whole
# run. A first run measured on the H200 took 350 s of 470 (with two steps cut by their limits)
# and the machine's start about 30 s; a re-run repeats only the failed steps (GPU_CHECK_STEPS),
# so both fit in 15 minutes of device time. The limits of the issue-29 steps (tests, model,
# compile, offline, pipeline-accel) are estimates from the H200 run, not yet measured.
#
#   bash scripts/gpu-check.sh [--dry-run] [--pack]
#
#   --dry-run  the same steps on the CPU with tiny sizes (a small model, one batch, one camera,
#              one short epoch; no torch.compile), seconds each, the train steps included: what
#              CI runs (tests/test_gpu_check.py)
#   --pack     keep the logs and tables in $OUT/gpu-check.tar.gz, repacked after every step, and
#              only that and summary.md in $OUT (the device tool brings back at most 8 files,
#              and a run cut short still brings back the steps it finished)
#   --commands print the steps' commands (the vigil ones as `vigil ...`) and exit, running nothing
#
# Environment: OUT (default: a new temporary folder, printed), PYTHON (default .venv/bin/python
# when it exists, else python3), WHEELS (default ./wheels), GPU_CHECK_BUDGET_S, GPU_CHECK_STEPS
# (comma-separated steps to run, default all but train,train-fp32 on the GPU and all in the dry
# run: a re-run can repeat only what failed).
set -uo pipefail

DRY=0
PACK=0
COMMANDS=0
for arg in "$@"; do
    case $arg in
        --dry-run) DRY=1 ;;
        --pack) PACK=1 ;;
        --commands) COMMANDS=1 ;;
        -h|--help) sed -n '2,47p' "$0"; exit 0 ;;
        *) echo "gpu-check: unknown argument $arg (--dry-run, --pack, --commands)" >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.." || exit 2
REPO=$(pwd)
if [[ -z ${OUT:-} ]]; then
    OUT=$(mktemp -d "${TMPDIR:-/tmp}/vigil-gpu-check.XXXXXX")
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
if [[ -z ${PYTHON:-} ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=$REPO/.venv/bin/python; else PYTHON=python3; fi
fi
WHEELS=${WHEELS:-$REPO/wheels}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/vigil-gpu-work.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
SITE=$WORK/site
mkdir -p "$SITE"
# With --pack the logs and tables go to a work folder and are packed into $OUT after every step,
# so that a run cut short still brings back what it measured (the device tool returns 8 files).
if (( PACK )); then LOGS=$WORK/steps; else LOGS=$OUT; fi
mkdir -p "$LOGS"
export PYTHONPATH="$REPO:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 VIGIL_OFFLINE=1 MPLBACKEND=Agg
VIGIL=("$PYTHON" -m streamer.cli)

ALL_STEPS=install,env,tests,model,compile,offline,pipeline,pipeline-accel,train,train-fp32
# The GPU run's default: what issue 29 measures (training was measured on 2026-11-30).
GPU_STEPS=install,env,tests,model,compile,offline,pipeline,pipeline-accel
if (( DRY )); then STEPS=${GPU_CHECK_STEPS:-$ALL_STEPS}; else STEPS=${GPU_CHECK_STEPS:-$GPU_STEPS}; fi
for s in ${STEPS//,/ }; do
    [[ ,$ALL_STEPS, == *,$s,* ]] || { echo "gpu-check: unknown step $s in GPU_CHECK_STEPS ($ALL_STEPS)" >&2; exit 2; }
done
wanted() { [[ ,$STEPS, == *,$1,* ]]; }
if (( DRY )); then
    BUDGET=${GPU_CHECK_BUDGET_S:-300}
    DEVICE=cpu
else
    BUDGET=${GPU_CHECK_BUDGET_S:-550}
    DEVICE=cuda
fi
T0=$(date +%s)
FAILED=0
ROWS=()
TABLES=()

# step NAME LIMIT_S COMMAND...: run under timeout, log to $OUT/NAME.log, record the outcome.
step() {
    local name=$1 limit=$2
    shift 2
    local left=$(( BUDGET - ($(date +%s) - T0) ))
    (( limit > left )) && limit=$left
    local log=$LOGS/$name.log
    if (( limit < 5 )); then
        echo "not run: the run's budget of ${BUDGET} s is spent" > "$log"
        ROWS+=("| $name | NOT RUN (budget spent) | 0 | 0 |")
        FAILED=1
        echo "gpu-check: $name not run (budget spent)"
        return
    fi
    echo "gpu-check: $name (limit ${limit} s) ..."
    local start rc status
    start=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" > "$log" 2>&1
    rc=$?
    local took=$(( $(date +%s) - start ))
    if (( rc == 0 )); then
        status=ok
    elif (( rc == 124 || rc == 137 )); then
        status="TIMEOUT after ${limit} s"
        FAILED=1
    else
        status="FAILED (exit $rc)"
        FAILED=1
    fi
    ROWS+=("| $name | $status | $took | $limit |")
    echo "gpu-check: $name: $status in ${took} s"
    [[ -s $LOGS/$name.md ]] && TABLES+=("$name.md")
    summary
}

# summary: $OUT/summary.md (each step's status and time, then every table), and with --pack
# $OUT/gpu-check.tar.gz of the logs and tables; rewritten after every step.
summary() {
    local total=$(( $(date +%s) - T0 )) commit=unknown rev
    if rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null); then
        commit=$rev
        git -C "$REPO" diff --quiet HEAD 2>/dev/null || commit="$rev (modified)"
    fi
    {
        echo "# gpu-check $([[ $DRY == 1 ]] && echo "(dry run on the CPU, tiny sizes)" || echo "(GPU run)")"
        echo
        echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -n), commit $commit, ${total} s of a ${BUDGET} s budget; steps: ${STEPS}; logs: <step>.log"
        echo
        echo "| step | status | seconds | limit s |"
        echo "|---|---|---|---|"
        printf '%s\n' "${ROWS[@]}"
        for t in "${TABLES[@]}"; do
            echo
            cat "$LOGS/$t"
        done
    } > "$OUT/summary.md"
    if (( PACK )); then
        (cd "$LOGS" && tar czf "$OUT/gpu-check.tar.gz.part" -- *) && mv "$OUT/gpu-check.tar.gz.part" "$OUT/gpu-check.tar.gz"
    fi
}

# Vigil's requirements that a GPU machine may lack, installed from the carried wheels; the ones
# the machine must already have are only checked.
install() {
    "$PYTHON" - "$WHEELS" "$SITE" <<'EOF'
import importlib.metadata as md, os, re, subprocess, sys
wheels, site = sys.argv[1], sys.argv[2]
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
installed = {norm(d.metadata["Name"]) for d in md.distributions() if d.metadata["Name"]}
must_have = ["torch", "torchvision", "opencv-python-headless", "numpy", "pillow", "scipy",
             "prometheus-client", "pyyaml", "tqdm"]
absent = [n for n in must_have if norm(n) not in installed]
if "opencv-python-headless" in absent and ("opencv-python" in installed):
    absent.remove("opencv-python-headless")
print("python", sys.version.split()[0], "at", sys.executable)
if absent:
    print("MISSING and not carried as wheels (the machine must have them):", ", ".join(absent))
carried = {}
if os.path.isdir(wheels):
    for f in sorted(os.listdir(wheels)):
        if f.endswith(".whl"):
            carried.setdefault(norm(f.split("-")[0]), f)
want = sorted(n for n in carried if n not in installed)
print("carried wheels:", len(carried), "distributions;", "already installed:",
      ", ".join(sorted(n for n in carried if n in installed)) or "none")
if want:
    print("installing:", ", ".join(want))
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check",
                           "--no-index", "--no-deps", "--no-compile", "--find-links", wheels,
                           "--target", site, *want])
    if done.returncode:
        v = "%d.%d" % sys.version_info[:2]
        sys.exit(f"pip could not install from {wheels}: were the wheels fetched for this "
                 f"Python? bash scripts/fetch-gpu-wheels.sh {v}")
else:
    print("nothing to install")
sys.path.insert(0, site)
import importlib.util
# The machine's own packages are only looked up (importing torch takes seconds); what came from
# the wheels is imported, so that a wheel built for another Python fails here, not in a step.
bad = [m for m in ("torch", "torchvision", "cv2", "numpy", "scipy")
       if importlib.util.find_spec(m) is None]
for module in ("prometheus_client", "yaml", "tqdm", "zmq", "matplotlib", "pytest", "hypothesis"):
    try:
        __import__(module)
    except Exception as exc:
        bad.append(f"{module} ({exc})")
if bad:
    sys.exit("cannot import: " + "; ".join(bad))
print("every requirement imports")
EOF
}

environment() {
    command -v nvidia-smi >/dev/null && nvidia-smi
    nproc
    "$PYTHON" - "$DEVICE" <<'EOF'
import sys, torch
print("torch", torch.__version__, "CUDA", torch.version.cuda, "cuDNN",
      torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)
print("CUDA available:", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"device 0: {p.name}, {p.total_memory / 2**30:.1f} GiB, {p.multi_processor_count} SMs, "
          f"bf16 {torch.cuda.is_bf16_supported()}")
elif sys.argv[1] == "cuda":
    sys.exit("no CUDA device visible to torch")
EOF
}

if (( DRY )); then
    # Tiny sizes: the CPU model (or a smaller one), one batch, one camera, one short epoch.
    TESTS=(env -u VIGIL_REQUIRE_CUDA "$PYTHON" -m pytest tests/test_cuda.py -m cuda -q -rA -p no:cacheprovider)
    MODEL=(bench model --device cpu --models cpu --batches 1 --repeats 1 --warmup 0 --matmul-n 128
           --no-onnx --no-compile
           --ablations channels_last,fold_bn,fold_bn+channels_last,no-cudnn-benchmark)
    COMPILE=(bench model --device cpu --models cpu --batches 1 --repeats 1 --warmup 0
             --matmul-n 128 --no-onnx --no-compile
             --ablations compile,fold_bn+channels_last+compile,cuda_graphs)
    OFFLINE=(bench offline --device cpu --videos 2 --repeats 1 --batch 2 --workers 0
             --decode-workers 2 --checkpoint "$WORK/tiny.pt")
    PIPELINE=(bench pipeline --device cpu --checkpoint "$WORK/tiny.pt" --resolutions 96x64
              --min-cameras 1 --max-cameras 1 --duration 2 --warmup 1 --max-batch 2 --threads 1)
    PIPELINE_ACCEL=("${PIPELINE[@]}" --accel device_ring=true --accel capture=processes
                    --accel fold_bn=true --accel channels_last=true)
    TRAIN=(bench train --device cpu --config configs/train/cpu-small.yaml
           --set 'model.input.size=[32,32]' --set data.batch_size=4 --videos 8 --epochs 1
           --size 64x48 --frames 16)
    TRAIN_FP32=("${TRAIN[@]}" --set train.amp=off)
    LIMITS=(install 60 env 30 tests 60 model 60 compile 60 offline 90 pipeline 90
            pipeline-accel 90 train 60 train-fp32 60)
else
    TESTS=(env VIGIL_REQUIRE_CUDA=1 "$PYTHON" -m pytest tests/test_cuda.py -m cuda -q -rA -s -p no:cacheprovider)
    # Measured on the H200 (2026-11-30): batch 1 takes ~7 s per precision (cuDNN autotuning),
    # batch 32 ~3.5 s; the sweep 1..64 and its ablations did not fit 60 s, hence three batches.
    MODEL=(bench model --device cuda --models seed --batches 1,16,64 --repeats 5
           --warmup 2 --no-compile
           --ablations channels_last,fold_bn,fold_bn+channels_last,no-cudnn-benchmark --profile)
    # Batch 64 in bf16, the plain row against everything compiled, and that with CUDA graphs
    # (compile alone measured 1.22x at batch 32 on 2026-11-30); two compiles of the seed model.
    COMPILE=(bench model --device cuda --models seed --batches 64 --repeats 5 --warmup 2
             --ablations fold_bn+channels_last+compile,cuda_graphs)
    OFFLINE=(bench offline --device cuda --videos 24 --repeats 2 --batch 16 --decode-workers 15)
    PIPELINE=(bench pipeline --device cuda --resolutions 640x360 --fps 25 --stride 8
              --min-cameras 16 --max-cameras 64 --duration 4 --warmup 2 --start-timeout 20)
    PIPELINE_ACCEL=(bench pipeline --device cuda --resolutions 640x360 --fps 25 --stride 8
                    --min-cameras 16 --max-cameras 128 --duration 4 --warmup 2
                    --start-timeout 20 --accel device_ring=true --accel capture=processes
                    --accel fold_bn=true --accel channels_last=true)
    TRAIN=(bench train --device cuda --videos 96 --epochs 3)
    TRAIN_FP32=("${TRAIN[@]}" --set train.amp=off)
    LIMITS=(install 15 env 10 tests 100 model 70 compile 100 offline 45 pipeline 90
            pipeline-accel 110 train 35 train-fp32 35)
fi
# `timeout` runs programs, not shell functions: the two functions go through bash -c.
export -f install environment
export PYTHON WHEELS SITE DEVICE
declare -A LIMIT
for (( i = 0; i < ${#LIMITS[@]}; i += 2 )); do LIMIT[${LIMITS[i]}]=${LIMITS[i+1]}; done
if (( COMMANDS )); then
    echo "tests: ${TESTS[*]}"
    for name in model compile offline pipeline pipeline-accel train train-fp32; do
        var=${name//-/_}
        declare -n cmd=${var^^}
        echo "$name: vigil ${cmd[*]}"
    done
    exit 0
fi
if (( DRY )); then
    "$PYTHON" -c "import sys; from pathlib import Path; from vigil_tools.harness import \
tiny_checkpoint; tiny_checkpoint(Path(sys.argv[1]))" "$WORK/tiny.pt" \
        || { echo "gpu-check: cannot build the dry run's checkpoint" >&2; exit 2; }
fi

echo "gpu-check: $([[ $DRY == 1 ]] && echo dry run on the CPU || echo GPU run), OUT=$OUT, budget ${BUDGET} s, steps ${STEPS}"
wanted install && step install "${LIMIT[install]}" bash -c install
wanted env && step env "${LIMIT[env]}" bash -c environment
wanted tests && step tests "${LIMIT[tests]}" "${TESTS[@]}"
for name in model compile offline pipeline pipeline-accel train train-fp32; do
    wanted "$name" || continue
    var=${name//-/_}
    declare -n args=${var^^}
    step "$name" "${LIMIT[$name]}" "${VIGIL[@]}" "${args[@]}" --out "$LOGS/$name.md"
done
summary
TOTAL=$(( $(date +%s) - T0 ))
echo "gpu-check: $( (( FAILED )) && echo FAILED || echo passed ) in ${TOTAL} s; summary: $OUT/summary.md"
exit "$FAILED"
