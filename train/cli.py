"""The model side of the `vigil` command: train, eval, cv, detect, synth, data check,
import-reference, export.

Each verb's function takes the parsed arguments and returns an exit code; heavy imports (torch,
OpenCV, matplotlib) happen inside them so `vigil --help` stays instant. Library code logs; the
verbs print results for a person (tables) or a program (JSON lines / CSV) on stdout.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from .recipes import DEFAULT_RECIPE, recipe_path

log = logging.getLogger("vigil.train")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the training verbs to the `vigil` command's subparsers."""
    fmt = argparse.ArgumentDefaultsHelpFormatter

    p = subparsers.add_parser(
        "train", formatter_class=fmt,
        help="train the detector on a labelled dataset",
        description="Train the detector on DATA: any layout `vigil data check` reads (videos/ "
                    "labels/ [splits/ or split.json]; a labels.csv or other CSV manifest; "
                    "class folders such as fight/ none/ fall/; a folder with "
                    "action_challenge.csv). Writes OUT/last.pt after every epoch, "
                    "OUT/best.pt for the best validation det-acc@0.5 (train.select_by; "
                    "reference.yaml: video acc + 0.2 x det-acc), OUT/metrics.jsonl; resumes "
                    "from OUT/last.pt when it exists. Runs unchanged under torchrun "
                    "--nproc_per_node=N (DDP: one process per GPU, or gloo on CPU).")
    p.add_argument("--config", type=Path, default=None,
                   help="training YAML or shipped recipe name (e.g. configs/train/cpu-small.yaml "
                        "or cpu-small); default: the report's recipe "
                        f"({recipe_path(DEFAULT_RECIPE)})")
    p.add_argument("--data", type=Path, nargs="+", required=True, metavar="DATA",
                   help="dataset folder(s) or CSV manifest(s); several train together, each "
                        "split on its own")
    p.add_argument("--out", type=Path, required=True, help="run folder for checkpoints and logs")
    _add_overrides(p)
    p.add_argument("--no-resume", action="store_true",
                   help="start afresh even when OUT/last.pt exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser(
        "eval", formatter_class=fmt, help="evaluate a checkpoint on a dataset",
        description="Print the report's metrics (video accuracy, det-acc@0.5, mIoU, losses, "
                    "per-class precision/recall/F1, confusion matrix, AP@0.5, AP@[.5:.95]; box "
                    "metrics only over videos with boxes), then a per-source table (accuracy, "
                    "recall, precision, ROC AUC, false alarms on none videos) and, with --out, "
                    "write metrics.json, predictions.jsonl and PNGs (confusion matrix, training "
                    "curves, worst predictions).")
    p.add_argument("--checkpoint", type=Path, required=True,
                   help="a .pt checkpoint, or an .onnx export (run on the CPU)")
    p.add_argument("--data", type=Path, required=True, help="dataset folder")
    p.add_argument("--split", choices=("val", "train", "all"), default="val",
                   help="which videos: the training run's split (same seed and fraction), or all")
    p.add_argument("--out", type=Path, default=None, help="folder for metrics.json and PNGs")
    p.add_argument("--threshold", type=float, default=None,
                   help="clip decision score threshold (default: the training config's, 0.3)")
    p.add_argument("--batch", type=int, default=8, help="clips per forward pass")
    p.add_argument("--workers", type=int, default=2, help="decoding processes")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--worst", type=int, default=6, help="videos on the worst-predictions sheet")
    p.add_argument("--allow-outside-root", action="store_true",
                   help="read videos and label files that resolve outside the dataset's folder "
                        "(.. or absolute paths in a manifest, symlinks pointing elsewhere); "
                        "without it each is a problem")
    p.add_argument("--perturb", nargs="+", default=[], metavar="NAME",
                   choices=("shake", "blur", "low_light", "greyscale", "timestamp", "jpeg",
                            "frame_drop"),
                   help="score every clip as a worse camera would show it (the training "
                        "augmentation's camera transforms, each applied to every clip, seeded "
                        "per clip), e.g. --perturb low_light greyscale for infrared at night")
    p.set_defaults(func=cmd_eval)

    p = subparsers.add_parser(
        "cv", formatter_class=fmt, help="stratified k-fold cross-validation",
        description="Train one model per fold (each class spread evenly over the folds) and "
                    "report the mean and standard deviation of every metric of the last epoch.")
    p.add_argument("--config", type=Path, default=None, help="training YAML")
    p.add_argument("--data", type=Path, required=True, help="dataset folder")
    p.add_argument("--out", type=Path, required=True, help="folder for the fold runs and cv.json")
    p.add_argument("--also-train", type=Path, nargs="+", default=[], metavar="DATA",
                   help="datasets added whole to every fold's training (never validated on)")
    p.add_argument("--folds", type=int, default=5, help="number of folds")
    p.add_argument("--seed", type=int, default=0, help="seed of the fold assignment")
    _add_overrides(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_cv)

    p = subparsers.add_parser(
        "detect", formatter_class=fmt, help="run the detector on video files",
        description="One row per video (JSON lines on stdout, or --out/--csv): the clip-level "
                    "prediction (class, score, box in pixels x1,y1,x2,y2) as the reference "
                    "inference script gives it; with --windows, one row per sliding window with "
                    "its time span. Folders are searched for .mp4/.avi/.mkv/.mov files.")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="video files or folders")
    p.add_argument("--checkpoint", type=Path, required=True,
                   help="a .pt checkpoint, an .onnx export (run on the CPU), or vigil: what "
                        "the daemon serves by default (the shipped video detector with the "
                        "pose path for collapse)")
    p.add_argument("--pose", default=None, metavar="CHECKPOINT",
                   help="score collapse with this pose collapse model (vigil: the shipped "
                        "one), as the daemon's model.pose does; none: the video detector "
                        "alone. Default: vigil with --checkpoint vigil, else none")
    p.add_argument("--out", type=Path, default=None, help="write JSON lines here, not stdout")
    p.add_argument("--csv", type=Path, default=None, help="write CSV here ('-' = stdout)")
    p.add_argument("--csv-format", choices=("vigil", "reference"), default="vigil",
                   help="vigil: one row per video/window with pixel box columns; reference: "
                        "the reference implementation's test.py columns video_name,"
                        "pred_class_1,x1_1,y1_1,x2_1,y2_1,pred_class_2,... (one group per query "
                        "over --threshold, normalised xyxy, no_object when none; clip mode only)")
    p.add_argument("--windows", type=float, default=None, metavar="STRIDE",
                   help="sliding windows every STRIDE seconds instead of one clip per video")
    p.add_argument("--window-seconds", type=float, default=None,
                   help="window length (default: the checkpoint's clip_seconds)")
    p.add_argument("--labels", type=Path, default=None, metavar="DATA",
                   help="known labels (a dataset folder or a CSV manifest): every row gets "
                        "'true' and 'correct', and a per-video table of true/false positive "
                        "windows and detection latency goes to stderr. A window is the class "
                        "of the segment holding its centre, none when it overlaps no segment, "
                        "else ambiguous (not counted)")
    p.add_argument("--summary", type=Path, default=None, metavar="FILE",
                   help="with --labels, also write the per-video table and totals as JSON here")
    p.add_argument("--allow-outside-root", action="store_true",
                   help="with --labels: read videos and label files that resolve outside the dataset's folder "
                        "(.. or absolute paths in a manifest, symlinks pointing elsewhere); "
                        "without it each is a problem")
    p.add_argument("--render", type=Path, default=None, metavar="DIR",
                   help="write each video with its boxes and labels drawn into DIR")
    p.add_argument("--batch", type=int, default=8, help="clips per forward pass")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default 2)")
    p.add_argument("--decode-workers", type=int, default=None, metavar="N",
                   help="instead of --workers: N decoding processes whose clips are pooled into "
                        "full batches (for a GPU: about one per core; rows come in another order)")
    p.add_argument("--threshold", type=float, default=0.3, help="minimum detection score")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="autocast: auto = bf16/fp16 on GPU, fp32 on CPU; bf16 is faster on CPUs "
                        "with AVX-512 BF16/AMX")
    p.set_defaults(func=cmd_detect)

    p = subparsers.add_parser(
        "synth", formatter_class=fmt, help="write a synthetic labelled dataset",
        description="Stick figures fighting, collapsing or neither (walking, standing, lying "
                    "still, talking close together), with distractors, in the dataset layout "
                    "`vigil train` reads. --variety draws the same actions in many looks "
                    "(clothed silhouettes, furnished rooms, a high camera, bystanders, lighting "
                    "changes, IR greyscale) for pretraining that transfers to real CCTV; "
                    "--style other is a second, different generator (capsule figures outdoors, "
                    "shoving and slumping) for few-shot fine-tuning tests; --style photo moves "
                    "a photographed person (collapse and none only), which the pose path can "
                    "see.")
    p.add_argument("--out", type=Path, required=True, help="dataset folder to write")
    p.add_argument("--videos", type=int, default=240, help="number of videos")
    p.add_argument("--seed", type=int, default=0, help="the dataset is a function of the seed")
    p.add_argument("--width", type=int, default=320, help="base frame width")
    p.add_argument("--height", type=int, default=240, help="base frame height")
    p.add_argument("--fps", type=float, default=25.0, help="base frame rate")
    p.add_argument("--frames", type=int, default=64, help="frames per video")
    p.add_argument("--no-vary", action="store_true",
                   help="every video at the base size and rate (default: three of each)")
    p.add_argument("--variety", action="store_true",
                   help="many looks per scene (stick style only); off: the plain default, "
                        "unchanged for a given seed")
    p.add_argument("--style", choices=("stick", "other", "photo"), default="stick",
                   help="stick: the default generator; other: capsule figures outdoors, "
                        "pushing/grappling fights, fainting/slumping collapses; photo: a "
                        "photographed person falling or standing (no fights)")
    p.set_defaults(func=cmd_synth)

    p = subparsers.add_parser("data", help="dataset tools (check)",
                              description="Dataset tools.")
    data_sub = p.add_subparsers(dest="data_verb", metavar="ACTION")
    data_sub.required = True
    q = data_sub.add_parser(
        "check", formatter_class=fmt, help="list every problem of a dataset",
        description="Read every video and label file of DATA and print every problem found "
                    "(exit status 1), or a summary when there is none.")
    q.add_argument("data", type=Path, metavar="DATA", help="dataset folder or CSV manifest")
    q.add_argument("--config", type=Path, default=None,
                   help="training YAML whose class names and data.class_folders / "
                        "data.label_id_base apply (default: fight, collapse)")
    q.add_argument("--classes", type=int, default=2, help="number of foreground classes")
    q.add_argument("--map", dest="folder_map", action="append", default=[],
                   metavar="FOLDER=CLASS", help="map a class folder's name to a class or 'none' "
                                                "(repeatable; adds to data.class_folders)")
    q.add_argument("--label-id-base", type=int, choices=(0, 1), default=None,
                   help="reference layout: label ids start at 0 or 1 (default: from the ids, "
                        "refused when ambiguous)")
    q.add_argument("--allow-outside-root", action="store_true",
                   help="read videos and label files that resolve outside the dataset's folder "
                        "(.. or absolute paths in a manifest, symlinks pointing elsewhere); "
                        "without it each is a problem")
    q.set_defaults(func=cmd_data_check)

    p = subparsers.add_parser(
        "import-reference", formatter_class=fmt,
        help="convert the reference implementation's best_model.pth",
        description="Turn the report authors' state_dict (best_model.pth) into a Vigil "
                    "checkpoint of the same model (configs/train/reference.yaml's architecture).")
    p.add_argument("state_dict", type=Path, metavar="BEST_MODEL_PTH", help="reference state_dict")
    p.add_argument("--out", type=Path, required=True, help="Vigil checkpoint to write")
    p.add_argument("--clip-seconds", type=float, default=None, metavar="S",
                   help="seconds of video one clip of the model spans (the reference model "
                        "does not record it; the daemon then takes 16 consecutive frames "
                        "unless window_seconds is set): the length of the videos it was "
                        "trained on")
    p.set_defaults(func=cmd_import_reference)

    p = subparsers.add_parser(
        "export", formatter_class=fmt, help="export a checkpoint to ONNX and check it",
        description="Write the detector as ONNX (dynamic batch axis, the checkpoint's clip size), "
                    "run it with onnxruntime on the CPU next to PyTorch on the same clips and "
                    "print the largest absolute difference of each output.")
    p.add_argument("--checkpoint", type=Path, required=True, help="a .pt checkpoint")
    p.add_argument("--format", choices=("onnx",), default="onnx", help="export format")
    p.add_argument("--out", type=Path, default=None,
                   help="file to write (default: the checkpoint with .onnx)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset version")
    p.add_argument("--check-batch", type=int, default=3,
                   help="clips in the check (not the export's batch: proves the batch is dynamic)")
    p.add_argument("--atol", type=float, default=1e-3,
                   help="exit 1 when any output differs by more than this")
    p.add_argument("--time", action="store_true",
                   help="also time PyTorch (fp32, CPU) and onnxruntime on the check batch")
    p.set_defaults(func=cmd_export)

    p = subparsers.add_parser(
        "ensemble", formatter_class=fmt, help="serve several checkpoints as one (mean score)",
        description="Write one model file holding two or more trained checkpoints, which the "
                    "daemon and every command serve as one model: each member sees the clip at "
                    "its own size and statistics, and each class's score is the mean of theirs "
                    "(detector/ensemble.py). Members must name the same classes and see the "
                    "same frames over the same time. After a fine-tune of one member, "
                    "`vigil ensemble vigil --swap runs/mine/best.pt --out mine.pt` puts it in "
                    "place of the shipped member of its architecture. Prints each member's "
                    "score and the mean on a synthetic clip, as a check.")
    p.add_argument("members", type=str, nargs="+", metavar="MODEL",
                   help="Vigil checkpoints (.pt), ensembles (all their members) or `vigil` "
                        "(the shipped default model)")
    p.add_argument("--swap", type=Path, action="append", default=[], metavar="CHECKPOINT",
                   help="replace the member of this checkpoint's architecture by it "
                        "(repeatable)")
    p.add_argument("--boxes-from", type=int, default=None, metavar="N",
                   help="every alert box from member N (1-based), e.g. the one whose box head "
                        "was trained on boxes; default: per class, the member most sure of it "
                        "(or, rebuilding one ensemble, its own setting)")
    p.add_argument("--out", type=Path, required=True, help="ensemble file to write (.pt)")
    p.set_defaults(func=cmd_ensemble)


def _add_overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set loss.giou=0 (repeatable)")
    p.add_argument("--epochs", type=int, default=None, help="shortcut for --set optim.epochs=N")
    p.add_argument("--device", default=None, help="shortcut for --set train.device=DEVICE")
    p.add_argument("--allow-outside-root", action="store_true",
                   help="read videos and label files that resolve outside the dataset's folder "
                        "(shortcut for --set data.allow_outside_root=true)")


def _load_config(args: argparse.Namespace):
    from .config import load_train_config

    overrides = list(args.overrides)
    if args.device is not None:
        overrides.append(f"train.device={args.device}")
    if getattr(args, "allow_outside_root", False):
        overrides.append("data.allow_outside_root=true")
    return load_train_config(args.config, overrides, epochs=args.epochs)


# --------------------------------------------------------------------------- train
def _pose_recipe(args: argparse.Namespace):
    """The pose recipe `--config` names (`model.kind: pose-collapse`), or None for a video one.

    Raises:
        ConfigError: a bad key of a pose recipe, naming it.
    """
    from detector.schema import load_yaml

    from .pose_trainer import is_pose_recipe, load_pose_config
    from .recipes import resolve_recipe

    if args.config is None:
        return None
    path = resolve_recipe(args.config)
    if not path.is_file():
        return None                 # the video loader names the missing file
    data = load_yaml(path)
    if not is_pose_recipe(data):
        return None
    if getattr(args, "epochs", None) is not None or getattr(args, "device", None) is not None:
        log.warning("%s is a pose recipe: --epochs and --device do not apply (it is fitted "
                    "in one go, on the CPU)", path)
    return load_pose_config(data, args.overrides, str(path))


def _print_pose_report(report: dict, label: str, threshold: float, title: str) -> None:
    from .report import format_source_table

    print(title)
    print(format_source_table(report, [label], threshold))


def cmd_train(args: argparse.Namespace) -> int:
    from .metrics import format_table
    from .trainer import fit

    pose = _pose_recipe(args)
    if pose is not None:
        from .pose_trainer import fit as fit_pose

        result = fit_pose(pose, args.data, args.out, progress=not args.no_progress)
        if result["report"]:
            _print_pose_report(result["report"], pose.model.label, pose.train.threshold,
                               f"pose collapse model: {result['windows']} training windows "
                               f"({result['positives']} positive, {result['bags']} videos "
                               f"labelled as a whole), validation videos:")
        print(f"\ncheckpoints: {Path(args.out) / 'best.pt'}  {Path(args.out) / 'last.pt'}")
        return 0
    cfg = _load_config(args)
    result = fit(cfg, args.data, args.out, resume=not args.no_resume,
                 progress=not args.no_progress)
    if result["rank"] != 0:     # under torchrun: rank 0 prints the table
        return 0
    best = result["best"]
    losses = {k: best[k] for k in ("loss", "loss_ce", "loss_bbox", "loss_giou") if k in best}
    print(format_table(best, losses, title=f"validation metrics of the best epoch "
                                           f"({result['best_epoch']} of {result['epochs']}), "
                                           f"{result['parameters']:,} parameters"))
    print(f"\ncheckpoints: {Path(args.out) / 'best.pt'}  {Path(args.out) / 'last.pt'}")
    return 0


# --------------------------------------------------------------------------- eval
def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from detector.pose.collapse import is_pose_checkpoint

    if is_pose_checkpoint(args.checkpoint):
        return _eval_pose(args)
    from torch.utils.data import DataLoader

    from detector.runtime import load_model, model_device, resolve_device
    from detector.losses import LossConfig, build_criterion
    from detector.schema import from_dict

    from . import engine
    from .config import DataConfig, RunConfig
    from .dataset import ClipDataset, collate, scan_dataset_lenient, split_records
    from .metrics import format_table, to_jsonable
    from .report import format_source_table, report_from_predictions

    device = resolve_device(args.device)
    model, mcfg, meta = load_model(args.checkpoint, device, threads=torch.get_num_threads())
    device = model_device(meta, device)
    train_cfg = meta.get("train_config") or {}
    loss_cfg = from_dict(LossConfig, train_cfg.get("loss"), "train_config.loss")
    data_cfg = from_dict(DataConfig, train_cfg.get("data"), "train_config.data")
    run_cfg = from_dict(RunConfig, train_cfg.get("train"), "train_config.train")
    threshold = run_cfg.score_threshold if args.threshold is None else args.threshold

    # The training run's layout options, so labels map to the same classes; a video that
    # cannot be read is logged and left out (as in training).
    records, skipped = scan_dataset_lenient(
        args.data, num_classes=mcfg.num_classes, require_positives=False,
        class_names=mcfg.class_names, class_folders=data_cfg.class_folders,
        label_id_base=data_cfg.label_id_base, allow_outside_root=args.allow_outside_root)
    records = split_records(records, args.data, args.split, data_cfg.val_fraction,
                            data_cfg.split_seed)
    if not records:
        print(f"{args.data}: the {args.split} split is empty", file=sys.stderr)
        return 1
    cache_dir = data_cfg.resolved_cache_dir()
    from .cache import ClipCache
    cache = ClipCache(cache_dir) if cache_dir is not None else None
    from .augment import perturbation
    dataset = ClipDataset(records, mcfg.input, cache=cache, train=False,
                          augment=perturbation(args.perturb) if args.perturb else None)
    amp = engine.resolve_amp("auto", device)
    # A long clip is judged by its best window (label-blind), as validation judged it.
    from .mil import choose_bag_windows
    choose_bag_windows(model, dataset, device, amp)
    loader = DataLoader(dataset, batch_size=args.batch, shuffle=False, num_workers=args.workers,
                        collate_fn=collate)
    criterion = build_criterion(loss_cfg, mcfg.num_classes).to(device)
    metrics, preds = engine.evaluate(model, criterion, loader, device, mcfg.class_names,
                                     threshold, amp, run_cfg.iou_threshold, progress=True)
    losses = {k: metrics[k] for k in ("loss", "loss_ce", "loss_bbox", "loss_giou")
              if k in metrics}
    print(format_table(metrics, losses, title=f"{args.checkpoint} on {args.data} "
                                              f"({args.split} split, {len(records)} videos"
                                              + (f", perturbed: {' '.join(args.perturb)}"
                                                 if args.perturb else "")
                                              + (f", {len(skipped)} skipped, see the log"
                                                 if skipped else "") + ")"))
    metrics["per_source"] = report_from_predictions(preds, mcfg.class_names)
    print("\n" + format_source_table(metrics["per_source"], mcfg.class_names, threshold))
    if args.out is not None:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        body = {k: v for k, v in metrics.items() if k != "per_video"}
        body.update(checkpoint=str(args.checkpoint), data=str(args.data), split=args.split)
        (out / "metrics.json").write_text(json.dumps(to_jsonable(body), indent=2) + "\n",
                                          encoding="utf-8")
        with open(out / "predictions.jsonl", "w", encoding="utf-8") as f:
            for p in preds:
                f.write(json.dumps(to_jsonable({k: p[k] for k in (
                    "stem", "source", "true", "pred", "score", "iou", "correct", "box",
                    "in_box_metrics")})) + "\n")
        _eval_plots(metrics, preds, records, args, out)
        print(f"\nwrote {out / 'metrics.json'}, {out / 'predictions.jsonl'} and PNGs in {out}")
    return 0


def _eval_pose(args: argparse.Namespace) -> int:
    """`vigil eval` of a pose collapse checkpoint: per-source table, predictions.jsonl."""
    from detector.pose.collapse import load_pose_checkpoint

    from .metrics import to_jsonable
    from .pose_trainer import evaluate_checkpoint

    model, meta = load_pose_checkpoint(args.checkpoint)
    rows, report, cfg = evaluate_checkpoint(model, meta, args.data, args.split, args.threshold)
    _print_pose_report(report, cfg.model.label, cfg.train.threshold,
                       f"{args.checkpoint} on {args.data} ({args.split} split, {len(rows)} "
                       f"videos; each judged by its best {cfg.model.window_s:g} s window):")
    if args.out is not None:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        body = {"per_source": report, "checkpoint": str(args.checkpoint), "data": str(args.data),
                "split": args.split, "threshold": cfg.train.threshold}
        (out / "metrics.json").write_text(json.dumps(to_jsonable(body), indent=2) + "\n",
                                          encoding="utf-8")
        with open(out / "predictions.jsonl", "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(to_jsonable(r)) + "\n")
        print(f"\nwrote {out / 'metrics.json'} and {out / 'predictions.jsonl'}")
    return 0


def _eval_plots(metrics: dict[str, Any], preds: list[dict[str, Any]], records: list,
                args: argparse.Namespace, out: Path) -> None:
    from .plots import plot_confusion_matrix, plot_contact_sheet, plot_training_curves
    from .video_io import read_frames, sample_indices

    plot_confusion_matrix(metrics["confusion_matrix"], metrics["labels"], out / "confusion.png")
    history = Path(args.checkpoint).parent / "metrics.jsonl"
    if history.is_file():
        plot_training_curves(history, out / "curves.png")
    by_stem = {r.stem: r for r in records}
    items = []
    for p in sorted(preds, key=_worst_first)[:max(args.worst, 0)]:
        rec = by_stem[p["stem"]]
        scale = 160.0 / max(rec.height, 1)
        size = (160, max(int(round(rec.width * scale)), 8))
        try:
            frames = read_frames(rec.video, sample_indices(rec.frames, 4), size=size)
        except Exception as exc:  # a video that went away since evaluation: skip, do not fail
            log.warning("contact sheet: %s: %s", rec.video, exc)
            continue
        items.append(_sheet_item(p, frames))
    legend = "green: true" if metrics.get("box_videos") else "no true boxes in this set"
    plot_contact_sheet(items, out / "worst.png",
                       title=f"Worst predictions (red: predicted, {legend})")


def _worst_first(p: dict[str, Any]) -> tuple:
    """Sort key of the contact sheet: wrong videos by descending confidence, then right ones
    with boxes by ascending IoU, then right ones without boxes (nothing to look at there)."""
    if not p["correct"]:
        return (0, -(p["score"] or 0.0))
    return (1, p["iou"]) if p.get("in_box_metrics", True) else (2, 0.0)


def _sheet_item(p: dict[str, Any], frames: Any) -> dict[str, Any]:
    """One contact-sheet row of an evaluated video: its predicted box, its true box when it has
    one (a box-less positive gets none; its title still names the true class)."""
    import numpy as np

    from .metrics import cxcywh_to_xyxy

    boxed = p.get("in_box_metrics", True) and len(p["gt_boxes"])
    true_box = cxcywh_to_xyxy(p["gt_boxes"][0]).tolist() if boxed else None
    pred_box = cxcywh_to_xyxy(np.asarray(p["box"])).tolist() if p["box"] is not None else None
    title = f"{p['stem']}: true {p['true']}, pred {p['pred']} ({p['score']:.2f})"
    if p["pred"] == p["true"] and p["true"] != "none":
        title += f", IoU {p['iou']:.2f}" if boxed else ", no true box"
    return {"frames": frames, "pred_box": pred_box, "true_box": true_box, "title": title}


# --------------------------------------------------------------------------- cv
def cmd_cv(args: argparse.Namespace) -> int:
    from .cv import cross_validate, format_cv_table

    pose = _pose_recipe(args)
    if pose is not None:
        from .pose_trainer import cross_validate as cross_validate_pose

        if args.also_train:
            print("--also-train: not for a pose recipe", file=sys.stderr)
            return 2
        result = cross_validate_pose(pose, args.data, args.out, folds=args.folds,
                                     seed=args.seed, progress=not args.no_progress)
        _print_pose_report(result["per_source"], pose.model.label, pose.train.threshold,
                           f"out-of-fold predictions of {args.folds} grouped folds, pooled "
                           f"({result['seconds']:.0f} s):")
        print(f"\nwrote {Path(args.out) / 'cv.json'}")
        return 0
    cfg = _load_config(args)
    result = cross_validate(cfg, args.data, args.out, folds=args.folds, seed=args.seed,
                            progress=not args.no_progress, also_train=args.also_train)
    print(format_cv_table(result))
    if result.get("per_source"):
        from .report import format_source_table

        cfg_names = list(cfg.model.class_names)
        print("\nout-of-fold predictions, pooled over the folds:")
        print(format_source_table(result["per_source"], cfg_names, cfg.train.score_threshold))
    print(f"\nwrote {Path(args.out) / 'cv.json'}")
    return 0


# --------------------------------------------------------------------------- detect
def cmd_detect(args: argparse.Namespace) -> int:
    import csv

    from .detect import (checkpoint_label_options, detect, find_videos, label_row,
                         match_truths, read_truths, render_video)

    if args.summary is not None and args.labels is None:
        print("--summary needs --labels", file=sys.stderr)
        return 2
    reference_csv = getattr(args, "csv_format", "vigil") == "reference"
    if reference_csv and (args.csv is None or args.windows is not None):
        print("--csv-format reference needs --csv FILE and writes one row per video (no "
              "--windows)", file=sys.stderr)
        return 2
    truths = {}
    if args.labels is not None:
        truths = match_truths(find_videos(args.paths),
                              read_truths(args.labels, **checkpoint_label_options(args.checkpoint),
                                          allow_outside_root=args.allow_outside_root))
    rows_by_video: dict[str, list[dict[str, Any]]] = {}
    failed = 0
    json_out = open(args.out, "w", encoding="utf-8") if args.out else None
    csv_file = None
    writer = None
    reference_rows: list[dict[str, Any]] = []
    if args.csv is not None and not reference_csv:
        csv_file = sys.stdout if str(args.csv) == "-" else open(args.csv, "w", newline="",
                                                                 encoding="utf-8")
        fields = ["video"] + (["start_s", "end_s"] if args.windows else []) + \
            ["class", "score", "x1", "y1", "x2", "y2", "width", "height"] + \
            (["true", "correct"] if truths else []) + ["error"]
        writer = csv.DictWriter(csv_file, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
    try:
        for row in detect(args.paths, args.checkpoint, windows=args.windows,
                          window_seconds=args.window_seconds, batch=args.batch,
                          workers=args.workers, threshold=args.threshold, device=args.device,
                          precision=args.precision, queries=reference_csv,
                          pose=_detect_pose(args), decode_workers=args.decode_workers):
            if reference_csv:
                reference_rows.append(row)
                row = {k: v for k, v in row.items() if k != "queries"}
            if "error" in row:
                failed += 1
            elif row["video"] in truths:
                label_row(row, truths[row["video"]])
            rows_by_video.setdefault(row["video"], []).append(row)
            if writer is not None:
                flat = dict(row)
                box = flat.pop("box", None)
                if box is not None:
                    flat.update(zip(("x1", "y1", "x2", "y2"), box))
                writer.writerow(flat)
                csv_file.flush()
            if json_out is not None or (writer is None and not reference_csv):
                line = json.dumps(row)
                if json_out is not None:
                    json_out.write(line + "\n")
                else:
                    print(line, flush=True)
    finally:
        if json_out is not None:
            json_out.close()
        if csv_file is not None and csv_file is not sys.stdout:
            csv_file.close()
    if reference_csv:
        # The header needs the largest number of groups, so the file is written at the end.
        from .detect import write_reference_csv

        if str(args.csv) == "-":
            write_reference_csv(reference_rows, sys.stdout)
        else:
            with open(args.csv, "w", newline="", encoding="utf-8") as f:
                write_reference_csv(reference_rows, f)
    if args.render is not None:
        for video, rows in rows_by_video.items():
            if any("error" in r for r in rows):
                continue
            out = render_video(video, rows, Path(args.render) / (Path(video).stem + ".mp4"))
            log.info("rendered %s", out)
    if truths:
        _detect_summary(rows_by_video, truths, args.summary)
    if failed:
        log.error("%d video(s) could not be read", failed)
    return 1 if failed else 0


def _detect_pose(args: argparse.Namespace) -> str | None:
    """The pose checkpoint `vigil detect` runs: --pose, else the shipped one with the shipped
    detector (`--checkpoint vigil` is exactly the daemon's default), else none."""
    choice = args.pose if args.pose is not None else (
        "vigil" if str(args.checkpoint) == "vigil" else "none")
    return None if choice == "none" else choice


def _detect_summary(rows_by_video: dict[str, list[dict[str, Any]]], truths: dict,
                    path: Path | None) -> None:
    """Print the per-video window table of labelled videos on stderr; write it as JSON to
    `path` when given."""
    from .detect import format_summary, summarise_video, total_summary

    summaries = [summarise_video(rows, truths[video]) for video, rows in rows_by_video.items()
                 if video in truths]
    print(format_summary(summaries), file=sys.stderr)
    if path is not None:
        body = {"videos": summaries, "total": total_summary(summaries)}
        Path(path).write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- synth
def cmd_synth(args: argparse.Namespace) -> int:
    from .synth_dataset import write_dataset

    if args.videos < 1:
        print("--videos must be >= 1", file=sys.stderr)
        return 2
    if args.variety and args.style != "stick":
        print("--variety applies to --style stick only", file=sys.stderr)
        return 2
    stems = write_dataset(args.out, args.videos, args.seed, width=args.width,
                          height=args.height, fps=args.fps, frames=args.frames,
                          mix=(0, 1, 1) if args.style == "photo" else (1, 1, 1),
                          vary=not args.no_vary, progress=sys.stderr.isatty(),
                          variety=args.variety, style=args.style)
    kinds: dict[str, int] = {}
    for s in stems:
        kinds[s.split("_")[0]] = kinds.get(s.split("_")[0], 0) + 1
    print(f"wrote {len(stems)} videos to {args.out} ("
          + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) + ")")
    return 0


# --------------------------------------------------------------------------- data check
def cmd_data_check(args: argparse.Namespace) -> int:
    from collections import Counter

    from .dataset import detect_layout, inspect_dataset

    names, folders, base = None, {}, args.label_id_base
    if args.config is not None:
        from .config import load_train_config

        cfg = load_train_config(args.config)
        names, folders = list(cfg.model.class_names), dict(cfg.data.class_folders)
        base = cfg.data.label_id_base if base is None else base
    for item in args.folder_map:
        folder, sep, cls = item.partition("=")
        if not sep or not folder.strip() or not cls.strip():
            print(f"--map {item!r}: expected FOLDER=CLASS", file=sys.stderr)
            return 2
        folders[folder.strip()] = cls.strip()
    k = len(names) if names is not None else args.classes
    outside = args.allow_outside_root or (args.config is not None
                                          and cfg.data.allow_outside_root)
    opts = dict(num_classes=k, class_names=names, class_folders=folders, label_id_base=base,
                allow_outside_root=outside)
    records, problems = inspect_dataset(args.data, **opts)
    if problems:
        for p in problems:
            print(p)
        print(f"\n{len(problems)} problem(s) in {args.data}", file=sys.stderr)
    if not records:
        return 1
    class_names = names or (["fight", "collapse"] if k == 2 else [str(i) for i in range(k)])

    def cls_name(r) -> str:
        return "none" if r.stratum == "none" else class_names[int(r.stratum)]

    per_class = Counter(cls_name(r) for r in records)
    sizes = Counter(f"{r.width}x{r.height}" for r in records)
    rates = Counter(f"{r.fps:g}" for r in records)
    durations = [r.duration_s for r in records]
    positives = [r for r in records if r.is_positive]
    sources = Counter(r.source for r in records)
    groups = len({r.group for r in records})
    status = "OK" if not problems else f"{len(records)} usable videos, {len(problems)} problem(s)"
    print(f"{args.data}: {status} ({detect_layout(args.data)} layout)")
    rows = [("videos", str(len(records))),
            ("per class", ", ".join(f"{k} {v}" for k, v in sorted(per_class.items()))),
            ("labels", f"{sum(r.has_boxes for r in positives)} with boxes, "
                       f"{sum(not r.has_boxes for r in positives)} class-only, "
                       f"{sum(r.has_segments for r in positives)} with time segments"),
            ("action boxes", str(int(sum(r.has_box.sum() for r in records)))),
            ("sources", ", ".join(f"{k} ({v})" for k, v in sorted(sources.items()))),
            ("groups", f"{groups} (videos of one group stay on one side of every split)"),
            ("sizes", ", ".join(f"{k} ({v})" for k, v in sizes.most_common(6))
             + (f", ... {len(sizes) - 6} more" if len(sizes) > 6 else "")),
            ("fps", ", ".join(f"{k} ({v})" for k, v in rates.most_common(6))
             + (f", ... {len(rates) - 6} more" if len(rates) > 6 else ""))]
    if durations:
        rows.append(("duration s", f"min {min(durations):.2f}, median "
                                   f"{sorted(durations)[len(durations) // 2]:.2f}, max "
                                   f"{max(durations):.2f}"))
    root = args.data.parent if args.data.is_file() else args.data
    splits = [s for s in ("train", "val") if (root / "splits" / f"{s}.txt").is_file()]
    if not splits and (root / "split.json").is_file():
        splits = ["split.json (the reference implementation's)"]
    if not splits and records and all(r.split for r in records):
        splits = ["from the layout"]
    rows.append(("splits", ", ".join(splits) if splits else
                 "none (stratified by class, grouped, at train)"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    return 1 if problems else 0


# --------------------------------------------------------------------------- import-reference
def cmd_import_reference(args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from detector.checkpoint import save_checkpoint
    from detector.errors import CheckpointError
    from detector.model import build_model, count_parameters
    from detector.reference import convert_reference_state_dict

    path = Path(args.state_dict)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a loadable state_dict: "
                              f"{' '.join(str(exc).split())[:300]}") from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict) and "format" not in sd:
        sd = sd["state_dict"]   # a {"state_dict": ...} wrapper some training scripts save
    state, cfg = convert_reference_state_dict(sd, source=str(path))
    clip_seconds = getattr(args, "clip_seconds", None)
    if clip_seconds is not None:
        if not clip_seconds > 0:
            raise CheckpointError(f"--clip-seconds must be > 0, got {clip_seconds}")
        cfg = dataclasses.replace(cfg, input=dataclasses.replace(cfg.input,
                                                                  clip_seconds=float(clip_seconds)))
    model = build_model(cfg)
    model.load_state_dict(state, strict=True)
    # fp16: the reference's test.py autocasts inference in fp16 (`vigil detect --precision auto`).
    save_checkpoint(args.out, model, cfg, source=str(path), imported_from="reference",
                    clip_seconds=cfg.input.clip_seconds, inference_precision="fp16")
    clip = ("clip length not recorded: the daemon takes 16 consecutive frames unless "
            "window_seconds is set (give it with --clip-seconds)" if clip_seconds is None
            else f"clip length {clip_seconds:g} s")
    print(f"wrote {args.out}: reference model, {count_parameters(model):,} parameters, classes "
          f"{', '.join(cfg.class_names)}; {clip}")
    return 0


# --------------------------------------------------------------------------- export
def cmd_export(args: argparse.Namespace) -> int:
    """`vigil export --checkpoint CKPT --format onnx`: export, then compare with PyTorch."""
    import torch

    from detector.checkpoint import load_checkpoint
    from detector.export import OnnxModel, check_against_torch, export_onnx
    from detector.preprocess import normalize_clips
    from detector.timing import median, time_samples

    from .synth import synth_clips

    out = args.out or args.checkpoint.with_suffix(".onnx")
    # The exporter's graph passes log every rewrite at INFO; keep the command's output readable.
    for name in ("onnx_ir", "onnxscript"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))
    model, cfg, _ = load_checkpoint(args.checkpoint, device="cpu")
    export_onnx(model, cfg, out, opset=args.opset)
    runner = OnnxModel(out)
    clips = synth_clips(args.check_batch, cfg.input.frames, cfg.input.size)
    x = normalize_clips(clips, cfg.input.mean, cfg.input.std)
    diff = check_against_torch(model, runner, x)
    print(f"wrote {out} (ONNX opset {args.opset}, dynamic batch, input Bx3x{cfg.input.frames}x"
          f"{cfg.input.size[0]}x{cfg.input.size[1]})")
    print(f"max abs diff vs PyTorch on {args.check_batch} clips: "
          f"pred_logits {diff['pred_logits']:.3g}, pred_boxes {diff['pred_boxes']:.3g}")
    if args.time:
        with torch.inference_mode():
            t_torch = median(time_samples(lambda: model(x), repeats=5, warmup=1))
        t_onnx = median(time_samples(lambda: runner(x), repeats=5, warmup=1))
        print(f"batch {args.check_batch} on the CPU (median of 5): PyTorch fp32 "
              f"{1e3 * t_torch:.1f} ms, onnxruntime {1e3 * t_onnx:.1f} ms "
              f"(onnxruntime speed-up {t_torch / t_onnx:.2f}x)")
    if max(diff.values()) > args.atol:
        log.error("ONNX outputs differ from PyTorch by more than --atol %g", args.atol)
        return 1
    return 0


# --------------------------------------------------------------------------- ensemble
def cmd_ensemble(args: argparse.Namespace) -> int:
    """`vigil ensemble A.pt B.pt --out ENS.pt`: write, load back, and show one clip's scores."""
    import torch

    from detector.checkpoint import (ensemble_settings, load_checkpoint, member_payloads,
                                     payload_config, save_ensemble)
    from detector.init_weights import architecture, resolve_model_path
    from detector.preprocess import normalize_clips

    from .synth import synth_clips

    payloads, names = [], []
    for given in args.members:
        found = member_payloads(resolve_model_path(given))
        payloads += found
        names += [given if len(found) == 1 else f"{given} member {i}"
                  for i in range(1, len(found) + 1)]
    for new in args.swap:
        [payload] = member_payloads(new)
        want = architecture(payload_config(payload, str(new)))
        same = [i for i, p in enumerate(payloads) if architecture(payload_config(p)) == want]
        if len(same) != 1:
            print(f"vigil ensemble: --swap {new}: {len(same)} members have its architecture "
                  "(it replaces exactly one)", file=sys.stderr)
            return 2
        payloads[same[0]], names[same[0]] = payload, str(new)
    if len(payloads) < 2:
        print("vigil ensemble: give at least two checkpoints", file=sys.stderr)
        return 2
    box_from = None if args.boxes_from is None else args.boxes_from - 1
    if box_from is None and len(args.members) == 1:
        box_from = ensemble_settings(resolve_model_path(args.members[0])).get("box_from")
    if box_from is not None and not 0 <= box_from < len(payloads):
        print(f"vigil ensemble: --boxes-from {args.boxes_from}: there are {len(payloads)} "
              "members", file=sys.stderr)
        return 2
    save_ensemble(args.out, payloads, box_from=box_from, built_from=names)
    model, cfg, meta = load_checkpoint(args.out)
    clip = normalize_clips(synth_clips(1, cfg.input.frames, cfg.input.size),
                           cfg.input.mean, cfg.input.std)
    with torch.inference_mode():
        scores, _ = model.member_scores(clip)
        mean = scores.mean(dim=0)[0]
    print(f"wrote {args.out}: {meta['architecture']}, {meta['num_parameters']:,} parameters, "
          f"input {cfg.input.frames}x{cfg.input.size[0]}x{cfg.input.size[1]}")
    for i, name in enumerate(names):
        row = ", ".join(f"{n} {float(v):.3f}" for n, v in zip(cfg.class_names, scores[i, 0]))
        print(f"  member {i + 1} {name}: {row}")
    print("  mean: " + ", ".join(f"{n} {float(v):.3f}" for n, v in zip(cfg.class_names, mean))
          + " (a synthetic clip: a check that every member runs, not a measurement)")
    return 0
