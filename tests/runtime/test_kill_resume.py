"""Crash safety, proven on real processes: SIGKILL inside an epoch and half-way through a checkpoint write, then
``--resume`` (re-running, for ``evaluate``) must give the same output bytes as a run that never stopped; a damaged
checkpoint is refused with one line naming it, and the good checkpoints beside it survive the refusal.

The kill points are drawn at random (``UNLEARNABLE_CRASH_SEED`` repeats a draw; every failure message names it) and
injected through ``runtime/checkpoint.py``'s test hook, ``UNLEARNABLE_TEST_CRASH``.
"""

from __future__ import annotations

import json
import os
import random
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import write_train_test_npz
from unlearnable.runtime.checkpoint import CRASH_ENV, CRASH_LOG_ENV

pytestmark = pytest.mark.slow

SRC = str(Path(__file__).resolve().parents[2] / "src")
SEED = int(os.environ.get("UNLEARNABLE_CRASH_SEED") or secrets.randbelow(10**6))
PHANTOMS = "brain-phantoms:n=6,size=16"
SEG = ["--model", "resnet10", "--width", "4", "--patch", "16", "--batch-size", "2", "--test-fraction", "0.34",
       "--device", "cpu"]
# what may differ between two uninterrupted runs: wall-clock and CPU times, the creation time, the command line
# (config.yaml and the report name the output folder and --resume)
TIMES = re.compile(r"^(created_utc|.*_s|time_.*|seconds|cpu_rel_retrain)$")
NOT_COMPARED = {"config.yaml", "report.md", "report.html"}


def cli(args: list[str], cwd: Path, crash: str = "", log: Path | None = None) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", CRASH_ENV: crash,
                        CRASH_LOG_ENV: str(log or "")}
    return subprocess.run([sys.executable, "-m", "unlearnable", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def _strip_times(doc):
    if isinstance(doc, dict):
        return {k: _strip_times(v) for k, v in doc.items() if not TIMES.match(k)}
    if isinstance(doc, list):
        return [_strip_times(v) for v in doc]
    return doc


def contents(folder: Path) -> dict[str, object]:
    """Every file of an output folder: bytes, or for JSON the document without its timings."""
    out: dict[str, object] = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_file() and rel not in NOT_COMPARED:
            out[rel] = _strip_times(json.loads(p.read_text())) if p.suffix == ".json" else p.read_bytes()
    return out


def differences(a: object, b: object, at: str = "") -> list[str]:
    """Where two ``contents`` differ, as paths (``results.json/strategies/0/time``)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str) for d in differences(a.get(k), b.get(k), f"{at}/{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{at}/{i}")]
    return [] if a == b else [f"{at}: {str(a)[:80]} != {str(b)[:80]}"]


def saves(log: Path) -> list[Path]:
    return [Path(line) for line in log.read_text().splitlines()] if log.is_file() else []


def kill_and_resume(tmp_path: Path, first: list[str], resume: list[str], out: str,
                    work: Callable[[Path], Path], done: tuple[int, ...] = (0,)) -> None:
    """``done``: the exit codes of a finished run (``evaluate`` exits 3 when its tiny victim proves nothing).

    Reference run; a run killed inside a random epoch; a resumed run killed half-way through a random checkpoint
    write; a resume from a damaged checkpoint (refused); the final resume, compared with the reference."""
    rng = random.Random(SEED)
    seen = f"UNLEARNABLE_CRASH_SEED={SEED}"
    ref = tmp_path / "ref"
    ref.mkdir()
    log = tmp_path / "ref.log"
    r = cli([*first, "--out", str(ref / out)], tmp_path, log=log)
    assert r.returncode in done, r.stderr[-2000:]
    n = len(saves(log))
    assert n >= 3, f"{n} checkpoints: too few to interrupt"
    cut = tmp_path / "cut"
    cut.mkdir()
    args = [*first, "--out", str(cut / out)]

    after = rng.randint(1, n - 2)  # inside the epoch that follows checkpoint `after`
    log_a = tmp_path / "a.log"
    r = cli(args, tmp_path, f"after:{after}:{rng.uniform(0.0, 0.1):.3f}", log_a)
    assert r.returncode == -9, f"{seen}: not killed in epoch {after + 1} of {n} (exit {r.returncode})"
    assert not (cut / out).exists()
    left = n - len(saves(log_a))

    nth = rng.randint(1, left)  # half-way through writing checkpoint `nth` of the resumed run
    log_b = tmp_path / "b.log"
    r = cli([*args, *resume], tmp_path, f"write:{nth}", log_b)
    assert r.returncode == -9, f"{seen}: not killed writing checkpoint {nth} of {left} (exit {r.returncode})"
    assert list(work(cut).rglob(".*.tmp")), f"{seen}: the half-written temp file is not there"

    written = saves(log_a) + saves(log_b)
    victim = (written[-1] if written else saves(log)[0])
    victim = victim if victim.is_absolute() else tmp_path / victim
    if victim.is_file():  # damage the last good checkpoint: the resume must refuse it, in one line
        good = victim.read_bytes()
        before = sorted(p.name for p in victim.parent.iterdir())
        victim.write_bytes(good[: len(good) // 3])
        r = cli([*args, *resume], tmp_path)
        err = [line for line in r.stderr.splitlines() if line.startswith("error:")]  # the rest is progress
        assert r.returncode == 2 and len(err) == 1, f"{seen}: {r.stderr[-2000:]}"
        assert f"{victim}: damaged checkpoint" in err[0] and "Traceback" not in r.stderr, f"{seen}: {err}"
        assert sorted(p.name for p in victim.parent.iterdir()) == before, f"{seen}: checkpoints lost on refusal"
        victim.write_bytes(good)

    r = cli([*args, *resume], tmp_path)
    assert r.returncode in done, f"{seen}: {r.stderr[-2000:]}"
    diff = differences(contents(cut / out), contents(ref / out))
    assert not diff, f"{seen}: resumed output differs from an uninterrupted run: {diff[:10]}"
    assert not work(cut).exists(), f"{seen}: checkpoints left behind after a finished run"


def test_protect_uc_killed_and_resumed(tmp_path: Path) -> None:
    write_train_test_npz(tmp_path / "tiny.npz", n=24, classes=3)
    first = ["protect", "tiny.npz", "--method", "uc", "--key", "k.key", "--clusters", "2", "--epochs", "3",
             "--batch-size", "8", "--device", "cpu"]
    assert cli([*first, "--out", "keyonly", "--epochs", "1"], tmp_path).returncode == 0  # the key both runs use
    kill_and_resume(tmp_path, first, ["--resume"], "uc", lambda d: d / ".uc.partial")


def test_protect_verify_killed_and_resumed(tmp_path: Path) -> None:
    """``protect --verify``'s victims (protected, then its clean twin) checkpoint into ``.OUT.partial/verify/``;
    ``--resume`` continues them, and the manifest's verdict, curves and confusion equal an uninterrupted run's."""
    write_train_test_npz(tmp_path / "tiny.npz", n=24, classes=3)
    first = ["protect", "tiny.npz", "--method", "tiles", "--key", "k.key", "--verify", "--verify-epochs", "3",
             "--device", "cpu"]
    assert cli(["protect", "tiny.npz", "--method", "tiles", "--key", "k.key", "--out", "keyonly"],
               tmp_path).returncode == 0  # the key both runs use
    kill_and_resume(tmp_path, first, ["--resume"], "pv", lambda d: d / ".pv.partial", done=(0, 3))


def test_protect_verify_parks_a_new_key_for_resume(tmp_path: Path) -> None:
    """Without ``--key`` a verified run creates its key: a run killed while its victims train parks the key in
    ``.OUT.partial/`` (mode 0600) and writes none beside the output; ``--resume`` protects with that same key."""
    write_train_test_npz(tmp_path / "tiny.npz", n=24, classes=3)
    args = ["protect", "tiny.npz", "--method", "tiles", "--verify", "--verify-epochs", "3", "--device", "cpu",
            "--out", "pv"]
    r = cli(args, tmp_path, "after:2:0.0")
    assert r.returncode == -9, r.stderr[-2000:]
    parked = tmp_path / ".pv.partial" / "key"
    assert parked.is_file() and parked.stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / "pv").exists() and not (tmp_path / "pv.key").exists()
    kept = list((tmp_path / ".pv.partial" / "verify").rglob("*.ckpt"))
    assert kept, "no victim checkpoint to resume from"
    secret = parked.read_bytes()
    r = cli([*args, "--resume"], tmp_path)
    assert r.returncode in (0, 3), r.stderr[-2000:]
    assert (tmp_path / "pv.key").read_bytes() == secret
    assert not (tmp_path / ".pv.partial").exists()


def test_evaluate_killed_and_resumed(tmp_path: Path) -> None:
    write_train_test_npz(tmp_path / "tiny.npz", n=24, classes=3)
    r = cli(["protect", "tiny.npz", "--method", "tiles", "--key", "k.key", "--out", "prot"], tmp_path)
    assert r.returncode == 0, r.stderr
    first = ["evaluate", "--protected", "prot", "--clean", "tiny.npz", "--model", "smallcnn", "--epochs", "4",
             "--batch-size", "8", "--device", "cpu"]

    def work(d: Path) -> Path:
        found = list(d.glob(".ev.partial-*"))
        return found[0] if found else d / ".ev.partial-none"

    kill_and_resume(tmp_path, first, [], "ev", work, done=(0, 3))


def test_segment_train_killed_and_resumed(tmp_path: Path) -> None:
    first = ["segment", "train", PHANTOMS, *SEG, "--epochs", "4"]
    kill_and_resume(tmp_path, first, ["--resume"], "seg", lambda d: d / ".seg.ckpt")


def test_forget_killed_and_resumed(tmp_path: Path) -> None:
    r = cli(["segment", "train", PHANTOMS, *SEG, "--epochs", "2", "--out", "model"], tmp_path)
    assert r.returncode == 0, r.stderr
    sid = json.loads((tmp_path / "model" / "model.json").read_text())["train_ids"][0]
    first = ["forget", "model", PHANTOMS, "--forget", sid, "--strategy", "finetune,retrain", "--epochs", "1,2,3",
             "--record-key", "rk.key", "--device", "cpu"]
    assert cli([*first, "--out", "keyonly", "--strategy", "finetune", "--epochs", "1"], tmp_path).returncode == 0
    shutil.rmtree(tmp_path / "keyonly")
    kill_and_resume(tmp_path, first, ["--resume"], "fg", lambda d: d / ".fg.ckpt")
