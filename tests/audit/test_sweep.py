"""``unlearnable sweep``: grid, resume, cache, merge, array-job scripts, bad input, and a 2-process cell."""

from __future__ import annotations

import csv
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
    assert (tmp_path / "partly" / "accuracy_vs_batch_size.png").stat().st_size > 1000
    report = (tmp_path / "partly" / "report.md").read_text()
    assert "# Sweep report" in report and report.count("| tiny | uc | 4 |") == 2 and "accuracy_vs_batch_size" in report
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


@pytest.mark.slow  # ~22 s; torchrun is covered in the default suite by evaluate, verify and segment
@pytest.mark.distributed
def test_sweep_cell_as_two_process_torchrun_job(tmp_path: Path) -> None:
    f = study(tmp_path, {"protect.batch_size": [8]}, methods={"uc": UC | {"ssl_epochs": 1,
                                                                         "surrogate_batch_size": 8}})
    r = sweep(str(f), "--out", "s", "--launcher", "torchrun", "--nproc", "2", "--device", "cpu", cwd=tmp_path)
    merged(r, tmp_path / "s" / "sweep.csv")
    got = rows(tmp_path / "s" / "sweep.csv")
    assert len(got) == 1 and got[0]["batch_size"] == "8"
    import json

    res = json.loads(next((tmp_path / "s" / "cells").iterdir()).joinpath("results.json").read_text())
    assert res["setup"]["world_size"] == 2 and res["protect"]["fit_setup"]["world_size"] == 2
    assert res["protect"]["fit_setup"]["per_rank_batch_size"] == 4
