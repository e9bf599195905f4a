"""Efficacy benchmark: how far each protection drops a victim's clean test accuracy, per dataset x method x budget.

For every built-in benchmark dataset the training split is protected with each registered method at each budget
(methods without an ``eps`` parameter get one row at their defaults), a victim is trained on it with crop/flip
augmentation through :func:`unlearnable.audit.evaluate`, and tested on the clean test split, which is never
perturbed. The clean baseline is trained once per (dataset, victim, seed) and reused by every row. ``resnet18``
runs only at 8/255 (and for budget-free methods). Prints one JSON object; ``--table`` writes a Markdown table,
``--figure`` a PNG of protected accuracy against the budget.

    python bench/efficacy.py --quick --out results.json --table table.md
    python bench/efficacy.py --datasets mni-tissue --methods random,em --eps 8/255 --victims smallcnn --jpeg 75

The full table takes hours on a CPU: ``--rows FILE`` appends every finished baseline and row to a JSON-lines file
as it goes, and a rerun with the same file and settings skips what is already there (an interrupted run resumes
where it stopped; a line cut off mid-write is dropped). Several processes can share the grid by dataset, each
with its own file; ``--from-rows A,B`` rebuilds the JSON and the table from the files without training.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from unlearnable.audit.classes import classes_learnt, per_class
from unlearnable.audit.cues import colour_cues
from unlearnable.audit.evaluate import evaluate
from unlearnable.audit.validity import chance_level
from unlearnable.data import ImageSet, load
from unlearnable.data.quality import perturbation_stats
from unlearnable.protect import METHODS, protect
from unlearnable.train.defenses import jpeg, parse_defense
from unlearnable.train.loop import Recipe
from unlearnable.utils import parse_number

DATASETS = ("mni-tissue", "textures", "mnist5k")
EPS = (4 / 255, 8 / 255, 16 / 255)
RESNET_EPS = 8 / 255  # the deeper victim runs at the papers' budget only
# Victim recipes per dataset for the full run on a CPU. Converged recipes were measured with bench/efficacy_sweep.py
# (30 epochs smallcnn / 40 resnet18, batch 64: docs/benchmarks.md); these epochs are a starting point: every
# baseline records its per-epoch clean test curve (``baselines[].test_curve``) so convergence can be read off the
# results. Digits are not mirror-symmetric, so their augmentation crops without flipping.
RECIPES: dict[str, dict[str, Any]] = {
    "mni-tissue": {"epochs": 30, "aug": "aug:4"},
    "textures": {"epochs": 30, "aug": "aug:4"},
    "mnist5k": {"epochs": 20, "aug": "aug:2:flip=false"},
}
QUICK = {"train": 600, "test": 400, "epochs": 8}
BATCH, LR = 32, 0.05  # small batches: enough SGD steps on the 2,000-image training splits


def method_rows(method: str, eps_list: Sequence[float], victim: str) -> list[float | None]:
    """The budgets one method runs at: every ``eps`` if its parameters have one, else a single row (None) at its
    defaults. A method whose default ``eps`` is 0 (unbounded, e.g. the published ``cuda``) gets both."""
    fields = {f.name: f for f in dataclasses.fields(METHODS.get(method).Params)}
    if "eps" not in fields:
        return [None]
    default_row: list[float | None] = [None] if fields["eps"].default == 0 else []
    if victim != "smallcnn":
        return default_row + [e for e in eps_list if math.isclose(e, RESNET_EPS)]
    return default_row + list(eps_list)


def stratified_subset(ds: ImageSet, n: int, seed: int) -> ImageSet:
    """At most ``n`` samples of ``ds`` with the same number per class (seeded), in the source's order."""
    g = torch.Generator().manual_seed(seed)
    per = max(1, n // ds.num_classes)
    pick = []
    for c in range(ds.num_classes):
        idx = (ds.labels == c).nonzero().flatten()
        pick.append(idx[torch.randperm(len(idx), generator=g)[:per]])
    return ds.subset(torch.cat(pick).sort().values)


def prepare(name: str, quick: bool, n_train: int | None, n_test: int | None, seed: int) -> ImageSet:
    """The dataset with its train split (and in quick mode a subset of both splits); the test split stays clean."""
    ds = load(name)
    n_train = n_train or (QUICK["train"] if quick else None)
    n_test = n_test or (QUICK["test"] if quick else None)
    train, test = ds.split("train"), ds.split("test")
    if n_train:
        train = stratified_subset(train, n_train, seed)
    if n_test:
        test = stratified_subset(test, n_test, seed + 1)
    return ImageSet(torch.cat([train.images, test.images]), torch.cat([train.labels, test.labels]),
                    train.ids + test.ids, train.splits + test.splits, ds.classes, ds.layout, ds.meta)


def recipe_for(name: str, victim: str, quick: bool, epochs: int | None, seed: int) -> Recipe:
    e = epochs or (QUICK["epochs"] if quick else RECIPES.get(name, RECIPES["textures"])["epochs"])
    return Recipe(model=victim, epochs=e, batch_size=BATCH, lr=LR, seed=seed)


def run(datasets: Sequence[str] = DATASETS, methods: Sequence[str] | None = None, eps: Sequence[float] = EPS,
        victims: Sequence[str] = ("smallcnn", "resnet18"), quick: bool = False, seed: int = 0,
        jpeg_quality: int | None = None, n_train: int | None = None, n_test: int | None = None,
        epochs: int | None = None, device: str = "cpu", log=None, rows_file: str | Path | None = None
        ) -> dict[str, Any]:
    """Run the grid and return the results object (what ``main`` prints); ``log`` gets one line per row.

    ``rows_file``: a JSON-lines checkpoint (see the module docstring); baselines and rows already in it for the
    same settings are reused instead of trained again."""
    say = log or (lambda s: None)
    sig = {"quick": quick, "seed": seed, "jpeg": jpeg_quality, "train": n_train, "test": n_test, "epochs": epochs}
    done = RowStore(rows_file, sig) if rows_file else None
    methods = list(methods) if methods else METHODS.names()
    for m in methods:
        METHODS.get(m)  # unknown names fail here, with "did you mean", before anything trains
    t_all = time.perf_counter()
    baselines, rows, colour = [], [], {}
    for name in datasets:
        ds = prepare(name, quick, n_train, n_test, seed)
        colour[name] = colour_floor(ds)
        clean_train = ds.split("train")
        test_labels = ds.split("test").labels
        chance = chance_level(test_labels, ds.num_classes)  # the product's rule: the commonest test class
        aug = [parse_defense(RECIPES.get(name, RECIPES["textures"])["aug"])]
        for victim in victims:
            recipe = recipe_for(name, victim, quick, epochs, seed)
            cached: dict[str, Any] | None = None  # the clean baseline of (dataset, victim, seed)
            jpeg_cached: dict[str, Any] | None = None
            if done is not None and (b := done.baseline(name, victim)) is not None:
                baselines.append({k: v for k, v in b.items() if k not in ("curve", "clean_jpeg_acc")})
                cached = {"acc": b["clean_acc"], "curve": b["curve"], "wall_s": b["train_s"]}
                jpeg_cached = {"acc": b["clean_jpeg_acc"]} if "clean_jpeg_acc" in b else None
            for method in methods:
                for e in method_rows(method, eps, victim):
                    params = {} if e is None else {"eps": e}
                    if done is not None and (old := done.row(name, victim, method, e)) is not None:
                        rows.append(old)
                        say(f"{name} {victim} {method} eps={old['eps_255']}: from {rows_file}")
                        continue
                    t = time.perf_counter()
                    prot = protect(ds, method, key=seed, device=device, **params)
                    fit_s = time.perf_counter() - t
                    res = evaluate(prot, ds, recipe, device=device, defenses=aug, clean_result=cached)
                    if cached is None:
                        cached = {"acc": res["clean_acc"], "curve": res["curves"]["clean"],
                                  "wall_s": res["wall_s"]["clean"]}
                        baselines.append({"dataset": name, "victim": victim, "seed": seed, "clean_acc": cached["acc"],
                                          "chance": chance, "epochs": recipe.epochs, "train_s": cached["wall_s"],
                                          "final_train_acc": cached["curve"][-1]["train_acc"],
                                          "test_curve": [round(r["test_acc"], 4) for r in cached["curve"]],
                                          "train": len(clean_train), "test": len(test_labels)})
                        if done is not None:
                            done.add("baseline", {**baselines[-1], "curve": cached["curve"]})
                    stats = perturbation_stats(clean_train.images, prot.split("train").images)
                    row = {"dataset": name, "victim": victim, "method": method,
                           "eps": e, "eps_255": _eps_key(e),
                           "clean_acc": res["clean_acc"], "protected_acc": res["protected_acc"], "chance": chance,
                           "psnr_db": stats["psnr_db"], "ssim": stats["ssim"],
                           "linf_255": round(stats["linf_max"] * 255, 3),
                           "fit_s": fit_s, "train_s": res["wall_s"]["protected"],
                           "protected_train_acc": res["protected_train_acc"],
                           # which classes the protected victim still tells apart on clean test images
                           "confusion": res["confusion"]["protected"],
                           "classes_learnt": learnt_classes(res["confusion"]["protected"], ds.classes)}
                    if jpeg_quality is not None:
                        row["jpeg_quality"] = jpeg_quality
                        if jpeg_cached is None:  # the clean twin saved as JPEG: what the lossy save alone costs
                            jc = evaluate(_jpeg_train(ds, jpeg_quality), ds, recipe, device=device, defenses=aug,
                                          clean_result=cached)
                            jpeg_cached = {"acc": jc["protected_acc"]}
                        row["clean_jpeg_acc"] = jpeg_cached["acc"]
                        rj = evaluate(_jpeg_train(prot, jpeg_quality), ds, recipe, device=device, defenses=aug,
                                      clean_result=cached)
                        row["protected_jpeg_acc"] = rj["protected_acc"]
                        if done is not None and not done.has_jpeg_baseline(name, victim):
                            done.add("jpeg", {"dataset": name, "victim": victim, "clean_jpeg_acc": jpeg_cached["acc"]})
                    rows.append(row)
                    if done is not None:
                        done.add("row", row)
                    say(f"{name} {victim} {method} eps={row['eps_255']}: clean {row['clean_acc']:.3f} protected "
                        f"{row['protected_acc']:.3f} chance {chance:.3f} PSNR {_db(row['psnr_db'])}")
    return _result(quick, seed, device, datasets, methods, eps, victims, jpeg_quality, baselines, rows,
                   time.perf_counter() - t_all, colour)


def colour_floor(ds: ImageSet) -> dict[str, Any]:
    """What the images' own colour gives away on this split (audit/cues.py; docs/methods.md, "Colour cues")."""
    c = colour_cues(ds, "test", 8 / 255)
    return {"acc": c["acc"], "chance": c["chance"], "named": c["named"],
            "apart_beyond_budget": c["apart_beyond_budget"]}


def _result(quick: bool, seed: int, device: str, datasets: Sequence[str], methods: Sequence[str],
            eps: Sequence[float], victims: Sequence[str], jpeg_quality: int | None, baselines: list[dict[str, Any]],
            rows: list[dict[str, Any]], wall_s: float, colour: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"benchmark": "efficacy", "quick": quick, "seed": seed, "device": device,
            # per dataset: a linear classifier on colour statistics alone, clean train -> clean test (not in a table
            # made --from-rows, which reads no images)
            **({"colour_cues": colour} if colour else {}),
            "config": {"datasets": list(datasets), "methods": list(methods), "eps": list(eps),
                       "victims": list(victims), "jpeg": jpeg_quality, "batch_size": BATCH, "lr": LR,
                       "recipes": RECIPES, "quick_sizes": QUICK if quick else None},
            "machine": {"torch": torch.__version__, "threads": torch.get_num_threads(),
                        "cpu": platform.processor() or platform.machine()},
            "baselines": baselines, "rows": rows, "wall_s": wall_s}


def _fail(message: str) -> None:
    """A one-line message on stderr and exit status 2 (bad input), never a traceback."""
    print(message, file=sys.stderr)
    raise SystemExit(2)


def _eps_key(e: float | None) -> float | None:
    return None if e is None else round(e * 255, 3)


class RowStore:
    """The ``--rows`` checkpoint: one JSON object per line, ``{"kind", "sig", "data"}``; ``sig`` holds the settings
    that change a result (quick, seed, jpeg, subset sizes, epochs), so a file shared by runs with other settings
    only gives back its own lines. Lines are appended and flushed to disk one at a time; a last line without its
    newline (a run killed mid-write) is cut off before the first append."""

    def __init__(self, path: str | Path, sig: dict[str, Any]) -> None:
        self.path, self.sig = Path(path), sig
        lines = read_rows(self.path)
        if self.path.exists():
            raw = self.path.read_bytes()
            if raw and not raw.endswith(b"\n"):
                with open(self.path, "r+b") as f:
                    f.truncate(raw.rfind(b"\n") + 1)
        self.mine = [ln for ln in lines if ln["sig"] == sig]

    def _find(self, kind: str, **match: Any) -> dict[str, Any] | None:
        hits = [ln["data"] for ln in self.mine if ln["kind"] == kind
                and all(ln["data"].get(k) == v for k, v in match.items())]
        return hits[-1] if hits else None

    def baseline(self, dataset: str, victim: str) -> dict[str, Any] | None:
        b = self._find("baseline", dataset=dataset, victim=victim)
        j = self._find("jpeg", dataset=dataset, victim=victim)
        return None if b is None else ({**b, "clean_jpeg_acc": j["clean_jpeg_acc"]} if j else dict(b))

    def has_jpeg_baseline(self, dataset: str, victim: str) -> bool:
        return self._find("jpeg", dataset=dataset, victim=victim) is not None

    def row(self, dataset: str, victim: str, method: str, eps: float | None) -> dict[str, Any] | None:
        return self._find("row", dataset=dataset, victim=victim, method=method, eps_255=_eps_key(eps))

    def add(self, kind: str, data: dict[str, Any]) -> None:
        line = {"kind": kind, "sig": self.sig, "data": data}
        self.mine.append(json.loads(json.dumps(line)))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(line) + "\n")
            f.flush()
            os.fsync(f.fileno())


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Every complete line of a ``--rows`` file (none if it does not exist); a cut-off last line is skipped."""
    p = Path(path)
    if not p.exists():
        return []
    out = []
    for n, text in enumerate(p.read_text().splitlines(keepends=True), 1):
        if not text.endswith("\n"):
            break  # cut off mid-write: the run that wrote it did not finish this row
        try:
            line = json.loads(text)
            if not {"kind", "sig", "data"} <= line.keys():
                raise ValueError("missing kind/sig/data")
        except ValueError as exc:
            _fail(f"{p}: line {n} is not an efficacy row ({exc})")
        out.append(line)
    return out


def from_rows(paths: Sequence[str | Path]) -> dict[str, Any]:
    """The results object rebuilt from ``--rows`` files (no training): rows and baselines in file order, the
    settings of the first line (files with other settings are refused, so one table never mixes recipes)."""
    lines = [ln for p in paths for ln in read_rows(p)]
    if not lines:
        _fail(f"{','.join(map(str, paths))}: no efficacy rows")
    sig = lines[0]["sig"]
    for ln in lines:
        if ln["sig"] != sig:
            _fail(f"--from-rows: a line with other settings ({ln['sig']} against {sig})")
    rows = [ln["data"] for ln in lines if ln["kind"] == "row"]
    jpegs = {(ln["data"]["dataset"], ln["data"]["victim"]): ln["data"]["clean_jpeg_acc"]
             for ln in lines if ln["kind"] == "jpeg"}
    baselines = []
    for ln in lines:
        if ln["kind"] == "baseline":
            b = {k: v for k, v in ln["data"].items() if k != "curve"}
            if (j := jpegs.get((b["dataset"], b["victim"]))) is not None:
                b["clean_jpeg_acc"] = j
            baselines.append(b)
    uniq = lambda xs: list(dict.fromkeys(xs))  # noqa: E731
    names = uniq(r["dataset"] for r in rows)
    # the colour line needs the images: rebuilt from the same split (no training, about a second per dataset)
    colour = {n: colour_floor(prepare(n, bool(sig["quick"]), sig["train"], sig["test"], sig["seed"])) for n in names}
    return _result(bool(sig["quick"]), sig["seed"], "—", names,
                   uniq(r["method"] for r in rows), sorted({r["eps"] for r in rows if r["eps"] is not None}),
                   uniq(r["victim"] for r in rows), sig["jpeg"], baselines, rows,
                   sum(r["fit_s"] + r["train_s"] for r in rows) + sum(b["train_s"] for b in baselines), colour)


def learnt_classes(cm: list[list[int]], classes: tuple[str, ...]) -> list[str]:
    """The classes a victim still tells apart, by ``protect --verify``'s rule (recall and precision both above
    :data:`~unlearnable.audit.classes.LEARNT_ABOVE`)."""
    return classes_learnt(per_class(cm, classes))


def _db(psnr_db: float | None) -> str:
    """PSNR for a table; None (no image changed, strict JSON has no Infinity) is shown as a dash."""
    return "—" if psnr_db is None else f"{psnr_db:.1f}"


def _learnt(row: dict[str, Any]) -> str:
    """``3/10``: how many classes the protected victim still tells apart (— for rows made before it was kept)."""
    if "classes_learnt" not in row:
        return "—"
    return f"{len(row['classes_learnt'])}/{len(row['confusion'])}"


def _jpeg_train(ds: ImageSet, quality: int) -> ImageSet:
    """``ds`` with its training images JPEG round-tripped in memory (a lossy save of protected data)."""
    idx = ds.indices("train")
    return ds.with_images(jpeg(ds.images[idx], quality), idx)


def markdown_table(result: dict[str, Any]) -> str:
    """One row per (dataset, victim, method, budget); accuracies in %, PSNR in dB, times in seconds."""
    has_jpeg = any("protected_jpeg_acc" in r for r in result["rows"])
    head = ["dataset", "victim", "method", "eps", "clean %", "protected %", "chance %", "PSNR dB", "SSIM",
            "classes learnt", "fit s", "train s"]
    if has_jpeg:
        head += [f"clean JPEG{result['config']['jpeg']} %", f"protected JPEG{result['config']['jpeg']} %"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        cells = [r["dataset"], r["victim"], r["method"], "—" if r["eps"] is None else f"{r['eps_255']:g}/255",
                 f"{100 * r['clean_acc']:.1f}", f"{100 * r['protected_acc']:.1f}", f"{100 * r['chance']:.1f}",
                 _db(r["psnr_db"]), f"{r['ssim']:.3f}", _learnt(r), f"{r['fit_s']:.1f}", f"{r['train_s']:.1f}"]
        if has_jpeg:
            cells += [f"{100 * r['clean_jpeg_acc']:.1f}", f"{100 * r['protected_jpeg_acc']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    colour = result.get("colour_cues") or {}
    if colour:  # the data's own floor for a victim that reads colour, one line under the table
        lines += ["", "Colour alone (a linear classifier on each image's colour statistics, clean test): " + "; ".join(
            f"{name} {100 * c['acc']:.1f}% (chance {100 * c['chance']:.1f}%; named: {', '.join(c['named']) or 'none'})"
            for name, c in colour.items()) + "."]
    return "\n".join(lines) + "\n"


def draw_figure(result: dict[str, Any], path: str | Path) -> None:
    """Protected accuracy against the budget: one panel per (dataset, victim), one line per budgeted method, with
    the clean victim, chance and the goal (chance + 10 points) as horizontal lines; methods without a budget
    (published ``ops``, ``cuda``) as labelled marks at the right edge."""
    from unlearnable.report import pyplot

    plt = pyplot()
    panels = list(dict.fromkeys((r["dataset"], r["victim"]) for r in result["rows"]))
    if not panels:
        _fail("--figure: no rows to draw")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    budgets = sorted({r["eps_255"] for r in result["rows"] if r["eps"] is not None})
    for ax, (data, victim) in zip(axes[0], panels):
        rows = [r for r in result["rows"] if (r["dataset"], r["victim"]) == (data, victim)]
        clean, chance = 100 * rows[0]["clean_acc"], 100 * rows[0]["chance"]
        for method in dict.fromkeys(r["method"] for r in rows):
            pts = sorted((r["eps_255"], 100 * r["protected_acc"]) for r in rows
                         if r["method"] == method and r["eps"] is not None)
            if pts:
                ax.plot(*zip(*pts), marker="o", lw=2.2 if method == "tiles" else 1.2, label=method)
        x_free = (max(budgets) if budgets else 8) * 1.25
        for r in rows:
            if r["eps"] is None:
                ax.plot([x_free], [100 * r["protected_acc"]], marker="x", color="grey")
                ax.annotate(f"{r['method']} (no budget)", (x_free, 100 * r["protected_acc"]), fontsize=7,
                            xytext=(-4, 3), textcoords="offset points", ha="right")
        ax.axhline(clean, color="black", lw=1, ls="--", label="clean")
        ax.axhline(chance + 10, color="green", lw=1, ls=":", label="chance + 10 (goal)")
        ax.axhline(chance, color="grey", lw=1, ls=":", label="chance")
        ax.axvline(8, color="red", lw=0.8, alpha=0.4, label="8/255: the goal's budget")
        ax.set_xscale("log", base=2)
        ax.set_xticks(budgets or [8])
        ax.set_xticklabels([f"{b:g}/255" for b in (budgets or [8])])
        ax.set_ylim(0, 100)
        ax.set_title(f"{data}, {victim}")
        ax.set_xlabel("L-inf budget")
        ax.set_ylabel("clean test accuracy after protected training (%)")
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _csv(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=",".join(DATASETS), help="built-in names, comma-separated")
    ap.add_argument("--methods", default="", help="registered methods, comma-separated (default: all)")
    ap.add_argument("--eps", default="4/255,8/255,16/255", help="L-inf budgets, comma-separated")
    ap.add_argument("--victims", default="smallcnn,resnet18")
    ap.add_argument("--quick", action="store_true",
                    help=f"{QUICK['train']} train / {QUICK['test']} test images, {QUICK['epochs']} epochs")
    ap.add_argument("--train", type=int, default=None, help="training images per dataset (stratified subset)")
    ap.add_argument("--test", type=int, default=None, help="test images per dataset (stratified subset)")
    ap.add_argument("--epochs", type=int, default=None, help="override every dataset's victim epochs")
    ap.add_argument("--jpeg", type=int, default=None, metavar="Q",
                    help="also train on the protected images saved as JPEG at quality Q")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None, help="write the JSON here too")
    ap.add_argument("--table", default=None, help="write the Markdown table here")
    ap.add_argument("--figure", default=None, help="draw protected accuracy against the budget to this PNG")
    ap.add_argument("--rows", default=None, metavar="FILE",
                    help="JSON-lines checkpoint: append each finished row, skip rows already there (resume)")
    ap.add_argument("--from-rows", default=None, metavar="FILES",
                    help="no training: rebuild the JSON and table from --rows files (comma-separated)")
    a = ap.parse_args(argv)
    if a.jpeg is not None and not 1 <= a.jpeg <= 100:
        ap.error(f"--jpeg {a.jpeg}: quality must be in 1..100")
    eps = [parse_number(e, "--eps") for e in _csv(a.eps)]
    if a.from_rows:
        result = from_rows(_csv(a.from_rows))
    else:
        result = run(_csv(a.datasets), _csv(a.methods) or None, eps, _csv(a.victims), a.quick, a.seed, a.jpeg,
                     a.train, a.test, a.epochs, a.device, log=lambda s: print(s, file=sys.stderr, flush=True),
                     rows_file=a.rows)
    text = json.dumps(result, indent=2)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    if a.table:
        with open(a.table, "w") as f:
            f.write(markdown_table(result))
    if a.figure:
        draw_figure(result, a.figure)
    return result


if __name__ == "__main__":
    main()
