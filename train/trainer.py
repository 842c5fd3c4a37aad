"""A training run: data, model, optimiser, schedule, checkpoints, resume.

`fit(cfg, data_root, out_dir)` writes into `out_dir`:
  * `metrics.jsonl`: one JSON object per epoch: epoch, lr, train loss terms, val metrics, seconds;
  * `last.pt`: the model after the latest epoch, with optimiser, scheduler, scaler, epoch and RNG
    state, so an interrupted run continues where it stopped (`resume=True`, the default);
  * `best.pt`: the model of the epoch with the best validation det-acc@0.5 (ties: lower loss),
    or with `train.select_by: reference` the highest video accuracy + 0.2 x det-acc; only
    validated epochs (`train.val_every`) are candidates;
  * `config.yaml`: the full training config of the run.
Under `torchrun` (several processes, `train.distributed`) the model is wrapped in
`DistributedDataParallel`, each rank trains on its own shard of the balanced batches, validation
is split between the ranks and gathered, and only rank 0 writes these files.
Every checkpoint is a plain-data file (`detector.checkpoint`), loadable with `weights_only=True`,
that carries the model config, class names, input spec and parameter count, so `vigil eval` and
the daemon need nothing else.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from detector.checkpoint import save_checkpoint
from detector.errors import CheckpointError, ConfigError, DataError
from detector.init_weights import initialise
from detector.losses import build_criterion
from detector.runtime import resolve_device
from detector.model import build_model, count_parameters
from detector.schema import to_dict

from . import distributed as D
from . import engine
from . import metrics as M
from . import mil
from .cache import ClipCache
from .config import TrainConfig, default_cache_dir
from .dataset import ClipDataset, VideoRecord, collate, scan_dataset_lenient, split_records
from .features import FrameFeatureCache
from .sampler import BalancedBatchSampler

log = logging.getLogger(__name__)

LAST, BEST, HISTORY = "last.pt", "best.pt", "metrics.jsonl"
PREDICTIONS = "val_predictions.jsonl"


# --------------------------------------------------------------------------- seeding
def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _worker_init(worker_id: int) -> None:
    # torch gives each worker its own seed (base seed + id); derive numpy's and random's from it
    # so no two workers share a stream. Samples themselves are seeded by (seed, epoch, index).
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def rng_state() -> dict[str, Any]:
    """The global generators' states as plain data (tensors, ints, lists) for a checkpoint."""
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)),
                       "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                       "cached_gaussian": float(np_state[4])},
             "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` saved."""
    torch.set_rng_state(state["torch"].cpu())
    npst = state["numpy"]
    np.random.set_state(("MT19937", npst["keys"].numpy().astype(np.uint32), int(npst["pos"]),
                         int(npst["has_gauss"]), float(npst["cached_gaussian"])))
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(x) for x in internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([t.cpu() for t in state["cuda"]])


# --------------------------------------------------------------------------- data
class EpochSharedDataset(Dataset):
    """A dataset view whose epoch is read from shared memory at every item.

    `ClipDataset` seeds augmentation with its `epoch`; DataLoader workers hold copies made when
    they started, so with persistent workers (kept alive across epochs, which keeps their clip
    cache fingerprints and saves a fork per epoch) a plain attribute set in the main process
    would never reach them. A `multiprocessing.Value` is inherited by the workers and read here.
    """

    def __init__(self, dataset: ClipDataset) -> None:
        import multiprocessing

        self.dataset = dataset
        self._epoch = multiprocessing.get_context().Value("i", 0, lock=False)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.value = int(epoch)
        self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        if self.dataset.epoch != self._epoch.value:
            self.dataset.set_epoch(self._epoch.value)
        return self.dataset[index]


def make_loaders(cfg: TrainConfig, train_records: Sequence[VideoRecord],
                 val_records: Sequence[VideoRecord], device: torch.device,
                 input_cfg: Any, ctx: D.DistContext | None = None,
                 model: torch.nn.Module | None = None
                 ) -> tuple[DataLoader, DataLoader | None, EpochSharedDataset,
                            BalancedBatchSampler]:
    """The training loader (balanced batches, augmentation) and the validation loader.

    With a distributed `ctx` the training loader yields this rank's share of the balanced
    batches and the validation loader this rank's share of the videos (`D.ShardSampler`).
    With `data.frame_features` both serve `model`'s frozen frame features (`train.features`).
    """
    ctx = ctx or D.DistContext(device=device)
    cache_dir = cfg.data.resolved_cache_dir()
    cache = ClipCache(cache_dir) if cache_dir is not None else None
    features = frame_feature_cache(cfg, model, cache, device)
    window = cfg.data.window_seconds
    train_ds = EpochSharedDataset(ClipDataset(train_records, input_cfg, augment=cfg.augment,
                                              cache=cache, seed=cfg.train.seed, window_s=window,
                                              train=True, margin_s=cfg.data.segment_margin_s,
                                              weak_positives=cfg.data.weak_positives,
                                              hard_negatives=cfg.data.hard_negatives,
                                              features=features))
    sampler = BalancedBatchSampler(sampler_positives(train_ds.dataset, cfg.data.positive),
                                   cfg.data.batch_size, seed=cfg.train.seed, rank=ctx.rank,
                                   world_size=ctx.world_size)
    workers = cfg.data.num_workers
    common = dict(num_workers=workers, collate_fn=collate, worker_init_fn=_worker_init,
                  persistent_workers=workers > 0, pin_memory=device.type == "cuda")
    # Own generators for the workers' base seeds: drawing them from the global generator would
    # make the dropout stream depend on when loaders were created, and break exact resume.
    train_loader = DataLoader(train_ds, batch_sampler=sampler,
                              generator=torch.Generator().manual_seed(cfg.train.seed), **common)
    val_loader = None
    if val_records:
        val_ds = ClipDataset(val_records, input_cfg, augment=None, cache=cache,
                             seed=cfg.train.seed, window_s=window, train=False,
                             features=features)
        shard = D.ShardSampler(len(val_ds), ctx.rank, ctx.world_size) if ctx.enabled else None
        val_loader = DataLoader(val_ds, batch_size=cfg.data.batch_size, shuffle=False,
                                sampler=shard,
                                generator=torch.Generator().manual_seed(cfg.train.seed + 1),
                                **common)
    return train_loader, val_loader, train_ds, sampler


# Pixel augmentations that stored frame features cannot have (`train.features`).
_PIXEL_ONLY = ("color_jitter", "resized_crop", "blur", "jpeg", "low_light", "greyscale", "shake",
               "frame_drop", "timestamp")


def frame_feature_cache(cfg: TrainConfig, model: torch.nn.Module | None,
                        clips: ClipCache | None, device: torch.device
                        ) -> FrameFeatureCache | None:
    """The frozen-feature cache `data.frame_features` asks for, or None.

    Raises:
        ConfigError: `data.frame_features` with a model that has no frozen 2D stages, or under
            DDP (each rank would compute the same features).
    """
    if not cfg.data.frame_features:
        return None
    if model is None or not getattr(model, "caches_frames", False):
        raise ConfigError("data.frame_features: the model has no frozen 2D stages to compute "
                          "once (it needs model.backbone.name: mobilenet_v2 and "
                          "model.backbone.freeze: all, or another stage)")
    if D.env_world_size() > 1:
        raise ConfigError("data.frame_features: not under torchrun; train with one process")
    ignored = [k for k in _PIXEL_ONLY if cfg.augment.enabled and getattr(cfg.augment, k, 0)]
    if ignored:
        log.warning("data.frame_features: augment.%s cannot change stored features and is not "
                    "applied (only hflip and temporal_jitter are)", ", augment.".join(ignored))
    where = (Path(os.path.expanduser(cfg.data.cache_dir)) / "features" if cfg.data.cache_dir
             else default_cache_dir("features"))
    return FrameFeatureCache(model, clips, where, device)


def sampler_positives(dataset: ClipDataset, positive: str = "action") -> list[bool]:
    """Per sample, whether the balanced sampler counts it as a positive (`data.positive`).

    `action`: the sample holds an action (`ClipDataset.is_positive`: a window outside every
    labelled segment of a positive video is a negative). `annotated`: the report's Algorithm 1
    line 2 read literally, "indices of samples with annotations": the sample's video has any
    annotation.
    """
    if positive == "annotated":
        return [bool(dataset.records[s.record].is_positive) for s in dataset.samples]
    return list(dataset.is_positive)


def load_records(cfg: TrainConfig, data_root: str | Path,
                 require_positives: bool = True) -> list[VideoRecord]:
    """The dataset's usable records under the config's class names and layout options.

    A video that cannot be decoded or a bad label row is logged and left out (see
    `scan_dataset_lenient`); the rest of the set still trains.
    """
    records, _ = scan_dataset_lenient(
        data_root, num_classes=len(cfg.model.class_names), require_positives=require_positives,
        class_names=cfg.model.class_names, class_folders=cfg.data.class_folders,
        label_id_base=cfg.data.label_id_base, allow_outside_root=cfg.data.allow_outside_root)
    return records


def as_roots(data_root: str | Path | Sequence[str | Path]) -> list[Path]:
    """One dataset path or several, as a list of paths."""
    if isinstance(data_root, (str, Path)):
        return [Path(data_root)]
    return [Path(r) for r in data_root]


def load_splits(cfg: TrainConfig, data_roots: Sequence[str | Path],
                splits: Sequence[str] = ("train", "val"),
                require_positives: bool = True) -> list[list[VideoRecord]]:
    """The records of each of `splits` of one or several datasets (each scanned once).

    Each dataset is split on its own (its `splits/` files, layout splits or grouped stratified
    split), so mixing a synthetic set with real footage keeps each one's validation videos.
    Stems that two datasets share get their dataset's folder name in front (`name:stem`).

    Raises:
        DataError: no usable video in a dataset, or (with `require_positives`) no positive
            among the training videos.
    """
    out: list[list[VideoRecord]] = [[] for _ in splits]
    seen: set[str] = set()
    for root in as_roots(data_roots):
        records = load_records(cfg, root, require_positives=False)
        for part, split in zip(out, splits):
            for r in split_records(records, root, split, cfg.data.val_fraction,
                                   cfg.data.split_seed):
                if r.stem in seen:
                    r = dataclasses.replace(r, stem=f"{root.name}:{r.stem}")
                seen.add(r.stem)
                part.append(r)
    if require_positives and "train" in splits:
        train = out[list(splits).index("train")]
        if train and not any(r.is_positive for r in train):
            raise DataError(f"{', '.join(map(str, as_roots(data_roots)))}: no training video "
                            f"has an action label (no positives): a detector cannot learn "
                            f"from this")
    return out


def check_classes(records: Sequence[VideoRecord], class_names: Sequence[str],
                  where: str | Path) -> None:
    """Refuse a training set that shows one kind of clip only; warn about a missing class.

    A detector learns what separates the classes it is shown. Clips of a single action and
    nothing else (no clip without an action, no time segment to cut quiet windows from) teach it
    that the action is always there: every window of a camera would alarm. A class of the
    model that no clip shows is only ever trained towards "not this", so its scores fall.

    Raises:
        DataError: every training clip holds the same action and there is no quiet footage.
    """
    shown = Counter(class_names[int(c)] for r in records for c in set(r.annotations[:, 0])
                    if 0 <= int(c) < len(class_names))
    quiet = sum(not r.is_positive or r.has_segments for r in records)
    if not quiet and len(shown) <= 1:
        only = next(iter(shown), "an action")
        raise DataError(
            f"{where}: every training clip is labelled {only}, and none shows ordinary "
            f"activity: trained on one class only, the detector would call every window a "
            f"{only}. Add clips from the same cameras where nothing happens (label none), or "
            f"label the seconds of the action (start_s,end_s) so quiet windows can be cut")
    if not quiet:
        log.warning("%s: no training clip without an action: the model learns that something "
                    "always happens and will raise more false alarms; add clips of ordinary "
                    "activity from the same cameras (label none)", where)
    missing = [c for c in class_names if c not in shown]
    if missing:
        log.warning("%s: no training clip of %s: the model's %s output is only ever trained "
                    "towards 'not %s', so it will find fewer of them than the model it starts "
                    "from; add such clips to keep it", where, " or ".join(missing),
                    "/".join(missing), " or ".join(missing))


def median_clip_seconds(records: Sequence[VideoRecord]) -> float | None:
    """Median duration (frames / fps) of the videos with a known frame rate, else None."""
    durations = [r.frames / r.fps for r in records if r.fps and r.fps > 0]
    return float(statistics.median(durations)) if durations else None


# --------------------------------------------------------------------------- schedule
def lr_lambda(cfg: TrainConfig, steps_per_epoch: int):
    """The multiplier of the base lr at scheduler step `t` (per step or per epoch).

    Linear warm-up from 1% over `warmup_epochs`, then the report's eq. 15 cosine from `lr` to
    `lr_min` over the rest of the run.
    """
    o = cfg.optim
    per = steps_per_epoch if o.schedule == "step" else 1
    total = max(o.epochs * per, 1)
    warm = o.warmup_epochs * per
    floor = o.lr_min / o.lr

    def factor(t: int) -> float:
        if t < warm:
            return 0.01 + 0.99 * t / warm
        span = max(total - warm, 1)
        progress = min((t - warm) / span, 1.0)
        return floor + 0.5 * (1.0 - floor) * (1.0 + math.cos(math.pi * progress))

    return factor


# --------------------------------------------------------------------------- the run
def fit(cfg: TrainConfig, data_root: str | Path | Sequence[str | Path], out_dir: str | Path,
        resume: bool = True, progress: bool = True) -> dict[str, Any]:
    """Train on one or several datasets, each with its own (or a grouped, stratified) split.

    Args:
        cfg: the training config.
        data_root: dataset folder(s) or CSV manifest(s), any layout `train.layouts` reads;
            several are trained on together (e.g. a synthetic boxed set and real class-only
            footage).
        out_dir: run folder (created); an existing `last.pt` there is resumed when `resume`.
        resume: continue from `out_dir/last.pt` when it exists.
        progress: show progress bars.
    Returns:
        See `fit_records`.
    """
    train_records, val_records = load_splits(cfg, data_root)
    return fit_records(cfg, train_records, val_records, out_dir, resume=resume,
                       progress=progress, data_root=", ".join(map(str, as_roots(data_root))))


def fit_records(cfg: TrainConfig, train_records: Sequence[VideoRecord],
                val_records: Sequence[VideoRecord], out_dir: str | Path, resume: bool = True,
                progress: bool = True, data_root: str | Path | None = None) -> dict[str, Any]:
    """Train on given train/validation records (what `fit` and cross-validation share).

    Under torchrun (`WORLD_SIZE` > 1) every rank calls this with the same arguments; see
    `train.distributed`. A single process joins no process group.

    Returns:
        {"out_dir", "parameters", "epochs", "best_epoch", "best" (full val metrics of the best
         epoch, without per-video entries), "last" (the same for the last epoch), "history"
         (the `metrics.jsonl` records), "rank", "world_size", "weights_sha1" (this rank's
         final parameters and buffers, `D.state_digest`: the same on every rank)}.
    Raises:
        DataError: no training videos, or none with an action.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not train_records:
        raise DataError(f"{data_root or out_dir}: the training split is empty")
    check_classes(train_records, cfg.model.class_names, data_root or out_dir)
    seed_everything(cfg.train.seed)
    if cfg.train.deterministic:
        # The reference implementation's setting: reproducible convolutions, no autotuning.
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    with D.session(resolve_device(cfg.train.device, "train.device")) as ctx:
        return _fit(cfg, ctx, train_records, val_records, out_dir, resume, progress)


def _fit(cfg: TrainConfig, ctx: D.DistContext, train_records: Sequence[VideoRecord],
         val_records: Sequence[VideoRecord], out_dir: Path, resume: bool,
         progress: bool) -> dict[str, Any]:
    """`fit_records` on one rank (or the only process), once the process group is joined."""
    device = ctx.device
    main = ctx.is_main
    progress = progress and main
    amp = engine.resolve_amp(cfg.train.amp, device)

    model_cfg = cfg.model
    if model_cfg.input.clip_seconds is None and cfg.data.window_seconds:
        # Windows of a fixed length are what training shows the model: the daemon's must match.
        model_cfg = dataclasses.replace(model_cfg, input=dataclasses.replace(
            model_cfg.input, clip_seconds=float(cfg.data.window_seconds)))
    if model_cfg.input.clip_seconds is None:
        seconds = median_clip_seconds(train_records)
        model_cfg = dataclasses.replace(
            model_cfg, input=dataclasses.replace(model_cfg.input, clip_seconds=seconds))
        log.info("clip_seconds = %s (median duration of the %d training videos)",
                 "unknown" if seconds is None else f"{seconds:.2f}", len(train_records))
    cfg = dataclasses.replace(cfg, model=model_cfg)
    if main:
        _write_config(cfg, out_dir / "config.yaml")

    model = build_model(model_cfg)
    init_from = initialise(model, model_cfg, cfg.train.init)
    model = model.to(device)
    n_params = count_parameters(model)
    log.info("model: %s backbone, %s parameters (%s trainable); device %s, amp %s",
             model_cfg.backbone.name, f"{n_params:,}",
             f"{count_parameters(model, trainable_only=True):,}", device,
             "off" if amp is None else str(amp).replace("torch.", ""))
    aux_layers = model_cfg.decoder_layers - 1 if model_cfg.aux_loss else 0
    criterion = build_criterion(cfg.loss, model_cfg.num_classes, aux_layers).to(device)
    loss_autocast = bool(cfg.train.loss_autocast and amp is not None)
    criterion.cast_float = not loss_autocast
    train_loader, val_loader, train_ds, sampler = make_loaders(
        cfg, train_records, val_records, device, model_cfg.input, ctx, model)
    log.info("data: %d training videos (%d with an action: %d with boxes, %d class-only; %d "
             "with time segments), %d training samples, %d validation videos; %d steps per "
             "epoch", len(train_records), sum(r.is_positive for r in train_records),
             sum(r.has_boxes for r in train_records),
             sum(r.is_positive and not r.has_boxes for r in train_records),
             sum(r.has_segments for r in train_records), len(train_ds), len(val_records),
             len(sampler))
    net: torch.nn.Module = model
    if ctx.enabled:
        # Every rank built the same initial weights from the seed; DDP also copies rank 0's.
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
        log.info("DDP: %d ranks, %d steps per epoch on each, %d clips per step in all",
                 ctx.world_size, len(sampler), cfg.data.batch_size * ctx.world_size)

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas),
                                  weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, len(sampler)))
    scaler = (torch.amp.GradScaler("cuda") if device.type == "cuda" and amp == torch.float16
              else None)

    start_epoch, best_key, best_epoch = 0, None, 0
    history: list[dict[str, Any]] = []
    last_path = out_dir / LAST
    if resume and last_path.is_file():
        _check_same_recipe(last_path, cfg)
        _check_same_data(last_path, data_key(train_records, val_records))
        start_epoch, best_key, best_epoch = _resume(last_path, model, optimizer, scheduler,
                                                    scaler, device)
        if main:
            history = _trim_history(out_dir / HISTORY, start_epoch)
        log.info("resuming %s after epoch %d of %d", last_path, start_epoch, cfg.optim.epochs)
    elif main and (out_dir / HISTORY).exists():
        (out_dir / HISTORY).unlink()
    # No rank may start (and rank 0 write last.pt) before every rank has read the old one, and
    # the other ranks read the history once rank 0 has trimmed it.
    D.barrier(ctx)
    if start_epoch and not main:
        history = _trim_history(out_dir / HISTORY, start_epoch, write=False)

    meta_common = {"train_config": to_dict(cfg), "clip_seconds": model_cfg.input.clip_seconds,
                   "init_from": init_from, "data_key": data_key(train_records, val_records)}
    best_metrics = last_metrics = None
    for epoch in range(start_epoch + 1, cfg.optim.epochs + 1):
        t0 = time.monotonic()
        sampler.set_epoch(epoch)
        train_ds.set_epoch(epoch)
        if ctx.enabled:
            # Each rank its own dropout stream, a function of (seed, rank, epoch) so that a
            # resumed run continues it (the checkpoint holds rank 0's generators only).
            seed_everything(int(np.random.SeedSequence(
                [cfg.train.seed, ctx.rank, epoch]).generate_state(1)[0]))
        if cfg.data.weak_positives == "mil":
            picked = mil.choose_bag_windows(net, train_ds.dataset, device, amp)
            log.info("epoch %d: MIL chose the best of %d windows for %d bags (mean position "
                     "%.2f, mean score %.3f)", epoch, picked["windows"], picked["bags"],
                     picked["mean_position"], picked["mean_score"])
        train_stats = engine.train_one_epoch(
            net, criterion, train_loader, optimizer,
            scheduler if cfg.optim.schedule == "step" else None, device, epoch,
            cfg.optim.grad_clip, amp, scaler, progress=progress, log_every=cfg.train.log_every,
            loss_autocast=loss_autocast)
        train_stats = D.average_stats(train_stats, ctx, summed=_SUMMED_STATS)
        D.sync_buffers(model, ctx)
        lr = optimizer.param_groups[0]["lr"]
        if cfg.optim.schedule == "epoch":
            scheduler.step()
        val_metrics: dict[str, Any] = {}
        validate = val_loader is not None and is_validation_epoch(epoch, cfg)
        if validate:
            criterion.cast_float = True     # validation computes its loss in float32
            # A long clip is judged by its best window, as the daemon alerts on any window.
            mil.choose_bag_windows(net, val_loader.dataset, device, amp)
            val_metrics, val_preds = _validate(model, criterion, val_loader, cfg, ctx, amp)
            criterion.cast_float = not loss_autocast
            val_metrics.pop("per_video", None)
            if main and epoch == cfg.optim.epochs:
                _write_predictions(out_dir / PREDICTIONS, val_preds, val_records,
                                   model_cfg.class_names)
        record = {"epoch": epoch, "lr": lr, "train": train_stats,
                  "val": M.to_jsonable(val_metrics), "seconds": time.monotonic() - t0}
        history.append(record)
        if main:
            with open(out_dir / HISTORY, "a", encoding="utf-8") as f:
                f.write(json.dumps(M.to_jsonable(record)) + "\n")

        if validate or val_loader is None:
            key = _selection_key(val_metrics, train_stats, cfg.train.select_by)
            improved = best_key is None or key > best_key
        else:       # not a validation epoch (train.val_every): best.pt stays as it is
            improved = False
        if improved:
            best_key, best_epoch, best_metrics = key, epoch, val_metrics
        last_metrics = val_metrics
        scalars = M.scalar_metrics(val_metrics)
        meta = dict(meta_common, epoch=epoch, metrics=M.to_jsonable(scalars))
        if not main:
            continue
        if improved:
            save_checkpoint(out_dir / BEST, model, model_cfg, **meta)
        save_checkpoint(last_path, model, model_cfg, **meta,
                        optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                        scaler=scaler.state_dict() if scaler is not None else None,
                        rng=rng_state(), best_key=None if best_key is None else list(best_key),
                        best_epoch=best_epoch)
        log.info("epoch %d/%d: lr %.2e, train loss %.4f (targets: %d boxed, %d class-only; %d "
                 "negative clips), val det-acc %s, video acc %s, mIoU %s, %.1fs%s", epoch,
                 cfg.optim.epochs, lr, train_stats["loss"], train_stats["targets_boxed"],
                 train_stats["targets_boxless"], train_stats["clips_negative"],
                 _fmt(val_metrics.get("det_acc")), _fmt(val_metrics.get("video_acc")),
                 _fmt(val_metrics.get("miou")), record["seconds"], " (best)" if improved else "")

    if best_metrics is None or last_metrics is None:
        # Resumed a finished run: report from the stored history.
        best_metrics = next((h["val"] for h in history if h["epoch"] == best_epoch),
                            history[-1]["val"] if history else {})
        last_metrics = history[-1]["val"] if history else {}
    digest = D.state_digest(model)
    digests = D.gather_object(digest, ctx)      # also: rank 0's files are complete now
    if ctx.enabled and digests is not None:
        if len(set(digests)) == 1:
            log.info("DDP: the %d ranks end with the same weights (sha1 %s)", ctx.world_size,
                     digest[:12])
        else:
            log.error("DDP: the ranks end with different weights (sha1 %s); the checkpoints "
                      "hold rank 0's", ", ".join(d[:12] for d in digests))
    D.barrier(ctx)
    return {"out_dir": str(out_dir), "parameters": n_params, "epochs": cfg.optim.epochs,
            "best_epoch": best_epoch, "best": best_metrics, "last": last_metrics,
            "history": history, "rank": ctx.rank, "world_size": ctx.world_size,
            "weights_sha1": digest}


# Training statistics that are counts: added up over the ranks (the rest are averaged).
_SUMMED_STATS = ("targets_boxed", "targets_boxless", "clips_negative")


def _validate(model: torch.nn.Module, criterion: Any, loader: DataLoader, cfg: TrainConfig,
              ctx: D.DistContext, amp: torch.dtype | None
              ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """`engine.evaluate` over the whole validation set, split between the ranks.

    Each rank predicts its shard (`D.ShardSampler`); rank 0 gathers the shards, puts the videos
    back in dataset order and computes the metrics once, over every video once; every rank
    gets rank 0's metrics. Returns (metrics, predictions); the predictions only on rank 0
    (empty elsewhere).
    """
    names, score, iou = cfg.model.class_names, cfg.train.score_threshold, cfg.train.iou_threshold
    if not ctx.enabled:
        return engine.evaluate(model, criterion, loader, ctx.device, names, score, amp, iou)
    start = time.monotonic()
    preds, sums = engine.predict(model, criterion, loader, ctx.device, amp)
    shards = D.gather_object((preds, sums), ctx)
    metrics: dict[str, Any] = {}
    preds = []
    if shards is not None:
        total: dict[str, float] = {}
        for _, part in shards:
            for k, v in part.items():
                total[k] = total.get(k, 0.0) + v
        metrics, preds = engine.summarise(D.interleave([p for p, _ in shards]), total,
                                          criterion, names, score, iou)
        metrics.pop("per_video", None)
        metrics["seconds"] = time.monotonic() - start
    metrics = D.broadcast_object(metrics, ctx)
    return metrics, preds


def is_validation_epoch(epoch: int, cfg: TrainConfig) -> bool:
    """Whether epoch `epoch` (1-based) is validated: every `train.val_every`-th epoch, and the
    last one."""
    return epoch % cfg.train.val_every == 0 or epoch == cfg.optim.epochs


def _selection_key(val: dict[str, Any], train_stats: dict[str, float],
                   select_by: str = "det_acc") -> tuple[float, float]:
    """Higher is better.

    `det_acc` (Vigil): det-acc first (video accuracy where the validation videos have no boxes,
    so det-acc is undefined), then lower validation loss (train loss without val).
    `reference` (the reference implementation): video accuracy + 0.2 x det-acc (an undefined
    term counts 0); a tie keeps the earlier epoch (the second element is constant).
    """
    def defined(v: Any) -> bool:
        return v is not None and not (isinstance(v, float) and math.isnan(v))

    if select_by == "reference":
        video = float(val["video_acc"]) if defined(val.get("video_acc")) else 0.0
        det = float(val["det_acc"]) if defined(val.get("det_acc")) else 0.0
        return (video + 0.2 * det, 0.0)

    det = val.get("det_acc")
    if not defined(det):
        det = val.get("video_acc")
    det = float(det) if defined(det) else -1.0
    loss = val.get("loss", train_stats.get("loss", math.inf))
    loss = math.inf if loss is None or math.isnan(loss) else float(loss)
    return (det, -loss)


def _resume(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            scheduler: Any, scaler: Any, device: torch.device
            ) -> tuple[int, tuple[float, float] | None, int]:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(data["state_dict"])
        opt_state = dict(data["optimizer"])
        # Checkpoints store mappings with string keys; the optimiser indexes its state by int.
        opt_state["state"] = {int(k): v for k, v in opt_state["state"].items()}
        optimizer.load_state_dict(opt_state)
        scheduler.load_state_dict(data["scheduler"])
        if scaler is not None and data.get("scaler"):
            scaler.load_state_dict(data["scaler"])
        set_rng_state(data["rng"])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot resume from it ({exc}); move it away to start "
                              "afresh, or pass a new --out folder") from None
    # Optimiser moments follow the parameters' device.
    for state in optimizer.state.values():
        for k, v in state.items():
            if torch.is_tensor(v) and k != "step":
                state[k] = v.to(device)
    best_key = tuple(data["best_key"]) if data.get("best_key") is not None else None
    return int(data["epoch"]), best_key, int(data.get("best_epoch", 0))


# Settings that may change between an interrupted run and its resumption: the length of the run
# (to extend it), where and how fast it runs. Anything else would silently mix two recipes.
_RESUMABLE = {"optim.epochs", "train.device", "train.log_every", "data.num_workers",
              "data.cache", "data.cache_dir", "model.input.clip_seconds"}


def _check_same_recipe(path: Path, cfg: TrainConfig) -> None:
    """Refuse to resume `path` with a config that differs in anything but `_RESUMABLE`."""
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True).get("train_config")
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read it to resume ({exc}); move it away or use "
                              "another --out folder") from None
    if not isinstance(stored, dict):
        return

    def flat(d: Any, prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            key = f"{prefix}{k}"
            out.update(flat(v, key + ".") if isinstance(v, dict) else {key: v})
        return out

    old, new = flat(stored), flat(M.to_jsonable(to_dict(cfg)))
    defaults = flat(M.to_jsonable(to_dict(TrainConfig())))
    for key in sorted(set(old) | set(new)):
        if key in _RESUMABLE:
            continue
        a, b = old.get(key), new.get(key)
        if key not in old and key in defaults:
            a = defaults[key]   # a key added since that run was started: it ran the default
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and float(a) == float(b):
            continue
        if a != b:
            raise CheckpointError(
                f"{path}: the run there was trained with {key}={a!r}, this config says {b!r}; "
                "resume with the same config (only optim.epochs and where it runs may change), "
                "or start afresh with --no-resume or another --out folder")


def data_key(train_records: Sequence[VideoRecord], val_records: Sequence[VideoRecord]) -> str:
    """A short hash of which videos (by stem) are trained and validated on."""
    import hashlib

    text = "\n".join(sorted(r.stem for r in train_records)) + "\n--\n" + \
        "\n".join(sorted(r.stem for r in val_records))
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _check_same_data(path: Path, key: str) -> None:
    """Refuse to resume `path` on other training or validation videos than it was run on."""
    stored = torch.load(path, map_location="cpu", weights_only=True).get("data_key")
    if stored is not None and stored != key:
        raise CheckpointError(
            f"{path}: the run there trained on other videos (another --data, or a changed "
            "dataset or split); start afresh with --no-resume or another --out folder")


def _trim_history(path: Path, upto: int, write: bool = True) -> list[dict[str, Any]]:
    """Keep the epochs <= `upto` of `metrics.jsonl` (an interrupted epoch may have logged);
    `write=False` (ranks other than 0) only reads them."""
    if not path.exists():
        return []
    kept = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]
    kept = [h for h in kept if h.get("epoch", 0) <= upto]
    if write:
        path.write_text("".join(json.dumps(h) + "\n" for h in kept), encoding="utf-8")
    return kept


def _write_predictions(path: Path, preds: Sequence[dict[str, Any]],
                       records: Sequence[VideoRecord], class_names: Sequence[str]) -> None:
    """The last epoch's validation predictions, one JSON line per video: stem, source, group,
    true and predicted class, the decision score, and each class's video-level score (the
    highest probability any query gives it), for pooled cross-validation reports."""
    by_stem = {r.stem: r for r in records}
    with open(path, "w", encoding="utf-8") as f:
        for p in preds:
            rec = by_stem.get(p["stem"])
            probs = np.asarray(p["probs"])
            scores = {name: float(probs[:, c].max()) for c, name in enumerate(class_names)}
            row = {"stem": p["stem"], "source": rec.source if rec else None,
                   "group": rec.group if rec else None, "true": p.get("true"),
                   "pred": p.get("pred"), "score": p.get("score"), "class_scores": scores}
            f.write(json.dumps(M.to_jsonable(row)) + "\n")


def _write_config(cfg: TrainConfig, path: Path) -> None:
    import yaml

    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")


def _fmt(value: Any) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.3f}"
