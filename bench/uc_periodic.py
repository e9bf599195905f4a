"""UC with smooth vs periodic noise against clean and ``random`` at the same budget, on this CPU.

Each job: a fixed 1,000-image subset of a built-in set's training split (ids kept), the protection fitted with key
7, a ``smallcnn`` victim trained from scratch with crop/flip (digits: crop only), final accuracy on the clean
test split. One JSON line per job; ``table`` prints the Markdown table of docs/methods.md (``uc`` section).
Two surrogates: SimCLR on the 1,000 images themselves (UC's fallback), and ``SUR``, a smallcnn trained for 3 epochs
on the REST of the training split (disjoint images; stands in for the off-the-shelf extractor of UC's threat model).

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/uc_periodic.py run --out uc_rows.jsonl [--only mnist5k]
    python bench/uc_periodic.py table uc_rows.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from efficacy_sweep import DATASETS, protect_and_train  # noqa: E402  (the efficacy benchmark's protocol)

E8, E16 = (f"{e / 255!r}" for e in (8, 16))
# UC for a 2-core CPU: 5 SimCLR epochs and 5 generator epochs (the same surrogate and clusters in both shapes).
UC = "uc,ssl_epochs=5,epochs=5,batch_size=64"
SUR = "uc,surrogate_weights=SUR,epochs=5,batch_size=64"
SPECS = list(dict.fromkeys(["clean"] + [s for e in (E16, E8) for u in (UC, SUR) for s in (
    f"random,eps={e}", f"{u},shape=smooth,eps={e}", f"{u},shape=periodic,eps={e}")]))
VICTIM = {"model": "smallcnn", "epochs": 12, "batch_size": 64, "lr": 0.05}


def subset(name: str, n: int, weights: Path):
    """The protected subset, the clean test split, and ``weights`` written with a surrogate trained on the rest."""
    from unlearnable.data import load
    from unlearnable.train.loop import Recipe, train_classifier
    ds = load(name)
    tr, te = ds.split("train"), ds.split("test")
    perm = torch.randperm(len(tr), generator=torch.Generator().manual_seed(0))
    rest = perm[n:]
    model, _ = train_classifier(tr.images[rest], tr.labels[rest], tr.num_classes,
                                Recipe(model="smallcnn", epochs=3, batch_size=64, lr=0.05))
    torch.save(model.state_dict(), weights)
    return tr.subset(perm[:n].sort().values), te


def run_job(name: str, spec: str, tr, te) -> dict:
    from unlearnable.train.loop import Recipe
    t = time.time()
    _, pert, h, fit_s = protect_and_train(name, spec, tr, te.images, te.labels, Recipe(seed=0, **VICTIM), 7)
    report = getattr(pert, "report", {}) or {}
    return {"data": name, "spec": spec, "n": len(tr), "test": round(h.epochs[-1]["test_acc"], 4),
            "train": round(h.epochs[-1]["train_acc"], 4), "purity": report.get("cluster_purity"),
            "fit_s": round(fit_s, 1), "train_s": round(time.time() - t - fit_s, 1)}


def table(path: str) -> str:
    rows: dict[tuple[str, str], dict] = {}
    for line in open(path):
        if line.strip():
            r = json.loads(line)
            rows[(r["data"], r["spec"])] = r
    out = ["| dataset | eps | surrogate | clean | random | uc smooth (purity) | uc periodic (purity) |",
           "|---|---|---|---|---|---|---|"]

    def cell(d: str, s: str) -> str:
        r = rows.get((d, s))
        if r is None:
            return "—"
        pur = f" ({r['purity']:.2f})" if r.get("purity") is not None else ""
        return f"{100 * r['test']:.1f}{pur}"
    for d in DATASETS:
        for e, lab in ((E16, "16/255"), (E8, "8/255")):
            for u, sur in ((UC, "SimCLR"), (SUR, "other images")):
                out.append(f"| {d} | {lab} | {sur} | {cell(d, 'clean')} | {cell(d, f'random,eps={e}')} | "
                           f"{cell(d, f'{u},shape=smooth,eps={e}')} | {cell(d, f'{u},shape=periodic,eps={e}')} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--out", required=True)
    r.add_argument("--n", type=int, default=1000)
    r.add_argument("--only", nargs="*", default=list(DATASETS))
    r.add_argument("--specs", nargs="*", default=SPECS)
    sub.add_parser("table").add_argument("rows")
    a = ap.parse_args(argv)
    if a.cmd == "table":
        print(table(a.rows), end="")
        return
    torch.set_num_threads(1)
    for name in a.only:
        weights = Path(a.out).with_suffix(f".{name}.surrogate.pt")
        tr, te = subset(name, a.n, weights)
        for spec in a.specs:
            row = run_job(name, spec.replace("=SUR", f"={weights}"), tr, te)
            row["spec"] = spec
            with open(a.out, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
