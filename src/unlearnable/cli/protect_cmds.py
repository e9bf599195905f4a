"""``unlearnable protect``."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import UserError
from ..log import progress_enabled
from ..utils import parse_number
from . import accel_opts, app
from .common import parse_params


@app.command("protect")
def protect_cmd(
    source: str = typer.Argument(..., help="a .npz file, an image folder, a Pets/Flowers102 root, a built-in name, "
                                "or 3D subjects (an MRBrainS18 folder, a .csv of NIfTI paths, brain-phantoms:...)"),
    method: str = typer.Option(None, "--method", "-m", help="protection method (see `unlearnable datasets`)"),
    out: Path = typer.Option(..., "--out", "-o", help="output folder (written atomically)"),
    key: Path = typer.Option(None, "--key", help="key file (mode 0600); created if missing; default OUT.key"),
    splits: str = typer.Option("train", "--splits", help="splits to protect: train (default), all, or a,b"),
    param: list[str] = typer.Option(None, "--param", "-p", help="method parameter NAME=VALUE (repeatable)"),
    eps: str = typer.Option(None, "--eps", help="L-inf budget for budgeted methods, e.g. 8/255 (same as "
                                                  "--param eps=...)"),
    force: bool = typer.Option(False, "--force", help="replace an existing output"),
    like: Path = typer.Option(None, "--like", help="protect SOURCE with the stored perturbations of an earlier "
                              "output (same --key; no refit; class-wise methods, ar, tiles, cuda, lsp, uc)"),
    size: int = typer.Option(None, "--size", help="resize every image to SIZE x SIZE (default: keep native sizes)"),
    image_format: str = typer.Option("png", "--image-format", help="how protected images are saved: png (lossless "
                                     "PNG bytes under the original file name; default), keep (each file's own "
                                     "codec, JPEG q95 for .jpg: lossy) or jpeg:Q (lossy)"),
    work_size: int = typer.Option(None, "--work-size", help="size the method is fitted at when image sizes differ "
                                  "(default: their median short side, at most 224); outputs keep their native size"),
    seed: int = typer.Option(0, "--seed", help="seed of the train/test split for class-folder sources"),
    test_fraction: str = typer.Option("0.2", "--test-fraction", help="test share for class-folder sources"),
    device: str = typer.Option("auto", "--device", help="auto (this rank's GPU when there is one, else the CPU), "
                               "cpu, cuda or cuda:N; the device of the method's surrogates and of the --verify "
                               "victims"),
    surrogate: str = typer.Option(None, "--surrogate", help="UC: surrogate architecture (any registered model)"),
    surrogate_weights: Path = typer.Option(None, "--surrogate-weights", help="UC: local surrogate weights file; "
                                           "default: self-supervised (SimCLR) on the data itself"),
    clusters: int = typer.Option(None, "--clusters", help="UC: number of clusters K"),
    batch_size: int = typer.Option(None, "--batch-size", help="GLOBAL batch of the method's training (split over "
                                                             "ranks)"),
    epochs: int = typer.Option(None, "--epochs", help="training epochs of the method"),
    lr_scaling: str = typer.Option(None, "--lr-scaling", help="none, linear or sqrt in batch_size/base_batch"),
    warmup_epochs: float = typer.Option(None, "--warmup-epochs", help="linear learning-rate warm-up"),
    resume: bool = typer.Option(False, "--resume", help="continue an interrupted run from .OUT.partial/ (the "
                                "method's fit where it checkpoints, and the --verify victims)"),
    verify: bool = typer.Option(False, "--verify", help="train a short independent victim on the protected and the "
                                "clean training split before writing; the verdict goes into manifest.json"),
    target_acc: str = typer.Option(None, "--target-acc", help="search the smallest eps whose verified protected "
                                   "accuracy is at most this fraction (e.g. 0.2); implies --verify"),
    verify_victim: str = typer.Option("auto", "--verify-victim", help="victim(s) of --verify, comma-separated "
                                      "(auto: smallcnn, or the next model no surrogate used); with several, every "
                                      "one must be fooled, e.g. smallcnn,resnet18"),
    verify_epochs: int = typer.Option(16, "--verify-epochs", help="epochs of each --verify victim (audit.verify."
                                      "VERIFY_EPOCHS; about 10-20 s per 1,000 images of 32x32 per victim, and "
                                      "as much again for its clean twin, on 2 CPU cores)"),
    verify_size: int = typer.Option(None, "--verify-size", help="train and test the --verify victims on images "
                                    "resized to N x N (antialiased), as a trainer who downscales them would; "
                                    "default: the working size"),
    verify_score: str = typer.Option("final", "--verify-score", help="which epoch of the protected --verify victim "
                                     "the verdict and --target-acc score: final (the papers' rule) or best (its best "
                                     "epoch on the clean test split, what a trainer who keeps the best epoch gets)"),
    precision: str = accel_opts.PRECISION,
    sync_bn: bool = accel_opts.SYNC_BN,
    compile_: bool = accel_opts.COMPILE,
) -> None:
    """Protect the training split of SOURCE and write it to OUT in the same format, with a manifest.

    Runs unchanged under torchrun / srun / jsrun: every rank trains, rank 0 writes.
    """
    from ..protect.run import protect_source
    from ..runtime import distributed as D

    params = parse_params(param)
    flags = {"eps": eps, "surrogate": surrogate, "surrogate_weights": surrogate_weights, "clusters": clusters,
             "batch_size": batch_size, "epochs": epochs, "lr_scaling": lr_scaling, "warmup_epochs": warmup_epochs}
    params.update({k: str(v) for k, v in flags.items() if v is not None})
    dev = D.resolve_device(device, D.launcher_env()[3])
    acc = accel_opts.accel(precision, sync_bn, compile_)
    from ..protect3d import VOLUME_METHODS, is_subject_source

    if is_subject_source(source):  # 3D segmentation subjects: their own methods, writer and manifest
        from ..protect3d.cli import protect_subjects_cmd

        unused = {"--like": like, "--size": size, "--work-size": work_size, "--verify": verify or None,
                  "--verify-size": verify_size, "--verify-score": None if verify_score == "final" else verify_score,
                  "--target-acc": target_acc, "--surrogate-weights": surrogate_weights, "--clusters": clusters}
        protect_subjects_cmd(source, method, out, key, splits, params, force, dev, seed, test_fraction, resume,
                             [k for k, v in unused.items() if v is not None])
        return
    if method in VOLUME_METHODS:
        raise UserError(f"--method {method}: a 3D method, but {source} is not a subjects source (an MRBrainS18 "
                        "folder, a .csv of NIfTI paths, brain-phantoms:...)")
    if like is not None:
        from ..protect.like import protect_like

        if (verify or target_acc is not None or verify_size is not None or verify_score != "final" or resume
                or work_size is not None):
            raise UserError("--like: cannot be combined with --verify, --target-acc, --verify-size, --verify-score, "
                            "--resume or --work-size (the stored perturbation keeps its fit size)")
        protect_like(source, like, out, key, splits, params, method, force, dev, size, seed,
                     parse_number(test_fraction, "--test-fraction"), progress_enabled(), image_format=image_format)
        return
    if method is None:
        raise UserError("--method: missing (the recommended one is --method tiles; `unlearnable datasets` lists "
                        "them all; or pass --like OUT to protect like an earlier output)")
    if verify_score != "final" and not verify and target_acc is None:
        raise UserError(f"--verify-score {verify_score}: only with --verify or --target-acc (it sets what their "
                        "verdict scores)")
    if verify_size is not None and not verify and target_acc is None:
        raise UserError(f"--verify-size {verify_size}: only with --verify or --target-acc (it sets the size their "
                        "victims train at)")
    review = None
    if verify or target_acc is not None:
        from ..audit.verify import VerifyOptions, make_review

        target = parse_number(target_acc, "--target-acc") if target_acc is not None else None
        review = make_review(VerifyOptions(victim=verify_victim, epochs=verify_epochs, target_acc=target,
                                           size=verify_size, score=verify_score,
                                           device=dev, precision=acc.precision, sync_bn=acc.sync_bn,
                                           compile=acc.compile))
    try:
        manifest = protect_source(source, method, out, key, splits, params, force, dev, size, seed,
                                  parse_number(test_fraction, "--test-fraction"), progress_enabled(), resume=resume,
                                  review=review, image_format=image_format, work_size=work_size, accel=acc)
    finally:
        D.shutdown()
    checked = manifest.get("verify") or {}
    if checked.get("verdict") == "invalid":  # written, but the check proves nothing (same rule as evaluate/audit)
        from ..audit.validity import EXIT_INCONCLUSIVE
        from ..log import warn

        warn(f"--verify INVALID: {checked['reason']} (exit status {EXIT_INCONCLUSIVE})")
        raise typer.Exit(EXIT_INCONCLUSIVE)
