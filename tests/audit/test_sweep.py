"""``unlearnable sweep``: grid, resume, cache, merge, array-job scripts, bad input, and a 2-process cell."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import run_cli, tiny_npz

SRC = str(Path(__file__).resolve().parents[2] / "src")
UC = {"clusters": 2, "ssl_epochs": 0, "epochs": 1, "width": 8, "gen_width": 8}
VICTIM = {"evaluate.model": "smallcnn", "evaluate.epochs": 1, "evaluate.lr": 0.05}


def study(tmp: Path, grid: dict, methods: dict | None = None, **extra) -> Path:
    tiny_npz(tmp / "tiny.npz")
    doc = {"datasets": {"tiny": "tiny.npz"}, "methods": methods or {"uc": UC}, "grid": grid, "fixed": VICTIM} | extra
    (tmp / "study.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return tmp / "study.yaml"


def sweep(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "unlearnable", "sweep", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open()))


def merged(r: subprocess.CompletedProcess, csv_path: Path) -> None:
    """A merged sweep exits 0, or 3 when some cell's clean victim did not beat chance (valid=no)."""
    invalid = any(g["valid"] == "no" for g in rows(csv_path))
    assert r.returncode == (3 if invalid else 0), r.stderr[-2000:]


def test_sweep_runs_merges_resumes_and_shares_protection(tmp_path: Path) -> None:
    f = study(tmp_path, {"protect.batch_size": [4, 8], "evaluate.batch_size": [8, 12]})
    r = sweep(str(f), "--out", "partly", "--cell", "3", cwd=tmp_path)  # an "interrupted" sweep: one cell done
    assert r.returncode == 0, r.stderr[-2000:]
    assert not (tmp_path / "partly" / "sweep.csv").exists()  # --cell never merges (array tasks run in parallel)
    done = next((tmp_path / "partly" / "cells").iterdir()) / "results.json"
    stamp = done.stat().st_mtime_ns
    r = sweep(str(f), "--out", "partly", cwd=tmp_path)
    merged(r, tmp_path / "partly" / "sweep.csv")
    assert "skip finished cell" in r.stderr and done.stat().st_mtime_ns == stamp
    got = rows(tmp_path / "partly" / "sweep.csv")
    assert len(got) == 4 and list(got[0])[:6] == ["dataset", "method", "batch_size", "seed", "clean_acc",
                                                  "protected_acc"]
    assert [g["batch_size"] for g in got] == ["4", "4", "8", "8"] and "evaluate.batch_size" in got[0]
    assert all(0 <= float(g["clean_acc"]) <= 1 for g in got)
    assert all(float(g["protected_best_acc"]) >= float(g["protected_acc"]) for g in got)  # best epoch >= final
    assert all(0 <= float(g["protected_balanced_acc"]) <= 1 for g in got)  # mean per-class recall
    assert (tmp_path / "partly" / "accuracy_vs_batch_size.png").stat().st_size > 1000
    report = (tmp_path / "partly" / "report.md").read_text()
    assert "# Sweep report" in report and report.count("| tiny | uc | 4 | 0 |") == 2
    assert "accuracy_vs_batch_size" in report
    protected = [p for p in (tmp_path / "partly" / "cache").iterdir() if p.name.startswith("tiny-uc-")]
    assert len([p for p in protected if p.is_dir()]) == 2  # 4 cells, 2 protect configs
    r = sweep(str(f), "--out", "whole", cwd=tmp_path)  # the same study in one go: the same final table
    merged(r, tmp_path / "whole" / "sweep.csv")
    assert (tmp_path / "whole" / "sweep.csv").read_text() == (tmp_path / "partly" / "sweep.csv").read_text()


def test_sweep_dry_run_and_array_scripts(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    f = study(tmp_path, {"protect.batch_size": [4, 8], "seed": [0, 1, 2]})
    monkeypatch.chdir(tmp_path)  # in-process: nothing here trains, and the scripts name the real entry point
    code, out, _ = run_cli(["sweep", str(f), "--out", "s", "--dry-run"], capsys)
    assert code == 0 and "6 cells, 0 finished" in out and out.count("todo") == 6
    code, _, err = run_cli(["sweep", str(f), "--out", "s", "--emit", "slurm", "--nproc", "4"], capsys)
    assert code == 0, err
    text = (tmp_path / "s" / "sweep.sbatch").read_text()
    assert "#SBATCH --array=0-5" in text and "--cell $SLURM_ARRAY_TASK_ID" in text and "srun " in text
    code, _, _ = run_cli(["sweep", str(f), "--out", "s", "--emit", "lsf"], capsys)
    text = (tmp_path / "s" / "sweep.lsf").read_text()
    assert code == 0 and '"study[1-6]"' in text and "--cell $((LSB_JOBINDEX - 1))" in text


@pytest.mark.parametrize("change, message", [
    ({"grids": {"seed": [0]}}, "unknown key 'grids' (did you mean 'grid'?)"),
    ({"grid": {"protect.batchsize": [4]}}, "has no parameter 'batchsize' (did you mean 'batch_size'?)"),
    ({"grid": {"evaluate.epoch": [1]}}, "unknown key 'evaluate.epoch' (did you mean 'epochs'?)"),
    ({"grid": {"sed": [1]}}, "unknown key 'sed' (did you mean 'seed'?)"),
    ({"datasets": {"pets": "/no/such/pets"}}, "/no/such/pets: no such file or directory"),
    ({"methods": {"ucc": {}}}, "unknown method 'ucc' (did you mean 'uc'?)"),
    ({"surrogate": {"epoch": 1}}, "unknown key 'surrogate.epoch' (did you mean 'epochs'?)"),
    ({"surrogate": {}}, "'surrogate' trains on the training images the cells leave out: set fixed data.train_limit"),
    ({"grid": {"evaluate.defense": ["aug:4", "jpg:10"]}}, "unknown defence 'jpg' (did you mean 'jpeg'?)"),
])
def test_sweep_bad_input_one_line_exit_2_nothing_written(tmp_path: Path, change: dict, message: str, capsys,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    f = study(tmp_path, {"seed": [0]})
    doc = yaml.safe_load(f.read_text()) | change
    f.write_text(yaml.safe_dump(doc))
    monkeypatch.chdir(tmp_path)  # in-process: the real entry point's exit path is tested by test_cli.py
    code, _, err = run_cli(["sweep", str(f), "--out", "s"], capsys)
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "s").exists()


def test_sweep_study_surrogate_never_sees_cell_images_and_clean_victims_are_cached(tmp_path: Path) -> None:
    import json

    uc = {k: v for k, v in UC.items() if k != "width"}  # the study surrogate is a default-width smallcnn
    f = study(tmp_path, {"protect.batch_size": [4, 8]}, methods={"uc": uc},
              surrogate={"epochs": 1, "batch_size": 8})
    doc = yaml.safe_load(f.read_text())
    doc["fixed"] |= {"data.train_limit": 12, "evaluate.defense": "aug:2"}
    f.write_text(yaml.safe_dump(doc))
    r = sweep(str(f), "--out", "s", cwd=tmp_path)
    merged(r, tmp_path / "s" / "sweep.csv")
    cache = tmp_path / "s" / "cache"
    (weights,) = cache.glob("surrogate-tiny-*.pt")
    used = json.loads(weights.with_suffix(".json").read_text())
    assert len(used["train_rows"]) == 12 and len(used["cells_train_rows"]) == 12
    assert not set(used["train_rows"]) & set(used["cells_train_rows"])  # disjoint from every protected image
    cells = sorted((tmp_path / "s" / "cells").iterdir())
    res = [json.loads((c / "results.json").read_text()) for c in cells]
    for r_ in res:
        manifest = json.loads((cache / r_["protect"]["cache"] / "manifest.json").read_text())
        assert manifest["params"]["surrogate_weights"] == str(weights.resolve())
        assert manifest["fit"]["surrogate"]["source"] == "weights" and r_["defenses"] == ["aug:2"]
        assert r_["data"]["train"] == 12
    # one clean victim for both cells: the second reads the first's result instead of retraining it
    assert [r_["clean_cached"] for r_ in res] == [False, True]
    assert res[0]["clean_acc"] == res[1]["clean_acc"] and len(list(cache.glob("clean-*.json"))) == 1
    assert [g["lr_scaling"] for g in rows(tmp_path / "s" / "sweep.csv")] == ["none", "none"]


@pytest.mark.slow  # ~40 s; torchrun is covered in the default suite by evaluate, verify and segment
@pytest.mark.distributed
def test_sweep_two_cells_as_two_process_torchrun_jobs(tmp_path: Path) -> None:
    """A study of two cells (the CPU study's shape: study surrogate, cached clean victim, defence), each cell
    its own 2-process torchrun job."""
    import json

    uc = {k: v for k, v in UC.items() if k != "width"}
    f = study(tmp_path, {"protect.batch_size": [4, 8]}, methods={"uc": uc}, surrogate={"epochs": 1, "batch_size": 8})
    doc = yaml.safe_load(f.read_text())
    doc["fixed"] |= {"data.train_limit": 12, "evaluate.defense": "aug:2"}
    f.write_text(yaml.safe_dump(doc))
    r = sweep(str(f), "--out", "s", "--launcher", "torchrun", "--nproc", "2", "--device", "cpu", cwd=tmp_path)
    merged(r, tmp_path / "s" / "sweep.csv")
    got = rows(tmp_path / "s" / "sweep.csv")
    assert [g["batch_size"] for g in got] == ["4", "8"]
    res = [json.loads((c / "results.json").read_text()) for c in sorted((tmp_path / "s" / "cells").iterdir())]
    for r_, bs in zip(res, (4, 8)):
        assert r_["setup"]["world_size"] == 2 and r_["protect"]["fit_setup"]["world_size"] == 2
        assert r_["protect"]["fit_setup"]["per_rank_batch_size"] == bs // 2
    assert [r_["clean_cached"] for r_ in res] == [False, True] and res[0]["clean_acc"] == res[1]["clean_acc"]
    assert (tmp_path / "s" / "accuracy_vs_batch_size.png").stat().st_size > 1000


def test_shipped_study_configs_are_valid(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CPU study of docs/study.md and the GPU-cluster design load, with the knobs and cells they promise."""
    configs = Path(__file__).resolve().parents[2] / "configs"
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(["sweep", str(configs / "batch_size_study_cpu.yaml"), "--out", "cpu", "--dry-run"], capsys)
    assert code == 0 and "54 cells, 0 finished" in out, err
    cpu = yaml.safe_load((configs / "batch_size_study_cpu.yaml").read_text())
    assert len(cpu["grid"]["protect.batch_size"]) >= 6 and min(cpu["grid"]["protect.batch_size"]) == 16
    gpu = yaml.safe_load((configs / "batch_size_study.yaml").read_text())
    # one key per knob, the same knobs in both files (only sizes differ)
    assert set(gpu["grid"]) == set(cpu["grid"]) and set(gpu["fixed"]) - {"data.size"} >= set(cpu["fixed"]) - {
        "data.train_limit"}
    assert {k for k in cpu["methods"]["uc"] if k != "warmup_epochs"} <= set(gpu["methods"]["uc"])
    tiny_npz(tmp_path / "tiny.npz")  # the cluster file with its data paths pointed at a local archive
    gpu["datasets"] = {"tiny": str(tmp_path / "tiny.npz")}
    (tmp_path / "gpu.yaml").write_text(yaml.safe_dump(gpu))
    code, out, err = run_cli(["sweep", "gpu.yaml", "--out", "gpu", "--dry-run"], capsys)
    assert code == 0 and "12 cells, 0 finished" in out, err


def test_a_sweep_refuses_to_continue_on_changed_data_but_not_on_a_copy(tmp_path: Path, capsys,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A resumed sweep whose dataset file changed would mix cells (and cached protections and clean victims) made
    from two datasets in one table: one line, exit 2, no new cell. A byte-identical copy (new file times, as when a
    job stages the data to local disk) continues; the untouched file is not read again."""
    import shutil

    import numpy as np

    f = study(tmp_path, {"seed": [0, 1]}, methods={"random": {}})
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["sweep", str(f), "--out", "s", "--cell", "0"], capsys)
    assert code == 0, err
    recorded = json.loads((tmp_path / "s" / "sources.json").read_text())
    assert list(recorded) == ["tiny"] and len(recorded["tiny"]["digest"]) == 16 and len(recorded["tiny"]["stat"]) == 16
    # the same untouched file: its sizes and times match the record, so its bytes are not read again
    import unlearnable.data.io as io

    digest = io.source_digest

    def no_read(src):
        raise AssertionError(f"{src} read again")

    monkeypatch.setattr(io, "source_digest", no_read)
    code, _, err = run_cli(["sweep", str(f), "--out", "s", "--cell", "0"], capsys)
    assert code == 0 and "skip finished cell" in err, err
    monkeypatch.setattr(io, "source_digest", digest)
    data = tmp_path / "tiny.npz"
    shutil.copy(data, tmp_path / "copy.npz")
    data.unlink()
    shutil.copy(tmp_path / "copy.npz", data)  # same bytes, new file
    code, _, err = run_cli(["sweep", str(f), "--out", "s", "--cell", "0"], capsys)
    assert code == 0 and "skip finished cell" in err, err
    # a record written before the stats (one digest per name) is still compared by content
    (tmp_path / "s" / "sources.json").write_text(json.dumps({"tiny": recorded["tiny"]["digest"]}))
    code, _, err = run_cli(["sweep", str(f), "--out", "s", "--cell", "0"], capsys)
    assert code == 0 and "skip finished cell" in err, err
    (tmp_path / "s" / "sources.json").write_text(json.dumps(recorded))
    arrays = dict(np.load(data))
    arrays["train_images"][0, 0, 0] ^= 1  # one grey level of one training image
    np.savez(data, **arrays)
    code, _, err = run_cli(["sweep", str(f), "--out", "s", "--cell", "1"], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "dataset 'tiny' changed since the sweep in s started" in err and "new --out" in err
    assert len(list((tmp_path / "s" / "cells").iterdir())) == 1  # nothing ran
    assert json.loads((tmp_path / "s" / "sources.json").read_text()) == recorded  # the record stands
