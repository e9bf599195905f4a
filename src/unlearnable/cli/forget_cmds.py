"""``segment train``, ``segment predict`` and ``forget``: 3D segmentation and machine unlearning."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import typer

from ..errors import UserError
from ..forget import STRATEGIES
from ..models.seg3d import SEG_MODELS
from . import accel_opts, app
from .common import choices_help
from .outputs import withhold

SEG_MODEL_NAMES, STRATEGY_NAMES = SEG_MODELS.names(), STRATEGIES.names()
DEFAULT_STRATEGY = "max-loss"  # with its calibrated stop the closest to retrain in bench/forget.py: docs/unlearning.md

segment_app = typer.Typer(help="Train 3D segmenters on subjects (MRBrainS18 folders, NIfTI CSVs, brain-phantoms).",
                          no_args_is_help=True)
app.add_typer(segment_app, name="segment")


def _ckpt_dir(out: Path) -> Path:
    """Checkpoints of an unfinished run live beside the output, so an interrupted run can --resume."""
    return out.parent / f".{out.name}.ckpt"


MODALITIES_HELP = ("channels by name, in this order (MRBrainS18: any of T1,IR,FLAIR; a CSV: its columns); "
                   "default: {}")


def _check_patch(patch: int) -> None:
    if patch < 16 or patch % 8:
        raise UserError(f"--patch {patch}: must be a multiple of 8 and at least 16 (the ResNets have stride 8)")


@segment_app.command("train")
def segment_train(
    subjects: str = typer.Argument(..., help="brain-phantoms[:n=12,size=32], an MRBrainS18 folder, or a .csv"),
    out: Path = typer.Option(..., "--out", help="model folder to write"),
    # defaults: test Dice ≥ 0.75 on brain-phantoms:n=24,size=48 in 8-11 minutes on 2 shared CPU cores (60-80 epochs)
    model: str = typer.Option("unet", "--model", show_default=False,
                              help=choices_help("one of:", SEG_MODEL_NAMES, " (default: unet)")),
    width: int = typer.Option(16, "--width", help="base channels (Med3D: 64; UNet: 16)"),
    patch: int = typer.Option(32, "--patch", help="training patch edge (voxels, multiple of 8)"),
    epochs: int = typer.Option(80, "--epochs"),
    batch_size: int = typer.Option(2, "--batch-size", help="global batch size (split over ranks)"),
    lr: float = typer.Option(3e-3, "--lr"),
    patches_per_subject: int = typer.Option(2, "--patches-per-subject", help="random crops per subject per epoch"),
    test_fraction: float = typer.Option(0.25, "--test-fraction", help="subjects held out (split by subject id)"),
    shape: str = typer.Option("", "--shape", help="resample subjects to D,H,W"),
    modalities: str = typer.Option("", "--modalities", help=MODALITIES_HELP.format("every one the subjects have")),
    pretrained: Path = typer.Option(None, "--pretrained", help="MedicalNet weights (.pth) for the encoder"),
    seed: int = typer.Option(0, "--seed"),
    shards: int = typer.Option(0, "--shards", help="SISA: train this many sub-models on disjoint subject shards "
                                                    "(0: one model); 'forget --strategy sisa' then forgets exactly"),
    slices: int = typer.Option(2, "--slices", help="SISA: slices per shard, checkpointed after each"),
    device: str = typer.Option("auto", "--device"),
    force: bool = typer.Option(False, "--force", help="replace an existing output"),
    resume: bool = typer.Option(False, "--resume", help="continue an interrupted run from its last epoch"),
    precision: str = accel_opts.PRECISION,
    sync_bn: bool = accel_opts.SYNC_BN,
) -> None:
    """Train a 3D segmenter; held-out subjects are chosen by id and recorded in model.json."""
    from ..data.subjects import load_subjects, parse_modalities, parse_shape, split_by_id
    from ..forget.metrics import evaluate, public
    from ..models.seg3d import SEG_MODELS
    from ..registry import look_up_option
    from ..runtime.distributed import barrier, init_from_env, is_main, per_rank_batch, shutdown, sync_bn_state
    from ..segment.train import SegConfig, arch_of, config_dict, save_model, train_segmenter
    from ..utils import atomic_dir, check_output_free, check_separate, keep_or_remove

    look_up_option(model, SEG_MODELS.names(), "model")
    _check_patch(patch)
    if epochs < 1:
        raise UserError(f"--epochs {epochs}: must be at least 1")
    check_output_free(out, force)
    check_separate({"SUBJECTS": subjects, "--pretrained": pretrained}, {"--out": out})
    info = init_from_env(device)
    per_rank_batch(batch_size)
    sync_bn_state(sync_bn)
    s = load_subjects(subjects, parse_shape(shape), parse_modalities(modalities))
    s = s.with_splits(split_by_id(s.ids, test_fraction, seed))
    train, test = s.select(s.ids_in("train")), s.select(s.ids_in("test"))
    cfg = SegConfig(model, width, patch, epochs, batch_size, lr, patches_per_subject, seed,
                    accel_opts.accel(precision).precision, sync_bn)
    ck = _ckpt_dir(out)
    if not resume and is_main():
        shutil.rmtree(ck, ignore_errors=True)
    barrier()
    if is_main():
        print(f"segment train: {len(train)} train / {len(test)} test subjects, {s.shape} voxels, "
              f"world size {info.world_size}, per-rank batch {per_rank_batch(batch_size)}, device {info.device}")
    if shards < 0 or (shards and (pretrained or info.world_size > 1)):
        raise UserError(f"--shards {shards}: must be ≥ 0, and SISA training runs in one process without "
                        "--pretrained")
    sisa: dict[str, Any] = {}
    try:
        if shards:
            from ..segment.shards import train_sisa

            net, summary = train_sisa(train.images, train.labels, train.ids, s.num_classes, cfg, shards, slices,
                                      info.device, ck)
            sisa = summary.pop("sisa")
        else:
            net, summary = train_segmenter(train.images, train.labels, s.num_classes, cfg, info.device,
                                           str(pretrained) if pretrained else None, ck)
    except BaseException:
        if is_main():  # the error line names the checkpoints, if any were saved
            keep_or_remove(ck, "re-run with --resume to continue")
        raise
    scores = {name: public(evaluate(net, part.images, part.labels, s.scored, patch, info.device))
              for name, part in (("train", train), ("test", test))}
    if is_main():
        meta: dict[str, Any] = {
            "arch": {**arch_of(cfg, s.channels, s.num_classes), **({"shards": shards} if shards else {})},
            "config": config_dict(cfg), "subjects": subjects,
            "shape": list(s.shape), "classes": list(s.classes), "scored": list(s.scored),
            "modalities": list(s.modalities), "labels": s.meta.get("labels"),
            "synthetic": bool(s.meta.get("synthetic")),
            "subject_sha256": s.hashes(),  # what the model learnt (train) and was scored on (test); forget checks it
            "train_ids": list(train.ids), "test_ids": list(test.ids), "training": summary,
            "scores": scores, **({"sisa": sisa} if sisa else {})}
        with atomic_dir(out, force) as tmp:
            save_model(tmp, net, meta)
            if sisa:  # the slice checkpoints are part of the model: exact forgetting resumes from them
                shutil.copytree(ck / "shards", tmp / "shards")
        shutil.rmtree(ck, ignore_errors=True)
        print(f"wrote {out}: train Dice {scores['train']['dice']:.3f}, test Dice {scores['test']['dice']:.3f}")
    shutdown()


@app.command("forget")
def forget(
    model_dir: Path = typer.Argument(..., help="model folder from 'segment train'"),
    subjects: str = typer.Argument(..., help="the subjects the model was trained on (same source as for training)"),
    forget_ids: str = typer.Option(..., "--forget", help="comma list of subject ids to forget"),
    out: Path = typer.Option(..., "--out", help="output folder"),
    strategy: str = typer.Option(DEFAULT_STRATEGY, "--strategy",
                                 show_default=False,
                                 help=choices_help("one of", STRATEGY_NAMES, ", a comma list, or 'all' (every "
                                                   f"strategy + retrain); default: {DEFAULT_STRATEGY}")),
    epochs: str = typer.Option("20,50", "--epochs", help="horizons in retrain epochs, one run checkpointed at each"),
    budget: float = typer.Option(0.1, "--budget", help="steps an approximate strategy may take, as a share of "
                                                       "retrain's steps at the same horizon"),
    stop: str = typer.Option("auto", "--stop", help="auto (calibrated for finetune, salun and scrub when the model "
                                                    "holds out subjects, else none), none, or calibrated (stop when "
                                                    "forget subjects' loss reaches the held-out spread)"),
    lr: float = typer.Option(None, "--lr", help="learning rate (default: the model's training lr)"),
    batch_size: int = typer.Option(None, "--batch-size", help="global batch size (default: as trained)"),
    seed: int = typer.Option(None, "--seed"),
    modalities: str = typer.Option("", "--modalities", help=MODALITIES_HELP.format("the model's")),
    record_key: Path = typer.Option(None, "--record-key",
                                    help="key file (0600) for the erasure record's HMACs; created if missing; "
                                         "default OUT.key"),
    device: str = typer.Option("auto", "--device"),
    force: bool = typer.Option(False, "--force", help="replace an existing output"),
    resume: bool = typer.Option(False, "--resume", help="reuse the checkpoints of an interrupted run"),
) -> None:
    """Make a trained segmenter forget subjects; writes results.json, models, an erasure record and a report.

    SUBJECTS must hold the very volumes the model learnt: each subject's content hash is checked against model.json.
    """
    from ..data.subjects import parse_modalities
    from ..forget.run import run_forget
    from ..report.forget_figures import results_table, write_report
    from ..runtime.distributed import init_from_env, is_main, per_rank_batch, shutdown
    from ..utils import check_separate, keep_or_remove

    withhold("forget_ids")  # the output names forgotten subjects only by HMAC: config.yaml must not list them
    check_separate({"MODEL_DIR": model_dir, "SUBJECTS": subjects}, {"--out": out, "--record-key": record_key})
    info = init_from_env(device)
    if batch_size is not None:
        per_rank_batch(batch_size)
    try:
        results = run_forget(model_dir, subjects, forget_ids, strategy, epochs, out,
                             {"lr": lr, "batch_size": batch_size, "seed": seed}, info.device, force, resume,
                             render=write_report, record_key=record_key, modalities=parse_modalities(modalities),
                             budget=budget, stop=stop)
    except BaseException:
        if is_main():  # horizons already reached are checkpointed beside the output
            keep_or_remove(_ckpt_dir(out), "re-run with --resume to continue")
        raise
    if is_main():
        print(results_table(results), end="")
        print(f"wrote {out}")
    shutdown()


@segment_app.command("export")
def segment_export(
    subjects: str = typer.Argument(..., help="brain-phantoms[:n=12,size=32,...], an MRBrainS18 folder, or a .csv"),
    out: Path = typer.Option(..., "--out", help="folder to write in the MRBrainS18 layout"),
    modalities: str = typer.Option("", "--modalities",
                                   help=MODALITIES_HELP.format("all (brain-phantoms: T1,IR,FLAIR)")),
    shape: str = typer.Option("", "--shape", help="resample subjects to D,H,W"),
    force: bool = typer.Option(False, "--force", help="replace an existing output"),
) -> None:
    """Write subjects as NIfTI in the published MRBrainS18 layout: <id>/pre/reg_T1.nii.gz, reg_IR.nii.gz,
    FLAIR.nii.gz and <id>/segm.nii.gz (e.g. brain-phantoms to try the real-data route end to end)."""
    from ..data.formats.mrbrains import write_mrbrains
    from ..data.subjects import load_subjects, parse_modalities, parse_shape
    from ..utils import atomic_dir, check_output_free

    check_output_free(out, force)
    mods = parse_modalities(modalities)
    if mods is None and subjects.split(":", 1)[0] == "brain-phantoms" and "channels=" not in subjects:
        mods = ("T1", "IR", "FLAIR")  # the published layout has all three sequences
    s = load_subjects(subjects, parse_shape(shape), mods)
    with atomic_dir(out, force) as tmp:
        write_mrbrains(s, tmp)
    print(f"wrote {out}: {len(s)} subjects, {', '.join(s.modalities)}, {s.shape} voxels, labels {s.meta['labels']}")


@segment_app.command("predict")
def segment_predict(
    model_dir: Path = typer.Argument(..., help="model folder from 'segment train'"),
    subjects: str = typer.Argument(..., help="subjects to segment (brain-phantoms, an MRBrainS18 folder, a .csv)"),
    out: Path = typer.Option(..., "--out", help="folder for <id>/segm.nii.gz predictions"),
    device: str = typer.Option("auto", "--device"),
    force: bool = typer.Option(False, "--force", help="replace an existing output"),
) -> None:
    """Segment subjects; each prediction is written on its image's grid and header (affine, codes, units)."""
    from ..data.formats.mrbrains import LABEL_FILE, subject_headers
    from ..data.formats.nifti import write_volume
    from ..data.subjects import load_subjects
    from ..runtime.distributed import init_from_env
    from ..segment.infer import predict_labels
    from ..segment.train import load_model
    from ..utils import atomic_dir, check_output_free

    check_output_free(out, force)
    info = init_from_env(device)
    net, meta = load_model(model_dir, info.device)
    shape = meta.get("shape") if not subjects.startswith("brain-phantoms") else None
    s = load_subjects(subjects, shape, meta.get("modalities"))
    if list(s.shape) != meta.get("shape"):
        raise UserError(f"{subjects}: shape {list(s.shape)} does not match the model's {meta.get('shape')}")
    with atomic_dir(out, force) as tmp:
        for i, sid in enumerate(s.ids):
            pred = predict_labels(net, s.images[i:i + 1], meta["config"]["patch"], info.device)[0]
            like = subject_headers(s, i)[s.modalities[0]].as_label_map(
                str(meta.get("labels") or "numbered"), f"unlearnable segment predict {meta['model_sha256'][:16]}")
            write_volume(tmp / sid / LABEL_FILE, pred.numpy(), like, np.uint8)
    print(f"wrote {out}: {len(s)} predicted label maps")
