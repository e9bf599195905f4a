"""``unlearnable evaluate``: train victims on protected vs clean data and compare clean test accuracy."""

from __future__ import annotations

import shutil
from pathlib import Path

import typer

from ..audit.evaluate import VICTIM_HELP, check_pair, default_victim, held_out_split, warn_unscored
from ..audit.validity import EXIT_INCONCLUSIVE
from ..log import log, progress_enabled, warn
from ..utils import parse_number
from . import accel_opts, app
from .outputs import wrote


def recipe_options(model: str | None, epochs: int | None, batch_size: int, lr: str, lr_scaling: str,
                   warmup_epochs: float, seed: int, device: str = "cpu", accel=None):
    """The victim recipe; an unset model/epochs is chosen for ``device`` (see default_victim). ``accel``: the
    :class:`~unlearnable.runtime.precision.Accel` of ``--precision``/``--sync-bn``/``--compile``."""
    from ..runtime.precision import Accel
    from ..train.loop import Recipe

    a = accel or Accel()
    model, epochs, _ = default_victim(device, model, epochs)  # announced once the inputs are checked
    r = Recipe(model=model, epochs=epochs, batch_size=batch_size, lr=parse_number(lr, "--lr"),
               lr_scaling=lr_scaling, warmup_epochs=warmup_epochs, seed=seed, precision=a.precision,
               sync_bn=a.sync_bn, compile=a.compile)
    r.validate()
    from ..models import MODELS

    MODELS.get(model)  # unknown model -> "did you mean"
    return r


def parse_mix(text: str) -> float:
    """``--mix R``: a fraction in [0, 1] (``0.5``, ``1/2``)."""
    from ..errors import UserError

    r = parse_number(text, "--mix")
    if not 0.0 <= r <= 1.0:
        raise UserError(f"--mix {text}: must be a fraction in [0, 1]")
    return r


def work_dir(out: Path, prot, clean, defenses: list[str], mix: float) -> Path:
    """The hidden folder beside ``out`` where an evaluation's victims checkpoint every epoch, so that re-running the
    same command resumes. Its name is a fingerprint of what they train on (both datasets' images, labels and
    training rows), the defences and the mix: other data or settings get a folder of their own (a changed recipe is
    refused inside the checkpoints)."""
    from ..runtime.checkpoint import fingerprint

    tag = fingerprint([defenses, mix], prot.images, prot.labels, prot.indices("train"),
                      clean.images, clean.labels, clean.indices("train"))
    return out.parent / f".{out.name}.partial-{tag}"


@app.command("evaluate")
def evaluate_cmd(
    protected: str = typer.Option(..., "--protected", help="a protect output folder (or any source)"),
    clean: str = typer.Option(..., "--clean", help="the clean source that was protected"),
    model: str = typer.Option(None, "--model", help=VICTIM_HELP),
    epochs: int = typer.Option(None, "--epochs", help="victim epochs (default: by device, see --model)"),
    batch_size: int = typer.Option(128, "--batch-size", help="GLOBAL batch size (split over ranks)"),
    lr: str = typer.Option("0.1", "--lr", help="learning rate at 128 samples per step"),
    lr_scaling: str = typer.Option("none", "--lr-scaling", help="none, linear or sqrt in batch_size/128"),
    warmup_epochs: float = typer.Option(0.0, "--warmup-epochs"),
    seed: int = typer.Option(0, "--seed"),
    out: Path = typer.Option(None, "--out", "-o", help="results folder (default: PROTECTED-audit)"),
    force: bool = typer.Option(False, "--force", help="replace an existing results folder"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N"),
    defense: list[str] = typer.Option([], "--defense", help="training-time defence NAME[:ARGS] (repeatable), e.g. "
                                      "jpeg:10, grayscale, at:linf:8/255:steps=5, finetune"),
    mix: str = typer.Option("1.0", "--mix", help="fraction of the training split that is protected (rest clean)"),
    size: int = typer.Option(None, "--size", min=1, help="train and test at NxN (both sets resized on load); "
                             "default: the images' own size, or where they differ (native Pets/Flowers102 "
                             "outputs) the size the protection was fitted at"),
    precision: str = accel_opts.PRECISION,
    sync_bn: bool = accel_opts.SYNC_BN,
    compile_: bool = accel_opts.COMPILE,
) -> None:
    """Audit a protection: clean test accuracy of a victim trained on protected vs clean data."""
    from ..audit.classes import ABOVE_SHARE, LEARNT_ABOVE, classes_learnt, per_class
    from ..audit.cues import colour_cues
    from ..audit.evaluate import evaluate
    from ..data import load
    from ..protect.run import load_output
    from ..report.figures import accuracy_curves
    from ..runtime import distributed as D
    from ..runtime.distributed import launcher_env, resolve_device
    from ..train.defenses import parse_defenses
    from ..utils import atomic_dir, check_output_free, check_separate, resumable_dir, write_json

    recipe = recipe_options(model, epochs, batch_size, lr, lr_scaling, warmup_epochs, seed,
                            resolve_device(device, launcher_env()[3]), accel_opts.accel(precision, sync_bn, compile_))
    defenses = parse_defenses(defense)
    mix_ratio = parse_mix(mix)
    out = out or Path(f"{str(protected).rstrip('/')}-audit")
    wrote(out)  # the default output folder gets config.yaml and the report too
    check_output_free(out, force)
    check_separate({"--protected": protected, "--clean": clean}, {"--out": out})
    info = D.init_from_env(device)
    try:
        D.per_rank_batch(recipe.batch_size)
        D.sync_bn_state(recipe.sync_bn)  # a CPU job that asks for SyncBatchNorm is refused before any work
        prot, manifest = load_output(protected, size=size, fit_mixed=True)
        if prot.meta.get("size_note"):
            log(prot.meta["size_note"])
        clean_ds = load(clean, size=size or (prot.size[0] if prot.meta.get("resized") else None),
                        seed=(manifest or {}).get("load", {}).get("seed", 0),
                        test_fraction=(manifest or {}).get("load", {}).get("test_fraction", 0.2))
        work = work_dir(out, prot, clean_ds, [d.spec for d in defenses], mix_ratio)
        test_split = held_out_split(clean_ds, "--clean")
        check_pair(prot, clean_ds, "train", test_split)  # inputs first: a bad pair is one line, nothing announced
        if test_split != "test":
            log(f"testing the victims on the clean '{test_split}' split (--clean has no 'test' split)")
        warn_unscored(clean_ds, test_split)
        log(default_victim(info.device, model, epochs)[2] or f"victim: {model}, {epochs} epochs (as set)")
        if D.is_main() and work.is_dir() and any(work.iterdir()):
            log(f"resuming from checkpoints in {work}")
        # A failed run keeps this folder only if it holds checkpoints (then the error line names it).
        with resumable_dir(work, "re-run the same command to resume from it", writer=D.is_main()):
            D.barrier()
            results = evaluate(prot, clean_ds, recipe, info.device, work_dir=work, progress=progress_enabled(),
                               defenses=defenses, mix=mix_ratio, floor=True, test_split=test_split)
        results["protected_source"] = str(protected)
        results["image_size"] = {"trained_at": list(prot.size), "resized": bool(prot.meta.get("resized")),
                                 "note": prot.meta.get("size_note")}
        results["clean_source"] = str(clean)
        if manifest is not None:
            results["method"] = manifest.get("method")
            results["key_fingerprint"] = manifest.get("key_fingerprint")
        if D.is_main():
            # the classes the clean images' own colour tells apart (audit/cues.py), at the budget the protection's
            # manifest records, beside the classes the victim kept
            results["colour_cues"] = colour_cues(clean_ds, test_split, (manifest or {}).get("linf_budget"))
            results["classes_learnt"] = classes_learnt(per_class(results["confusion"]["protected"], clean_ds.classes))
            results["learnt_above"], results["above_share"] = LEARNT_ABOVE, ABOVE_SHARE
            with atomic_dir(out, force) as tmp:
                write_json(tmp / "results.json", results)
                accuracy_curves(results["curves"], tmp / "curves.png", chance=results["chance_acc"],
                                invalid=results["invalid_reason"])
            shutil.rmtree(work, ignore_errors=True)
            floor = (f"  clean_rows_acc {results['clean_rows_acc']:.4f} (the clean rows alone: no unlearnable "
                     f"method goes below it at this mix)" if "clean_rows_acc" in results else "")
            best = (f"  (best epoch {results['protected_best_epoch']}: {results['protected_best_acc']:.4f})"
                    if results.get("protected_best_acc") is not None else "")
            typer.echo(f"clean_acc {results['clean_acc']:.4f}  protected_acc {results['protected_acc']:.4f}{best}  "
                       f"gap {results['gap']:.4f}{floor}  -> {out / 'results.json'}")
            if results.get("chance_note"):  # imbalanced test split: what chance is, and the per-class view
                clean_bal, prot_bal = (("n/a" if x is None else f"{x:.4f}")
                                       for x in (results["clean_balanced_acc"], results["protected_balanced_acc"]))
                log(f"{results['chance_note']}; balanced accuracy (mean per-class recall): clean {clean_bal}, "
                    f"protected {prot_bal}")
            if not results["valid"]:
                warn(f"INVALID: {results['invalid_reason']} (exit status {EXIT_INCONCLUSIVE})")
        D.barrier()
    finally:
        D.shutdown()
    if not results["valid"]:
        raise typer.Exit(EXIT_INCONCLUSIVE)
