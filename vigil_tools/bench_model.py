"""`vigil bench model`: how fast the detector runs, and how far that is from the hardware's limit.

Everything printed is measured in the run that prints it:

* FLOPs per clip are counted by `torch.utils.flop_counter.FlopCounterMode` on the meta device
  (no memory, no compute; convolutions, matmuls and attention are counted as 2 x MACs, biases and
  element-wise ops are not);
* each configuration (model, batch, precision, `channels_last_3d`, `torch.compile`, batch norm
  folding, CUDA graphs, `cudnn.benchmark`) is timed `repeats` times after `warmup` untimed calls (compilation, cuDNN
  autotuning and allocator growth happen there) with the device synchronised around every call;
  the reported time is the MEDIAN of those samples, and every derived number (clips/s, TFLOP/s,
  fraction of peak, speed-up) is computed from the recorded samples by the table builder;
* the roofline is a square matmul timed in the same process just before (8192^3 on CUDA, 2048^3
  on the CPU), once per precision, so "fraction of peak" compares like with like.

The generic pieces (environment, Markdown/JSON tables) are `vigil_tools.kit`, timing and
medians `detector.timing`, shared with the pipeline, offline and training benchmarks.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import torch
from torch import nn

from detector.config import ModelConfig
from detector.errors import ConfigError
from detector.precision import autocast
from detector.runtime import resolve_device
from detector.timing import median, synchronize, time_samples
from train.synth import synth_clips

from .kit import BenchReport, Section, bench_env

log = logging.getLogger(__name__)

# A matmul this size saturates an H100's tensor cores (about 790 dense bf16 TFLOP/s measured)...
CUDA_MATMUL_N = 8192
# ...and this one a small CPU's vector units in well under a second.
CPU_MATMUL_N = 2048
PRECISION_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# =============================================================================== FLOPs
def count_flops(model: nn.Module, example: torch.Tensor) -> int:
    """FLOPs of one forward pass as counted by `FlopCounterMode` (2 x MACs per matmul/conv).

    Args:
        model: any module; it is not run for real when `example` is on the meta device.
        example: the input (any device, usually meta).
    Returns:
        Total FLOPs of `model(example)`.
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    # Grad mode stays on: FlopCounterMode's module tracker needs autograd nodes, and it also keeps
    # nn.MultiheadAttention off its fused inference kernel, whose op the counter does not know.
    with counter:
        model(example)
    return int(counter.get_total_flops())


def model_flops_per_clip(cfg: ModelConfig, frames: Optional[int] = None,
                         size: Optional[Sequence[int]] = None) -> int:
    """FLOPs per clip of the detector built from `cfg`, counted on the meta device.

    Args:
        cfg: the model config.
        frames, size: input T and (H, W); default `cfg.input`.
    Returns:
        FLOPs of one clip's forward pass.
    """
    from detector.model import build_model

    T = frames or cfg.input.frames
    H, W = size or cfg.input.size
    bare = dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, pretrained=None))
    with torch.device("meta"):
        model = build_model(bare).eval()
        x = torch.empty(1, 3, T, H, W)
    return count_flops(model, x)


# =============================================================================== roofline
@dataclass
class MatmulPeak:
    """A square matmul's measured throughput: the roofline a model's TFLOP/s is compared with."""
    precision: str
    n: int
    samples: list[float]

    @property
    def flops(self) -> int:
        return 2 * self.n ** 3

    @property
    def tflops(self) -> float:
        return self.flops / median(self.samples) / 1e12

    def row(self, device: str) -> dict[str, Any]:
        return {"device": device, "precision": self.precision, "n": self.n,
                "ms": median(self.samples) * 1e3, "TFLOP/s": self.tflops,
                "repeats": len(self.samples)}


def measure_matmul(device: torch.device, precision: str, n: int, repeats: int = 5,
                   warmup: int = 2) -> MatmulPeak:
    """Time an n x n x n matmul in `precision` on `device`.

    `precision` "tf32" is a float32 matmul with `torch.backends.cuda.matmul.allow_tf32` on for
    its duration: the roofline of fp32 convolutions, which cuDNN runs in TF32 by default.
    """
    if precision == "tf32":
        saved = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = True
        try:
            return dataclasses.replace(measure_matmul(device, "fp32", n, repeats, warmup),
                                       precision="tf32")
        finally:
            torch.backends.cuda.matmul.allow_tf32 = saved
    dtype = PRECISION_DTYPES[precision]
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    # On a GPU one 8192^3 matmul is ~1 ms: ten per sample keep launch and sync noise out.
    inner = 10 if device.type == "cuda" else 1
    with torch.inference_mode():
        samples = time_samples(lambda: torch.mm(a, b), repeats, warmup, device, inner=inner)
    return MatmulPeak(precision, n, samples)


# =============================================================================== model timing
@dataclass
class ModelRow:
    """One timed configuration of a model and the samples measured for it.

    Attributes:
        model: label ("seed", "cpu", ...).
        input: (T, H, W) of the clips.
        device: "cpu", "cuda:0", ...
        precision: "fp32", "bf16" or "fp16" (the latter two as autocast).
        batch: clips per forward pass.
        channels_last: `channels_last_3d` memory format for weights and input.
        compiled: wrapped in `torch.compile`.
        folded: batch norm folded into the convolutions (`detector.inference.fold_bn`).
        graphs: compiled in mode `reduce-overhead` (CUDA graphs), as `accel.cuda_graphs` runs.
        cudnn_benchmark: `torch.backends.cudnn.benchmark` (None on the CPU).
        samples: seconds per forward pass of `batch` clips, warm-up excluded.
        flops_per_clip: counted FLOPs of one clip.
        note: why a configuration was skipped or changed.
    """
    model: str
    input: tuple[int, int, int]
    device: str
    precision: str
    batch: int
    channels_last: bool = False
    compiled: bool = False
    cudnn_benchmark: Optional[bool] = None
    samples: list[float] = field(default_factory=list)
    flops_per_clip: int = 0
    note: str = ""
    runtime: str = "torch"
    folded: bool = False
    graphs: bool = False

    def key(self) -> tuple:
        return (self.model, self.input, self.device, self.precision, self.batch,
                self.channels_last, self.compiled, self.cudnn_benchmark, self.runtime,
                self.folded, self.graphs)


def model_table_rows(rows: Sequence[ModelRow], peaks: Mapping[str, MatmulPeak],
                     baselines: Optional[Mapping[tuple, ModelRow]] = None) -> list[dict[str, Any]]:
    """Derive every printed number from the recorded samples.

    Args:
        rows: measured configurations.
        peaks: precision -> the matmul measured in the same run.
        baselines: row key -> the row it is compared with (speed-up = baseline median / median).
    Returns:
        One dict per row with the columns of `MODEL_COLUMNS`.
    """
    out = []
    for r in rows:
        d: dict[str, Any] = {
            "model": r.model, "input": "x".join(map(str, r.input)), "device": r.device,
            "runtime": r.runtime,
            "precision": r.precision if r.precision == "fp32" else f"{r.precision} autocast",
            "batch": r.batch, "channels_last_3d": r.channels_last, "compile": r.compiled,
            "fold_bn": r.folded, "cuda_graphs": r.graphs,
            "cudnn.benchmark": r.cudnn_benchmark, "repeats": len(r.samples), "note": r.note,
            "GFLOP/clip": r.flops_per_clip / 1e9 if r.flops_per_clip else None}
        if r.samples:
            t = median(r.samples)
            tflops = r.flops_per_clip * r.batch / t / 1e12
            # fp32 convolutions on CUDA run in TF32 when cuDNN allows it: compare like with like.
            peak = peaks.get("tf32") if r.precision == "fp32" and "tf32" in peaks else None
            peak = peak or peaks.get(r.precision)
            d.update({"ms/batch": t * 1e3, "clips/s": r.batch / t, "TFLOP/s": tflops,
                      "% of matmul peak": (100.0 * tflops / peak.tflops) if peak else None})
            base = (baselines or {}).get(r.key())
            if base is not None and base.samples:
                d["speed-up"] = median(base.samples) / t
                d["vs"] = describe_difference(base, r)
        out.append(d)
    return out


MODEL_COLUMNS = ["model", "input", "device", "runtime", "precision", "batch", "channels_last_3d",
                 "compile", "fold_bn", "cuda_graphs", "cudnn.benchmark", "ms/batch", "clips/s", "GFLOP/clip", "TFLOP/s",
                 "% of matmul peak", "speed-up", "vs", "repeats", "note"]


def describe_difference(base: ModelRow, row: ModelRow) -> str:
    """What the baseline of a comparison differs in, e.g. `fp32` or `channels_last_3d off`."""
    parts = []
    if base.runtime != row.runtime:
        parts.append(base.runtime)
    if base.precision != row.precision:
        parts.append(base.precision)
    if base.batch != row.batch:
        parts.append(f"batch {base.batch}")
    if base.channels_last != row.channels_last:
        parts.append(f"channels_last_3d {'on' if base.channels_last else 'off'}")
    if base.compiled != row.compiled:
        parts.append(f"compile {'on' if base.compiled else 'off'}")
    if base.folded != row.folded:
        parts.append(f"fold_bn {'on' if base.folded else 'off'}")
    if base.graphs != row.graphs:
        parts.append(f"cuda_graphs {'on' if base.graphs else 'off'}")
    if base.cudnn_benchmark != row.cudnn_benchmark:
        parts.append(f"cudnn.benchmark {'on' if base.cudnn_benchmark else 'off'}")
    return ", ".join(parts) or "same"


@contextlib.contextmanager
def cudnn_benchmark(flag: Optional[bool]) -> Iterator[None]:
    """Set `torch.backends.cudnn.benchmark` for the block (None: leave it), then restore it."""
    previous = torch.backends.cudnn.benchmark
    if flag is not None:
        torch.backends.cudnn.benchmark = flag
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The shared autocast wrapper for a benchmark row's precision (fp32: none)."""
    return autocast(device, None if precision == "fp32" else PRECISION_DTYPES[precision])


def time_model(model: nn.Module, row: ModelRow, repeats: int, warmup: int,
               seed: int = 0) -> ModelRow:
    """Fill `row.samples` by timing `model` (already on the device, eval) in `row`'s configuration.

    The model is used as given for `channels_last=False` and converted (in place, as
    `nn.Module.to` does) for `channels_last=True`; the caller restores the format.
    """
    device = torch.device(row.device)
    T, H, W = row.input
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(row.batch, 3, T, H, W, generator=gen).to(device)
    fmt = torch.channels_last_3d if row.channels_last else torch.contiguous_format
    if row.folded:
        from detector.inference import fold_bn

        model = fold_bn(model)        # a copy: the caller's model keeps its batch norm
    model = model.to(memory_format=fmt)
    x = x.contiguous(memory_format=fmt)
    run: Callable[[torch.Tensor], Any] = model
    if row.compiled:
        # A fresh compile per row: no cache entries (or recompile budget) left by earlier rows.
        torch._dynamo.reset()
        run = torch.compile(model, dynamic=False,
                            mode="reduce-overhead" if row.graphs else None)
    with torch.inference_mode(), cudnn_benchmark(row.cudnn_benchmark if device.type == "cuda"
                                                 else None):
        def step() -> Any:
            with _autocast(device, row.precision):
                return run(x)
        row.samples = time_samples(step, repeats, warmup, device)
    return row


def onnx_available() -> Optional[str]:
    """None when the ONNX rows can run, else why not (which optional packages are missing)."""
    import importlib.util

    missing = [m for m in ("onnx", "onnxscript", "onnxruntime")
               if importlib.util.find_spec(m) is None]
    return f"optional packages not installed: {', '.join(missing)}" if missing else None


def export_for_bench(model: nn.Module, cfg: ModelConfig, shape: Sequence[int],
                     workdir: str | Path) -> Any:
    """Export `model` at clip size `shape` (T, H, W) once and load it on onnxruntime (CPU).

    Returns:
        a `detector.export.OnnxModel` with as many intra-op threads as torch uses.
    """
    from detector.export import OnnxModel, export_onnx

    T, H, W = shape
    sized = dataclasses.replace(cfg, input=dataclasses.replace(cfg.input, frames=T, size=[H, W]))
    path = export_onnx(model, sized, Path(workdir) / f"model-{T}x{H}x{W}.onnx")
    return OnnxModel(path, threads=torch.get_num_threads())


def time_onnx(runner: Callable[[torch.Tensor], Any], row: ModelRow, repeats: int, warmup: int,
              seed: int = 0) -> ModelRow:
    """Fill `row.samples` with onnxruntime's time for `row`'s batch.

    The same random clips as `time_model` (same seed), fp32: the comparison with the torch row
    of the same batch is like for like.
    """
    T, H, W = row.input
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(row.batch, 3, T, H, W, generator=gen)
    row.samples = time_samples(lambda: runner(x), repeats, warmup, "cpu")
    return row


# =============================================================================== precision check
@dataclass
class PrecisionCheck:
    """Low-precision outputs against fp32 on the same clips."""
    model: str
    precision: str
    clips: int
    max_abs_logits: float
    max_abs_boxes: float
    class_agreement: float
    min_box_iou: float

    def row(self) -> dict[str, Any]:
        return {"model": self.model, "precision": f"{self.precision} autocast vs fp32",
                "clips": self.clips, "max abs diff logits": self.max_abs_logits,
                "max abs diff boxes": self.max_abs_boxes,
                "class agreement": f"{self.class_agreement:.0%}",
                "min IoU of the class's box": self.min_box_iou}


PRECISION_COLUMNS = ["model", "precision", "clips", "max abs diff logits", "max abs diff boxes",
                     "class agreement", "min IoU of the class's box"]


def compare_outputs(ref: Mapping[str, torch.Tensor], other: Mapping[str, torch.Tensor]
                    ) -> tuple[float, float, float, float]:
    """fp32 outputs vs another run's on the same clips.

    Args:
        ref, other: {"pred_logits": (B, N, K+1), "pred_boxes": (B, N, 4) cxcywh}.
    Returns:
        (max |logits diff|, max |boxes diff|, share of clips whose best foreground class agrees,
         smallest IoU between the two runs' boxes for the reference's best class).
    """
    from torchvision.ops import box_iou

    from detector.box_ops import cxcywh_to_xyxy
    from detector.postprocess import class_scores

    la, lb = ref["pred_logits"].float(), other["pred_logits"].float()
    ba, bb = ref["pred_boxes"].float(), other["pred_boxes"].float()
    sa, boxa = class_scores(ref)
    sb, boxb = class_scores(other)
    ca, cb = sa.argmax(1), sb.argmax(1)
    idx = torch.arange(len(ca))
    ious = box_iou(cxcywh_to_xyxy(boxa[idx, ca]), cxcywh_to_xyxy(boxb[idx, ca])).diagonal()
    return (float((la - lb).abs().max()), float((ba - bb).abs().max()),
            float((ca == cb).float().mean()), float(ious.min()))


def check_precision(model: nn.Module, cfg: ModelConfig, name: str, device: torch.device,
                    precision: str, clips: torch.Tensor) -> PrecisionCheck:
    """Run `clips` in fp32 and in `precision` autocast and compare (see `compare_outputs`).

    Args:
        model: the detector on `device`, eval.
        cfg: its config (normalisation statistics).
        name: the model's label in the table.
        clips: (B, T, H, W, 3) uint8 RGB.
    """
    from detector.preprocess import normalize_clips

    x = normalize_clips(clips.to(device), cfg.input.mean, cfg.input.std)
    with torch.inference_mode():
        ref = model(x)
        with _autocast(device, precision):
            low = model(x)
    ref = {k: v.float().cpu() for k, v in ref.items()}
    low = {k: v.float().cpu() for k, v in low.items()}
    dl, db, agree, iou = compare_outputs(ref, low)
    return PrecisionCheck(name, precision, int(clips.shape[0]), dl, db, agree, iou)


# =============================================================================== the benchmark
@dataclass
class ModelBenchOptions:
    """What `vigil bench model` measures.

    Args:
        device: "auto", "cpu", "cuda", "cuda:N".
        quick: tiny sweep (batches 1 and 4, 2 repeats, 1 warm-up; seed model at 16x112x112 on
            the CPU; no torch.compile on the CPU).
        models: which of "seed" (`ModelConfig()` defaults) and "cpu" (`cpu-small.yaml`).
        batches: batch sizes of the sweep (default 1..64 in powers of two on CUDA, 1..16 on
            the CPU; --quick: 1, 4).
        repeats, warmup: timed samples and untimed calls per configuration.
        compile: include torch.compile rows (None = yes, except on the CPU in --quick).
        ablation_batch: batch of the channels_last/compile/cudnn.benchmark comparisons (default:
            the largest batch of the sweep; at most 8 on the CPU).
        cpu_config: training config whose `model:` section is the CPU model.
        seed_size: (H, W) of the seed model's clips (default 224x224; --quick on CPU 112x112).
        matmul_n: roofline matmul size (default 8192 on CUDA, 2048 on the CPU).
        onnx: include onnxruntime rows (fp32, CPU, each batch of the sweep, against torch fp32
            of the same batch; None = yes on the CPU when the optional packages are installed).
        ablations: which option comparisons to time, from `ABLATIONS` (None = all that apply:
            `compile` rows need `compile`, `no-cudnn-benchmark` needs CUDA).
        profile: also profile the ablations' plain row (low precision, ablation batch) with
            `torch.profiler` and tabulate the operators that take the most device time: where
            the time goes when a throughput target is missed.
    """
    device: str = "auto"
    quick: bool = False
    models: Sequence[str] = ("seed", "cpu")
    batches: Optional[Sequence[int]] = None
    repeats: Optional[int] = None
    warmup: Optional[int] = None
    compile: Optional[bool] = None
    ablation_batch: Optional[int] = None
    cpu_config: Optional[str] = None
    seed_size: Optional[Sequence[int]] = None
    matmul_n: Optional[int] = None
    onnx: Optional[bool] = None
    ablations: Optional[Sequence[str]] = None
    profile: bool = False
    command: Optional[str] = None


PROFILE_TOP = 15


def profile_rows(model: nn.Module, row: "ModelRow", steps: int = 3,
                 top: int = PROFILE_TOP) -> list[dict[str, Any]]:
    """The operators that take the most time in `steps` forward passes of `row`'s configuration.

    Uses `torch.profiler` (CPU and, on CUDA, device activity) after one untimed call. On the CPU
    the rows are operators and the time is self CPU time (not their children's); on CUDA the
    rows are the device's kernels, copies and memsets, and the time is device time.

    Returns:
        Up to `top` rows: operator, calls, self ms per pass, % of the passes' total self time.
    """
    from torch.profiler import ProfilerActivity, profile

    device = torch.device(row.device)
    cuda = device.type == "cuda"
    x = torch.zeros(row.batch, 3, *row.input, device=device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch.inference_mode(), cudnn_benchmark(row.cudnn_benchmark), \
            _autocast(device, row.precision):
        model(x)
        synchronize(device)
        with profile(activities=activities) as prof:
            for _ in range(steps):
                model(x)
            synchronize(device)

    def self_us(e: Any) -> float:
        if cuda:
            return float(getattr(e, "self_device_time_total", None)
                         or getattr(e, "self_cuda_time_total", 0.0))
        return float(e.self_cpu_time_total)

    # On CUDA only the device's own events (kernels, copies, memsets): an aten:: operator's
    # self device time is the sum of its kernels, so listing both would count them twice.
    events = [e for e in prof.key_averages() if self_us(e) > 0
              and (not cuda or getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA)]
    total = sum(self_us(e) for e in events) or 1.0
    events.sort(key=self_us, reverse=True)
    return [{"operator": short_kernel_name(e.key), "calls per pass": e.count / steps,
             "self ms per pass": self_us(e) / steps / 1e3,
             "% of time": 100.0 * self_us(e) / total} for e in events[:top]]


def short_kernel_name(name: str, width: int = 80) -> str:
    """A kernel's name without its template arguments and parameter list, at most `width` chars.

    `void at::native::vectorized_elementwise_kernel<8, ...>(int, ...)` -> `at::native::
    vectorized_elementwise_kernel<...>`; operator names (`aten::cudnn_convolution`) are kept.
    """
    name = name.removeprefix("void ")
    depth, out = 0, []
    for ch in name:
        if ch == "(" and depth == 0:
            break
        if ch == "<":
            if depth == 0:
                out.append("<...>")
            depth += 1
        elif ch == ">" and depth:
            depth -= 1
        elif depth == 0:
            out.append(ch)
    short = "".join(out).strip()
    return short if len(short) <= width else short[:width - 3] + "..."


# The option comparisons of `vigil bench model`, each timed against the plain low-precision row.
ABLATIONS = {"channels_last": dict(cl=True), "compile": dict(comp=True),
             "channels_last+compile": dict(cl=True, comp=True),
             "no-cudnn-benchmark": dict(bench=False), "fold_bn": dict(fold=True),
             "fold_bn+channels_last": dict(fold=True, cl=True),
             "fold_bn+channels_last+compile": dict(fold=True, cl=True, comp=True),
             "cuda_graphs": dict(fold=True, cl=True, comp=True, graphs=True)}


def default_cpu_config() -> Path:
    """The shipped `cpu-small.yaml` recipe (`configs/train/cpu-small.yaml` in a checkout)."""
    from train.recipes import CPU_RECIPE, recipe_path

    return recipe_path(CPU_RECIPE)


def load_cpu_model_config(path: Optional[str | Path] = None) -> ModelConfig:
    """The `model:` section of the CPU recipe (`configs/train/cpu-small.yaml` by default).

    Raises:
        ConfigError: the file is missing or its model section is invalid (naming the file).
    """
    path = Path(path) if path is not None else default_cpu_config()
    if not path.is_file():
        raise ConfigError(f"{path}: CPU model config not found (pass --cpu-config PATH)")
    from detector.schema import from_dict, load_yaml

    data = load_yaml(path)
    try:
        return from_dict(ModelConfig, data.get("model", {}), "model")
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _precisions(device: torch.device) -> list[str]:
    if device.type == "cuda":
        return ["fp32", "fp16", "bf16"] if torch.cuda.is_bf16_supported() else ["fp32", "fp16"]
    return ["fp32", "bf16"]


def run_model_bench(opts: ModelBenchOptions) -> BenchReport:
    """Measure the models; see the module docstring for what and how.

    Returns:
        The report (environment, roofline, FLOPs, throughput sweep, ablations, precision check).
    """
    from detector.model import build_model, count_parameters

    device = resolve_device(opts.device)
    cuda = device.type == "cuda"
    env = bench_env(device, opts.command)
    # The CPU's default stops at 16: a batch of 64 seed-model clips is over a minute per call on a
    # small CPU. --batches extends it.
    batches = list(opts.batches or ([1, 4] if opts.quick else
                                    [1, 2, 4, 8, 16, 32, 64] if cuda else [1, 2, 4, 8, 16]))
    repeats = opts.repeats or (2 if opts.quick else (20 if cuda else 5))
    warmup = opts.warmup if opts.warmup is not None else (1 if opts.quick else (5 if cuda else 2))
    if opts.quick:
        repeats = min(repeats, 2)
    do_compile = opts.compile if opts.compile is not None else (cuda or not opts.quick)
    ablation_batch = opts.ablation_batch or (max(batches) if cuda else min(max(batches), 8))
    unknown = [a for a in (opts.ablations or ()) if a not in ABLATIONS]
    if unknown:
        raise ConfigError(f"--ablations: unknown {', '.join(unknown)} ({', '.join(ABLATIONS)})")
    precisions = _precisions(device)
    low = "bf16" if "bf16" in precisions else precisions[-1]
    notes: list[str] = []
    if not cuda and not env.cpu_bf16:
        notes.append("this CPU has no native bf16 kernels: bf16 autocast is emulated (slow)")
    compile_why = ("--quick on the CPU: compiling the 3D CNN takes minutes on a small CPU"
                   if opts.quick and not cuda and opts.compile is None else "--no-compile given")
    if not do_compile:
        notes.append(f"torch.compile rows skipped ({compile_why})")
    onnx_missing = onnx_available()
    do_onnx = (not cuda and onnx_missing is None) if opts.onnx is None else opts.onnx
    if do_onnx and (cuda or onnx_missing):
        raise ConfigError("--onnx: " + ("the ONNX rows run on the CPU (onnxruntime's CPU "
                                        "provider); use --device cpu" if cuda else onnx_missing))
    if not do_onnx and not cuda:
        notes.append(f"onnxruntime rows skipped ({onnx_missing or '--no-onnx given'})")
    if cuda and torch.backends.cudnn.allow_tf32:
        notes.append("fp32 on CUDA: cuDNN convolutions run in TF32 (torch.backends.cudnn."
                     "allow_tf32, PyTorch's default), so fp32 rows' '% of matmul peak' divides "
                     "by the TF32 matmul (the roofline's tf32 row)")

    configs: list[tuple[str, ModelConfig, tuple[int, int, int]]] = []
    for name in opts.models:
        if name == "seed":
            cfg = ModelConfig()
            size = opts.seed_size or ([112, 112] if opts.quick and not cuda else cfg.input.size)
            if list(size) != list(cfg.input.size):
                notes.append(f"seed model timed at {size[0]}x{size[1]} (--quick on the CPU or "
                             f"--seed-size), not {cfg.input.size[0]}x{cfg.input.size[1]}")
            configs.append(("seed", cfg, (cfg.input.frames, int(size[0]), int(size[1]))))
        elif name == "cpu":
            cfg = load_cpu_model_config(opts.cpu_config)
            configs.append(("cpu", cfg, (cfg.input.frames, *map(int, cfg.input.size))))
        else:
            raise ConfigError(f"--models: unknown model {name!r} (seed, cpu)")

    # The roofline first, on an idle device.
    n = opts.matmul_n or (CUDA_MATMUL_N if cuda else CPU_MATMUL_N)
    roof = ["bf16", "fp16", "fp32"] if cuda else ["fp32", "bf16"]
    peaks = {p: measure_matmul(device, p, n, repeats=max(3, repeats), warmup=2)
             for p in roof if p in precisions}
    if cuda and torch.backends.cudnn.allow_tf32:
        peaks["tf32"] = measure_matmul(device, "tf32", n, repeats=max(3, repeats), warmup=2)
    for p, peak in peaks.items():
        log.info("matmul %d^3 %s: %.2f TFLOP/s", n, p, peak.tflops)

    flops_rows, sweep, ablation, checks = [], [], [], []
    profiles: list[tuple[str, list[dict[str, Any]]]] = []
    baselines: dict[tuple, ModelRow] = {}
    for name, cfg, shape in configs:
        T, H, W = shape
        flops = model_flops_per_clip(cfg, T, (H, W))
        torch.manual_seed(0)
        model = build_model(dataclasses.replace(
            cfg, backbone=dataclasses.replace(cfg.backbone, pretrained=None))).eval().to(device)
        flops_rows.append({"model": name, "backbone": cfg.backbone.name,
                           "input": f"{T}x{H}x{W}", "parameters": count_parameters(model),
                           "GFLOP/clip": flops / 1e9})
        bench_default = True if cuda else None

        def measure(batch: int, precision: str, cl: bool = False, comp: bool = False,
                    bench: Optional[bool] = bench_default, fold: bool = False,
                    graphs: bool = False) -> ModelRow:
            row = ModelRow(name, shape, str(device), precision, batch, cl, comp, bench,
                           flops_per_clip=flops, folded=fold, graphs=graphs)
            log.info("timing %s %s batch %d %s%s%s%s%s", name, "x".join(map(str, shape)), batch,
                     precision, " fold_bn" if fold else "", " channels_last_3d" if cl else "",
                     " compiled" if comp else "", " cuda_graphs" if graphs else "")
            try:
                time_model(model, row, repeats, warmup)
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                row.note = "out of device memory"
            finally:
                model.to(memory_format=torch.contiguous_format)
            return row

        # Batch sweep: every precision, default layout, no compile.
        by_key: dict[tuple[str, int], ModelRow] = {}
        for batch in batches:
            for precision in precisions:
                row = measure(batch, precision)
                by_key[(precision, batch)] = row
                if precision != "fp32" and ("fp32", batch) in by_key:
                    baselines[row.key()] = by_key[("fp32", batch)]
                sweep.append(row)
        # The exported graph on onnxruntime against torch fp32, batch by batch.
        if do_onnx:
            with tempfile.TemporaryDirectory(prefix="vigil-bench-onnx-") as tmp:
                runner = export_for_bench(model, cfg, shape, tmp)   # dynamic batch: once
                for batch in batches:
                    row = ModelRow(name, shape, str(device), "fp32", batch,
                                   flops_per_clip=flops, runtime="onnxruntime")
                    log.info("timing %s %s batch %d on onnxruntime", name,
                             "x".join(map(str, shape)), batch)
                    time_onnx(runner, row, repeats, warmup)
                    baselines[row.key()] = by_key[("fp32", batch)]
                    sweep.append(row)
        # Ablations at one batch in the low precision, each against the plain row.
        base = by_key[(low, ablation_batch)] if (low, ablation_batch) in by_key \
            else measure(ablation_batch, low)
        names = list(ABLATIONS) if opts.ablations is None else list(opts.ablations)
        variants = [ABLATIONS[a] for a in names
                    if ("comp" not in ABLATIONS[a] or do_compile)
                    and ("bench" not in ABLATIONS[a] or cuda)
                    and ("graphs" not in ABLATIONS[a] or cuda)]
        ablation.append(base)
        for v in variants:
            row = measure(ablation_batch, low, **v)
            baselines[row.key()] = base
            ablation.append(row)
        if not do_compile and any("compile" in a for a in names):
            # Stated in the table itself, not only in a note: the row exists, unmeasured.
            ablation.append(ModelRow(name, shape, str(device), low, ablation_batch,
                                     compiled=True, cudnn_benchmark=bench_default,
                                     flops_per_clip=flops, note=f"skipped: {compile_why}"))

        if opts.profile:
            log.info("profiling %s batch %d %s", name, ablation_batch, low)
            profiles.append((f"{name} {'x'.join(map(str, shape))} batch {ablation_batch} {low}",
                             profile_rows(model, base)))
        # Low precision against fp32 on rendered clips.
        clips = synth_clips(4 if opts.quick else 8, T, (H, W))
        for precision in precisions:
            if precision != "fp32":
                checks.append(check_precision(model, cfg, name, device, precision, clips))
        del model
        if cuda:
            torch.cuda.empty_cache()

    report = BenchReport("vigil bench model", env)
    report.sections.append(Section(
        f"Roofline: {n}x{n}x{n} matmul", ["device", "precision", "n", "ms", "TFLOP/s", "repeats"],
        [p.row(str(device)) for p in peaks.values()],
        ["FLOPs = 2 n^3; median of the samples; the models' '% of matmul peak' divides by the "
         "matmul of their own precision."]))
    report.sections.append(Section(
        "FLOPs per clip (torch.utils.flop_counter, meta device)",
        ["model", "backbone", "input", "parameters", "GFLOP/clip"], flops_rows,
        ["convolutions, matmuls and attention count 2 FLOPs per multiply-add; element-wise ops "
         "and biases are not counted"]))
    report.sections.append(Section(
        "Throughput by batch and precision", MODEL_COLUMNS,
        model_table_rows(sweep, peaks, baselines),
        notes + ["ms/batch: median forward time of one batch of float clips already on the "
                 "device (normalisation and copy are the pipeline benchmark's); clips/s = "
                 "batch / ms; speed-up vs the torch fp32 row of the same batch, same run; "
                 "onnxruntime rows: the model exported by `vigil export --format onnx` at this "
                 "clip size, CPU provider, as many threads as torch"]))
    report.sections.append(Section(
        f"Options at batch {ablation_batch}, {low}", MODEL_COLUMNS,
        model_table_rows(ablation, peaks, baselines),
        ["speed-up vs the row without the option (its 'vs' column), same run"]))
    report.sections.append(Section(
        "Low precision against fp32 (rendered synthetic clips, random-init weights)",
        PRECISION_COLUMNS, [c.row() for c in checks],
        ["class agreement: best foreground class of each clip; IoU: the two runs' boxes of "
         "the fp32 run's best class"]))
    for title, rows in profiles:
        report.sections.append(Section(
            f"Profile: {title} (torch.profiler, top {PROFILE_TOP} operators by self time)",
            ["operator", "calls per pass", "self ms per pass", "% of time"], rows,
            ["CPU: operators, self CPU time; CUDA: kernels, device time; mean of 3 passes after "
             "one untimed pass"]))
    return report
