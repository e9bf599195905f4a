"""SIGTERM (a scheduler's time limit, torchrun stopping its workers, ``kill``) unwinds a run like Ctrl-C: one
``error:`` line, exit status 143, no half-built output, the checkpoints kept and named, and ``--resume`` finishes.
Proven on a real process, signalled once its first checkpoint is on disk."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers import write_train_test_npz
from unlearnable.runtime.checkpoint import CRASH_LOG_ENV

SRC = str(Path(__file__).resolve().parents[2] / "src")


def test_sigterm_keeps_the_checkpoints_says_so_and_resume_finishes(tmp_path: Path) -> None:
    write_train_test_npz(tmp_path / "tiny.npz", n=24, classes=3)
    saved = tmp_path / "saves.log"
    env = os.environ | {"PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", CRASH_LOG_ENV: str(saved)}
    args = [sys.executable, "-m", "unlearnable", "protect", "tiny.npz", "--method", "tiles", "--out", "pv",
            "--verify", "--verify-epochs", "60", "--device", "cpu"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (saved.is_file() and saved.read_text().strip()) and proc.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be signalled"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err[-2000:]
    assert "terminated (SIGTERM)" in errors[0] and "kept" in errors[0] and ".pv.partial" in errors[0]
    assert "--resume" in errors[0]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [".pv.partial", "saves.log", "tiny.npz"], left  # no output, no temp folder, no key beside it
    assert list((tmp_path / ".pv.partial" / "verify").rglob("*.ckpt"))
    r = subprocess.run([*args, "--resume"], cwd=tmp_path,
                       env=env | {CRASH_LOG_ENV: ""}, capture_output=True, text=True, timeout=600)
    assert r.returncode in (0, 3), r.stderr[-2000:]
    assert (tmp_path / "pv" / "manifest.json").is_file() and not (tmp_path / ".pv.partial").exists()
