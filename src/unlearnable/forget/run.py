"""``forget``: unlearn forget subjects from a trained model with one or more strategies, score, and record it.

Output folder::

    results.json          {"original": {split: metrics}, "strategies": {name: {horizon: {...}}}, ...}; each
                          horizon has Dice/MAE per split, MIA (loss and learned attack, bootstrap intervals),
                          time and optimiser steps, and both relative to ``retrain``
    models/<strategy>/<horizon>/   the unlearned models (model.pt + model.json; no raw forget ids inside)
    erasure_record.json   hashes of the models before/after, the forgotten subjects keyed (HMAC) by the record key,
                          strategy, metrics, time (see forget/record.py)
    overlay.npz           middle axial slice of one forget subject: image, truth, predictions before and after
    report.md, dice_bars.png, overlay.png   drawn from the files above by a ``render`` callback (``report``)
"""

from __future__ import annotations

import contextlib
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.subjects import SubjectSet, load_subjects
from ..errors import UserError
from ..models.seg3d import build_seg_model
from ..runtime.distributed import barrier, is_main
from ..segment.infer import predict_labels
from ..segment.train import SegConfig, load_model, save_model
from ..utils import atomic_dir, check_output_free, write_json
from .base import STOPS, STRATEGIES, ForgetTask, run_strategy, strategy_names
from .metrics import evaluate, headline, public
from .mia import membership
from .record import check_learnt, erasure_record, forgotten_entries


def parse_horizons(text: str) -> list[int]:
    """``"20,50"`` → ``[20, 50]`` (sorted, unique, positive)."""
    try:
        vals = sorted({int(p) for p in str(text).split(",") if p.strip()})
    except ValueError:
        raise UserError(f"--epochs '{text}': expected a comma list of whole numbers, e.g. 20,50") from None
    if not vals or vals[0] < 1:
        raise UserError(f"--epochs '{text}': horizons must be positive epoch counts")
    return vals


def parse_ids(text: str) -> list[str]:
    ids = list(dict.fromkeys(p.strip() for p in str(text).split(",") if p.strip()))
    if not ids:
        raise UserError("--forget: name at least one subject id (ID1,ID2)")
    return ids


@dataclass
class Plan:
    """Everything checked before a single byte is written."""

    subjects: SubjectSet
    retain: SubjectSet
    forget: SubjectSet
    test: SubjectSet
    model: torch.nn.Module
    meta: dict[str, Any]
    cfg: SegConfig
    strategies: list[str]
    horizons: list[int]
    content: dict[str, str]  # content SHA-256 of every subject used, checked against the model's record
    budget: float = 0.1
    stop: str = "auto"


def plan(model_dir: str | Path, source: str, forget_ids: str, strategy: str, epochs: str, overrides: dict[str, Any],
         device: str = "cpu", modalities: Sequence[str] | None = None, budget: float = 0.1, stop: str = "auto",
         ) -> Plan:
    """Load and validate the inputs of a ``forget`` run; raises UserError on any bad input.

    ``modalities`` defaults to the channels the model was trained on.
    """
    from ..registry import look_up_option

    strategies, horizons, ids = strategy_names(strategy), parse_horizons(epochs), parse_ids(forget_ids)
    stop = look_up_option(stop, STOPS, "--stop")
    if not 0.0 < budget <= 1.0:
        raise UserError(f"--budget {budget}: must be a share of retrain's steps in (0, 1]")
    model, meta = load_model(model_dir, device)
    if "sisa" in strategies and not meta.get("sisa"):
        if strategy.strip() != "all" and "sisa" in [p.strip() for p in strategy.split(",")]:
            raise UserError(f"--strategy sisa: {model_dir} was not trained with 'segment train --shards S', so it "
                            "has no shard checkpoints to retrain from")
        strategies = [n for n in strategies if n != "sisa"]
    shape = meta.get("shape") if not source.startswith("brain-phantoms") else None
    s = load_subjects(source, shape, modalities if modalities is not None else meta.get("modalities"))
    for key, have in (("shape", list(s.shape)), ("modalities", list(s.modalities)), ("classes", list(s.classes))):
        if meta.get(key) != have:
            raise UserError(f"{source}: {key} {have} do not match the model's {meta.get(key)}")
    s.index_of(ids, "subject id in --forget")
    train_ids, test_ids = list(meta["train_ids"]), list(meta["test_ids"])
    not_trained = [i for i in ids if i not in train_ids]
    if not_trained:
        where = "held out as a test subject" if not_trained[0] in test_ids else "not among the training subjects"
        raise UserError(f"--forget {not_trained[0]}: {where} of {model_dir}; only trained subjects can be forgotten")
    retain_ids = [i for i in train_ids if i not in ids]
    if not retain_ids:
        raise UserError(f"--forget names all {len(train_ids)} training subjects: nothing would be left to retain "
                        "(train a new model instead)")
    s.index_of(retain_ids + test_ids, "training subject (missing from SUBJECTS)")
    content = check_learnt(s, ids + retain_ids + test_ids, meta, model_dir, source)
    cfg = replace(SegConfig(**meta["config"]), **{k: v for k, v in overrides.items() if v is not None})
    return Plan(s, s.select(retain_ids), s.select(ids), s.select(test_ids), model, meta, cfg, strategies, horizons,
                content, budget, stop)


def score_model(model: torch.nn.Module, p: Plan, device: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Public metrics on retain/forget/test and the membership attacks (forget vs held-out, forget/mia.py)."""
    out, raw = {}, {}
    for name, part in (("retain", p.retain), ("forget", p.forget), ("test", p.test)):
        raw[name] = evaluate(model, part.images, part.labels, p.subjects.scored, p.cfg.patch, device)
        out[name] = public(raw[name])
    return out, membership(raw["retain"], raw["forget"], raw["test"], seed=p.cfg.seed)


def _gap(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or math.isnan(a) or math.isnan(b) else abs(a - b)


def _learned(r: dict[str, Any]) -> float | None:
    return ((r.get("mia") or {}).get("learned") or {}).get("auc")


def add_comparisons(results: dict[str, Any]) -> None:
    """Fill headline figures, gaps to ``retrain`` at the same horizon and time/steps relative to it, in place."""
    ref = results["strategies"].get("retrain", {})
    for runs in results["strategies"].values():
        for h, r in runs.items():
            r["headline"] = headline(results["original"], r)
            g = ref.get(h)
            r["gap_to_retrain"] = {
                "forget_dice": _gap(r["forget"]["dice"], g["forget"]["dice"]) if g else None,
                "test_dice": _gap(r["test"]["dice"], g["test"]["dice"]) if g else None,
                "mia_auc": _gap(r["mia_auc"], g["mia_auc"]) if g else None,
                "mia_learned_auc": _gap(_learned(r), _learned(g)) if g else None}
            r["time_rel_retrain"] = r["time_s"] / g["time_s"] if g and g["time_s"] > 0 else None
            r["steps_rel_retrain"] = r.get("steps", 0) / g["steps"] if g and g.get("steps") else None
            r["cpu_rel_retrain"] = r["cpu_s"] / g["cpu_s"] if g and r.get("cpu_s") and g.get("cpu_s") else None
    results["retrain_mia_auc"] = {h: r["mia_auc"] for h, r in ref.items()} or None


def run_forget(model_dir: str | Path, source: str, forget_ids: str, strategy: str, epochs: str, out: str | Path,
               overrides: dict[str, Any] | None = None, device: str = "cpu", force: bool = False,
               resume: bool = False, render: Callable[[Path], Any] | None = None,
               record_key: str | Path | None = None, modalities: Sequence[str] | None = None,
               budget: float = 0.1, stop: str = "auto") -> dict[str, Any]:
    """Validate, unlearn with every requested strategy through every horizon, score, write the output folder.

    The erasure record is keyed with the key file ``record_key`` (default ``OUT.key``; created, mode 0600, if
    missing and written only when the run succeeds). ``render(folder)`` (the CLI passes the report's) draws the
    figures from the written files inside the atomic output step.
    """
    from ..protect.keys import load_or_create_key, save_key

    out = Path(out)
    check_output_free(out, force)
    key_path = Path(record_key) if record_key else out.with_name(out.name + ".key")
    key, created = load_or_create_key(key_path)
    p = plan(model_dir, source, forget_ids, strategy, epochs, overrides or {}, device, modalities, budget, stop)
    ckpt = out.parent / f".{out.name}.ckpt"
    if not resume and is_main():
        shutil.rmtree(ckpt, ignore_errors=True)
    barrier()
    task = ForgetTask(p.retain.images, p.retain.labels, p.forget.images, p.forget.labels,
                      p.subjects.num_classes, p.cfg, device, p.test.images, p.test.labels, p.budget, p.stop,
                      tuple(p.retain.ids), tuple(p.forget.ids), Path(model_dir), p.meta)
    arch = p.meta["arch"]
    before, before_mia = score_model(p.model, p, device)
    results: dict[str, Any] = {
        "original": {**before, "mia_auc": before_mia["loss"]["auc"], "mia": before_mia}, "strategies": {},
        "setup": {"subjects": source, "synthetic": bool(p.subjects.meta.get("synthetic")), "horizons": p.horizons,
                  "n_retain": len(p.retain), "n_forget": len(p.forget), "n_test": len(p.test),
                  "scored_classes": [p.subjects.classes[c] for c in p.subjects.scored], "model": arch,
                  "lr": p.cfg.lr, "batch_size": p.cfg.batch_size, "patch": p.cfg.patch, "budget": p.budget,
                  "stop": p.stop, "retrain_steps_per_epoch": task.steps_per_epoch(),
                  "sisa": {k: v for k, v in p.meta["sisa"].items() if k != "plan"} if p.meta.get("sisa") else None}}
    hashes: dict[str, dict[str, str]] = {}
    overlay_preds: dict[str, torch.Tensor] = {}
    entries = forgotten_entries(key, p.forget.ids, p.content)
    kept = {i: p.content[i] for i in (*p.retain.ids, *p.test.ids)}
    ctx = atomic_dir(out, force) if is_main() else contextlib.nullcontext(None)
    with ctx as tmp:
        for name in p.strategies:
            runs: dict[str, Any] = {}
            strat = STRATEGIES.get(name)()

            def on_horizon(h: int, model: torch.nn.Module, time_s: float, name: str = name,
                           runs: dict[str, Any] = runs, strat: Any = strat) -> None:
                scores, mia = score_model(model, p, device)
                prog = strat.progress.get(h, {})
                runs[str(h)] = {**scores, "mia_auc": mia["loss"]["auc"], "mia": mia, "time_s": time_s,
                                "cpu_s": prog.get("cpu_s"),
                                "steps": prog.get("steps", 0), "stopped_at": prog.get("stopped_at"),
                                "stop": prog.get("stop", "none"), "guarantee": strat.guarantee,
                                **({"retrained_shards": prog["retrained_shards"]}
                                   if "retrained_shards" in prog else {})}
                if tmp is not None:
                    meta = {k: v for k, v in p.meta.items() if k not in ("train_ids", "model_sha256", "scores")}
                    meta.update(train_ids=list(p.retain.ids), scores={k: scores[k] for k in ("retain", "test")},
                                subject_sha256=kept,
                                unlearning={"strategy": name, "epochs": h, "time_s": time_s,
                                            "steps": prog.get("steps", 0), "guarantee": strat.guarantee,
                                            "forgotten": [e["id_hmac"] for e in entries],
                                            "key_fingerprint": key.fingerprint, "from": p.meta.get("model_sha256")})
                    if hasattr(strat, "meta_update"):
                        meta.update(strat.meta_update(p.meta))
                    elif name == "retrain" and "sisa" in meta:  # a fresh single model: no shards behind it
                        del meta["sisa"]
                    folder = tmp / "models" / name / str(h)
                    if name == "retrain":
                        meta["arch"] = {k: v for k, v in meta["arch"].items() if k != "shards"}
                    hashes.setdefault(name, {})[str(h)] = save_model(folder, model, meta)
                    if hasattr(strat, "save_extra"):
                        strat.save_extra(folder)
                if h == p.horizons[-1]:
                    overlay_preds[name] = predict_labels(model, p.forget.images[:1], p.cfg.patch, device)[0]

            def fresh() -> torch.nn.Module:
                torch.manual_seed(p.cfg.seed + 1)
                return build_seg_model(arch["name"], arch["in_channels"], arch["num_classes"], arch["width"])

            run_strategy(strat, p.model, fresh, task, p.horizons, on_horizon, ckpt)
            results["strategies"][name] = runs
        add_comparisons(results)
        if tmp is not None:
            write_json(tmp / "results.json", results)
            write_json(tmp / "erasure_record.json", erasure_record(
                key=key, entries=entries, meta=p.meta, model_dir=model_dir, strategies=p.strategies,
                horizons=p.horizons, results=results, hashes=hashes, n_retain=len(p.retain), n_test=len(p.test)))
            before_pred = predict_labels(p.model, p.forget.images[:1], p.cfg.patch, device)[0]
            write_overlay(tmp / "overlay.npz", p.forget.images[0], p.forget.labels[0], before_pred, overlay_preds,
                          p.subjects.classes)
            if render is not None:
                render(tmp)
    if is_main():
        shutil.rmtree(ckpt, ignore_errors=True)
        if created:
            save_key(key, key_path)
            print(f"created record key {key_path} (mode 0600, fingerprint {key.fingerprint}); keep it to verify "
                  "the erasure record")
    return results


def write_overlay(path: Path, image: torch.Tensor, truth: torch.Tensor, before: torch.Tensor,
                  after: dict[str, torch.Tensor], classes: Sequence[str]) -> None:
    """Save the middle axial slice of one subject for the report: image ``(C, D, H, W)`` (channel 0 kept), label
    maps ``(D, H, W)`` (truth, before, and after each strategy), as ``(D, H)`` arrays in ``overlay.npz``."""
    z = image.shape[-1] // 2
    np.savez_compressed(path, image=image[0, :, :, z].numpy(), truth=truth[:, :, z].numpy(),
                        before=before[:, :, z].numpy(), strategies=np.array(list(after), dtype=str),
                        classes=np.array(list(classes), dtype=str),
                        **{f"after_{i}": a[:, :, z].numpy() for i, a in enumerate(after.values())})
