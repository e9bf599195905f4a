"""What each command's output folder holds, as Markdown: one renderer per kind of folder, from its files only.

A kind is a name, a test on the folder's files, a renderer that returns Markdown sections and optionally a drawer
that writes the kind's figures from its results files (:func:`draw`, run before the Markdown is built). Kinds are
tried in registration order; the first whose test passes renders the folder, and :func:`generic` renders anything
else (every JSON file's top-level scalars). A new command's folder gets its own tables by registering one more kind.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..audit.classes import learnt_rule
from ..log import name_list
from .audit_figures import draw_audit, draw_sweep
from .render import markdown_table, pct

Renderer = Callable[[Path], list[str]]
KINDS: dict[str, tuple[Callable[[Path], bool], Renderer]] = {}
DRAWERS: dict[str, Callable[[Path], None]] = {}


def kind(name: str, test: Callable[[Path], bool], draw: Callable[[Path], None] | None = None,
         ) -> Callable[[Renderer], Renderer]:
    """Register the renderer (and the figure drawer, if any) of the folders that pass ``test``; duplicate names are
    refused."""

    def deco(fn: Renderer) -> Renderer:
        if name in KINDS:
            raise ValueError(f"report kind '{name}' is already registered")
        KINDS[name] = (test, fn)
        if draw is not None:
            DRAWERS[name] = draw
        return fn

    return deco


def read_json(path: Path) -> Any:
    """A results file, or ``None`` when it is absent or unreadable (a report shows what it can)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _has(name: str, *keys: str) -> Callable[[Path], bool]:
    def test(folder: Path) -> bool:
        doc = read_json(folder / name)
        return isinstance(doc, dict) and all(k in doc for k in keys)

    return test


def num(x: Any, fmt: str = "{:.3f}") -> str:
    return "–" if x is None or isinstance(x, bool) or not isinstance(x, (int, float)) else fmt.format(x)


def _acc(x: Any) -> str:
    return pct(x) if isinstance(x, (int, float)) else "–"


def kv_table(items: Mapping[str, Any]) -> str:
    """A two-column Markdown table of names and values (nested values shown as compact JSON)."""
    rows = [{"name": k, "value": v if not isinstance(v, (dict, list)) else json.dumps(v, separators=(",", ":"))}
            for k, v in items.items()]
    return markdown_table(rows, ["name", "value"], floats="{:.4g}")


def scalars(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if v is None or isinstance(v, (str, int, float, bool))}


# ------------------------------------------------------------------------------------------------------- protect
def quality_table(metrics: Mapping[str, Mapping[str, Any]]) -> str:
    """Per split: PSNR (dB), SSIM (with its standard error where it was measured on a sample), largest and mean
    L-inf change (grey levels), mean L2, share of images changed."""
    rows = [{"split": s, "PSNR (dB)": num(m.get("psnr_db"), "{:.2f}"), "SSIM": _ssim(m),
             "L-inf max": num(255 * m["linf_max"] if m.get("linf_max") is not None else None, "{:.1f}/255"),
             "L-inf mean": num(255 * m["linf_mean"] if m.get("linf_mean") is not None else None, "{:.1f}/255"),
             "L2 mean": num(m.get("l2_mean")), "changed": _acc(m.get("changed_fraction"))}
            for s, m in metrics.items() if isinstance(m, dict)]
    return markdown_table(rows, ["split", "PSNR (dB)", "SSIM", "L-inf max", "L-inf mean", "L2 mean", "changed"])


def _ssim(m: Mapping[str, Any]) -> str:
    """``0.8930``, or ``0.893 ± 0.004 (250 images)`` when the pass measured SSIM on a sample."""
    if m.get("ssim_se"):
        return f"{m['ssim']:.3f} ± {m['ssim_se']:.3f} ({m.get('ssim_images')} images)"
    return num(m.get("ssim"), "{:.4f}")


def verify_scope(v: dict) -> str:
    """What a verdict covers: one victim, one recipe, one run. Converged and deeper victims learnt more from the same
    protection on two of the three benchmark datasets (docs/benchmarks.md), so the report says so."""
    victim, epochs = v.get("victim", "?"), v.get("epochs", "?")
    size = v.get("victim_size")
    at = f" at {size[0]}x{size[1]} pixels{' (resized)' if v.get('resized') else ''}" if size else ""
    plural = "" if epochs == 1 else "s"
    several = [str(x.get("victim")) for x in v.get("victims") or []]
    who = (f"the victims that were trained: {', '.join(f'`{n}`' for n in several)}" if len(several) > 1
           else f"the victim that was trained: a `{victim}`")
    return (f"This verdict holds for {who}, {epochs} epoch{plural}, crop/flip{at}, "
            "one seed. A deeper victim trained to convergence can learn more from the same images (measured in "
            "docs/benchmarks.md: with the same key, a converged ResNet-18 scored 27-50% on tissue patches where an "
            "8-epoch check was at chance), and on images whose brightness or colour names the class a network that "
            "downsamples with strided convolutions (ResNet-18, MobileNetV2) follows the tiles far less than one with "
            "max pools (the small CNN, VGG-16), so check with `--verify-victim smallcnn,resnet18 --verify-epochs 40` "
            "before a release (on a CPU, `--verify-victim resnet18-narrow --verify-epochs 40`: ResNet-18's layout at a "
            "quarter of its width, about 10 times faster, but in the paired runs measured from 25 points below "
            "to 24 above ResNet-18, so a 'protected' from it needs ResNet-18 to confirm it); and a "
            "trainer who downscales the images can learn more too (tiles made at 64 px left photographs downscaled "
            "to 32 px almost fully learnable), so check at the size they would train at with `--verify-size N`.")


def learnt_text(entry: dict) -> str:
    """The classes a protected victim still tells apart (``classes_learnt`` of a verification entry or an evaluate
    result), under the threshold the entry recorded (older files: 50%)."""
    learnt = entry.get("classes_learnt") or []
    # entries from before the share rule carry no above_share (their rule was the plain threshold)
    rule = learnt_rule(entry.get("learnt_above", 0.5), entry.get("above_share"))
    if learnt:
        return f"Classes the protected victim still tells apart on clean test images ({rule}): **{name_list(learnt)}**."
    return f"The protected victim tells no class apart on clean test images (none has {rule})."


def colour_cue_text(cues: dict, learnt: list) -> str:
    """The verification's colour cues (:mod:`unlearnable.audit.cues`) in a sentence, and which of the classes the
    protected victim still tells apart they account for."""
    text = cues.get("summary")
    if not text:
        return (f"The images' own {cues.get('cue', 'colour')} alone tells no class apart (a linear classifier on "
                f"{cues.get('features')}: {_acc(cues.get('acc'))}, chance {_acc(cues.get('chance'))}).")
    text = str(text)[0].upper() + str(text)[1:] + "."
    named = set(cues.get("named") or [])
    both = [c for c in learnt if c in named]
    if both:
        text += (f" Of the classes the protected victim still tells apart, {name_list(both)} "
                 f"{'is' if len(both) == 1 else 'are'} among them: a victim can learn such classes from the images' "
                 "own colour in its first epoch, before any shortcut, so a larger budget or another key rarely "
                 "hides them (docs/methods.md, \"Colour cues\").")
    return text


VERIFY_FIGURE = "verify.png"


def draw_protect(folder: Path) -> None:
    """``verify.png``: the ``--verify`` victims' clean-test accuracy after every epoch (the worst victim's, with its
    clean twin, and chance), from ``manifest.json``; nothing for an output that was not verified. It shows accuracies
    only: never a clean image nor the perturbation, which a published output must not carry."""
    import os

    m = read_json(folder / "manifest.json") or {}
    v = m.get("verify")
    curves = v.get("curves") if isinstance(v, dict) else None
    if not isinstance(curves, dict) or not curves.get("protected") or not curves.get("clean"):
        return
    from .figures import accuracy_curves

    runs = {"clean": curves["clean"], f"protected: {m.get('method', '?')}": curves["protected"]}
    invalid = v.get("reason") if v.get("verdict") == "invalid" else None
    tmp = folder / f".verify.tmp-{os.getpid()}.png"
    accuracy_curves(runs, tmp, title=f"--verify victim {v.get('victim', '?')}: {v.get('verdict')}",
                    chance=v.get("chance"), invalid=invalid)
    os.replace(tmp, folder / VERIFY_FIGURE)


@kind("protect", _has("manifest.json", "method", "metrics"), draw=draw_protect)
def protect(folder: Path) -> list[str]:
    m = read_json(folder / "manifest.json")
    src = m.get("source") or {}
    out = [f"Protected with **{m['method']}** (key fingerprint `{m.get('key_fingerprint', '?')}`); splits protected: "
           f"{', '.join(m.get('splits_protected') or [])}; source `{src.get('path', '?')}` ({src.get('format', '?')}).",
           "", "### Parameters", "", kv_table(m.get("params") or {}), "",
           "### What the protection changed (measured on the written images)", "", quality_table(m["metrics"]), ""]
    v = m.get("verify")
    if isinstance(v, dict):
        cols = ["verdict", "clean victim", "protected victim", "its best epoch", "chance"]
        row = {"verdict": f"**{v.get('verdict')}**", "clean victim": _acc(v.get("clean_acc")),
               "protected victim": _acc(v.get("protected_acc")),
               "its best epoch": _best(v.get("best_acc"), v.get("best_epoch")), "chance": _acc(v.get("chance"))}
        if v.get("chance_note"):  # an imbalanced test split: the verdict read the balanced accuracy too
            cols.append("protected victim, balanced accuracy")
            row["protected victim, balanced accuracy"] = _acc(v.get("balanced_acc"))
        out += ["### Verification (`--verify`)", "", markdown_table([row], cols), ""]
        if (folder / VERIFY_FIGURE).is_file():
            out += [f"![the --verify victim's clean-test accuracy per epoch]({VERIFY_FIGURE})", ""]
        if v.get("victims"):  # several victims: the row above is the worst one; each victim's own result
            out += [markdown_table([{"victim": f"`{x.get('victim')}`", "verdict": x.get("verdict"),
                                     "clean victim": _acc(x.get("clean_acc")),
                                     "protected victim": _acc(x.get("protected_acc"))} for x in v["victims"]],
                                   ["victim", "verdict", "clean victim", "protected victim"]), ""]
        out += [str(v.get("reason") or ""), "", verify_scope(v), ""]
        if v.get("per_class"):
            out += [learnt_text(v), "",
                    markdown_table([{"class": c["class"], "test images": c["test_images"],
                                     "recall": _acc(c["recall"]), "precision": _acc(c["precision"])}
                                    for c in v["per_class"]], ["class", "test images", "recall", "precision"]), ""]
        cues = v.get("colour_cues")
        if isinstance(cues, dict):
            out += [colour_cue_text(cues, v.get("classes_learnt") or []), ""]
    counts = m.get("counts") or {}
    if counts:
        out += [f"Images per split: {', '.join(f'{k} {n}' for k, n in counts.items())}.", ""]
    return out


def _best(acc: Any, epoch: Any) -> str:
    """``"61.2% (epoch 3)"``; ``"–"`` for results written before the best epoch was recorded."""
    return "–" if acc is None else f"{_acc(acc)} (epoch {epoch})"


# ------------------------------------------------------------------------------------------------------ evaluate
@kind("evaluate", _has("results.json", "clean_acc", "protected_acc"))
def evaluate(folder: Path) -> list[str]:
    r = read_json(folder / "results.json")
    name = f"protected: {r['method']}" if r.get("method") else "protected"
    rows = [{"training data": "clean", "clean test acc": _acc(r["clean_acc"])},
            {"training data": name, "clean test acc": _acc(r["protected_acc"])}]
    out = [markdown_table(rows, ["training data", "clean test acc"]), "",
           f"Gap {_acc(r.get('gap'))}, relative drop {_acc(r.get('relative_drop'))}, "
           f"chance {_acc(r.get('chance_acc'))}" + (f" ({r['chance_note']})." if r.get("chance_note") else ".")]
    if r.get("chance_note") and r.get("protected_balanced_acc") is not None:  # imbalanced: the per-class view too
        out[-1] += (f" Balanced accuracy (mean per-class recall; 1/K for a victim that answers one class): clean "
                    f"{_acc(r.get('clean_balanced_acc'))}, protected {_acc(r['protected_balanced_acc'])}.")
    if r.get("protected_best_acc") is not None:
        out += ["", f"The protected victim's best epoch on the clean test split: "
                f"{_best(r['protected_best_acc'], r.get('protected_best_epoch'))} (the table gives the final epoch; a "
                f"trainer who keeps the best epoch on clean held-out data keeps this one)."]
    if r.get("valid") is False:
        out += ["", f"**INVALID**: {r.get('invalid_reason')}; these accuracies prove nothing about protection."]
    if isinstance(r.get("colour_cues"), dict):
        out += ["", learnt_text(r), "", colour_cue_text(r["colour_cues"], r.get("classes_learnt") or [])]
    rec = r.get("recipe") or {}
    if rec:
        out += ["", f"Victim `{rec.get('model')}`, {rec.get('epochs')} epochs, global batch {rec.get('batch_size')}, "
                f"lr {rec.get('lr')} ({rec.get('lr_scaling')} scaling), seed {rec.get('seed')}; defences: "
                f"{', '.join(map(str, r.get('defenses') or [])) or 'none'}; protected share {r.get('mix', 1.0)}."]
    return out + [""]


# ----------------------------------------------------------------------------------------------- audit and sweep
def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def csv_table(rows: list[dict[str, str]],
              acc_cols: tuple[str, ...] = ("clean_acc", "protected_acc", "protected_best_acc", "chance_acc")) -> str:
    """A results CSV as a Markdown table; accuracy columns as percentages."""
    if not rows:
        return "(no finished cells)"
    shown = [{k: (_acc(float(v)) if k in acc_cols and v not in ("", None) else v) for k, v in r.items()} for r in rows]
    return markdown_table(shown, list(rows[0]))


@kind("audit", lambda f: (f / "audit.csv").is_file(), draw=draw_audit)
def audit(folder: Path) -> list[str]:
    rows = read_csv(folder / "audit.csv")
    bad = sum(r.get("valid") in ("no", "False", "false") for r in rows)
    out = ["One row per cell (method x defence x protected share); `clean` rows are the baseline of each defence.",
           "", csv_table(rows), "", f"{len(rows)} cells, {bad} invalid (their clean victim did not beat chance).", ""]
    summary = read_json(folder / "audit.json") if (folder / "audit.json").is_file() else {}
    if isinstance(summary.get("colour_cues"), dict):
        out += [colour_cue_text(summary["colour_cues"], []), ""]
    return out


_PER_CELL = {"seed", "clean_acc", "protected_acc", "protected_best_acc", "chance_acc", "valid", "cluster_purity",
             "sync_bn", "precision", "lr_scaling", "batch_size", "dataset", "method", "protect.batch_size"}


def sweep_summary(rows: list[dict[str, str]]) -> str:
    """Per configuration (dataset, method, batch size and any other varied key), over seeds: clean mean,
    protected mean +- std [min, max], and the drop. Invalid cells (clean victim at chance) are left out and counted."""
    import statistics as st

    other = [k for k in (rows[0] if rows else {}) if k not in _PER_CELL]
    groups: dict[tuple[str, ...], list[dict[str, str]]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["method"], r.get("batch_size") or "", *(r[k] for k in other)), []).append(r)

    def order(k: tuple[str, ...]) -> tuple:
        return (k[0], k[1], int(k[2]) if k[2].isdigit() else -1, *k[3:])
    out = []
    for key in sorted(groups, key=order):
        g = [r for r in groups[key] if r.get("valid") != "no"]
        prot = [100 * float(r["protected_acc"]) for r in g]
        clean = [100 * float(r["clean_acc"]) for r in g]
        best = [100 * float(r["protected_best_acc"]) for r in g if r.get("protected_best_acc") not in (None, "")]
        sd = st.stdev(prot) if len(prot) > 1 else 0.0
        out.append({"dataset": key[0], "method": key[1], "batch": key[2]} | dict(zip(other, key[3:]))
                   | {"seeds": len(g), "invalid": len(groups[key]) - len(g),
                      "clean %": f"{st.mean(clean):.1f}" if clean else "–",
                      "protected %": f"{st.mean(prot):.1f} ± {sd:.1f} [{min(prot):.1f}, {max(prot):.1f}]" if prot
                      else "–",
                      "drop (points)": f"{st.mean(clean) - st.mean(prot):.1f}" if prot else "–",
                      # the protected victims' best epochs (the final one is the protected column)
                      "best epoch %": f"{st.mean(best):.1f}" if best and len(best) == len(g) else "–"})
    cols = ["dataset", "method", "batch", *other, "seeds", "invalid", "clean %", "protected %", "drop (points)",
            "best epoch %"]
    return markdown_table(out, cols) if out else "(no finished cells)"


@kind("sweep", lambda f: (f / "sweep.csv").is_file(), draw=draw_sweep)
def sweep(folder: Path) -> list[str]:
    rows = read_csv(folder / "sweep.csv")
    summary = ["Over seeds (mean ± standard deviation [min, max]; invalid cells left out):", "",
               sweep_summary(rows), ""] if any(r.get("seed") for r in rows) else []
    return [*summary, "One row per finished cell of the study.", "", csv_table(rows), ""]


# -------------------------------------------------------------------------------------------- segment and forget
@kind("forget", _has("results.json", "original", "strategies"))
def forget(folder: Path) -> list[str]:
    from .forget_figures import results_table

    return [results_table(read_json(folder / "results.json")), ""]


@kind("segment", _has("model.json", "scores", "config"))
def segment(folder: Path) -> list[str]:
    m = read_json(folder / "model.json")
    rows = [{"subjects": split, "n": len(m.get(f"{split}_ids") or []), "Dice": num(s.get("dice")),
             "MAE": num(s.get("mae"))} for split, s in (m.get("scores") or {}).items()]
    return [f"3D segmenter on `{m.get('subjects')}` ({'synthetic' if m.get('synthetic') else 'real'} subjects, "
            f"{m.get('shape')} voxels, classes {', '.join(map(str, m.get('classes') or []))}; Dice/MAE over "
            f"{', '.join(map(str, m.get('scored') or []))}).", "",
            markdown_table(rows, ["subjects", "n", "Dice", "MAE"]), "", "### Training", "",
            kv_table(m.get("config") or {}), ""]


# -------------------------------------------------------------------------------------------------------- generic
def generic(folder: Path) -> list[str]:
    """Every JSON file's top-level scalars, one table per file (the rendering of an unknown folder)."""
    out: list[str] = []
    for path in sorted(folder.glob("*.json")):
        doc = read_json(path)
        if isinstance(doc, dict) and scalars(doc):
            out += [f"### {path.name}", "", kv_table(scalars(doc)), ""]
        elif doc is None:
            out += [f"### {path.name}", "", "(not readable as JSON)", ""]
    return out


def detect(folder: Path) -> str:
    """The kind of output ``folder`` is (``generic`` when no registered kind matches)."""
    return next((name for name, (test, _) in KINDS.items() if test(folder)), "generic")


def draw(folder: Path, depth: int = 2) -> None:
    """Write the figures of ``folder``'s kind from its results files; in a folder of no known kind (the demo's),
    those of the outputs inside it, as :func:`sections` shows them."""
    name = detect(folder)
    if name in DRAWERS:
        DRAWERS[name](folder)
    elif depth and name == "generic":
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            draw(sub, depth - 1)


def sections(folder: Path, depth: int = 2, prefix: str = "") -> list[str]:
    """Markdown of ``folder`` by its kind; a folder of no known kind (the demo's) also shows each sub-folder that is
    an output itself (a known kind's sub-folders are its working files: audit cells, sweep caches)."""
    name = detect(folder)
    out = (KINDS[name][1] if name in KINDS else generic)(folder)
    if depth and name == "generic":
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            inner = [_images_under(line, sub.name) for line in sections(sub, depth - 1, f"{prefix}{sub.name}/")]
            if detect(sub) != "generic":
                out += [f"## {prefix}{sub.name}/ ({detect(sub)})", "", *inner]
            elif any(line.startswith("## ") for line in inner):  # an output further down
                out += inner[_first(inner):]
    return out


_IMAGE = re.compile(r"(!\[[^\]]*\]\()(?![A-Za-z][A-Za-z0-9+.-]*:|/|#)([^)\s]+\))")


def _images_under(line: str, sub: str) -> str:
    """A sub-output's Markdown shown in its parent's report: its relative image paths (``verify.png``) made relative
    to the parent (``tiles/verify.png``), so the parent's report shows the sub-output's figures in place."""
    return _IMAGE.sub(lambda m: f"{m.group(1)}{sub}/{m.group(2)}", line)


def _first(lines: list[str]) -> int:
    """Index of the first nested output heading in ``lines`` (the generic tables of a plain folder are skipped)."""
    return next(i for i, line in enumerate(lines) if line.startswith("## "))
