"""An interrupted subjects protect resumes (surrogate checkpoint, finished subjects kept) to the same bytes; under
torchrun the subjects are sharded over ranks."""

from __future__ import annotations

import json

import pytest
from tests.forget.conftest import exit_code
from tests.protect3d.conftest import TINY

TINY_EM = ["-p", "rounds=2", "-p", "epochs=1", "-p", "patch=16", "-p", "width=4", "-p", "pgd_steps=1"]


def _digests(out) -> dict[str, str]:
    return json.loads((out / "manifest.json").read_text())["output"]["sha256"]


def test_interrupted_protect_resumes_to_the_same_bytes(tmp_path, monkeypatch) -> None:
    import unlearnable.protect3d.run as R
    from unlearnable.protect3d.seg_em import SegErrorMinimising
    from unlearnable.protect3d.surrogate import Surrogate

    def args(out: str) -> list[str]:
        return ["protect", TINY, "--method", "seg-em", "--eps", "8/255", "--out", str(tmp_path / out), "--key",
                str(tmp_path / "k.key"), *TINY_EM]

    assert exit_code(args("full")) == 0
    # 1. stopped in the second round of the fit: the first round's checkpoint stays, nothing is published
    real_descend, calls = SegErrorMinimising._descend, []

    def cut_descend(self, *a):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_descend(self, *a)

    monkeypatch.setattr(SegErrorMinimising, "_descend", cut_descend)
    assert exit_code(args("cut")) == 130
    work = tmp_path / ".cut.partial"
    assert (work / "seg-em.pt").is_file() and not (tmp_path / "cut").exists()
    monkeypatch.setattr(SegErrorMinimising, "_descend", real_descend)
    # 2. resumed, then stopped after two subjects were written
    real_write, written = R.write_subject, []

    def cut_write(*a, **k):
        if len(written) == 2:
            raise KeyboardInterrupt
        written.append(a[0].sid)
        return real_write(*a, **k)

    monkeypatch.setattr(R, "write_subject", cut_write)
    assert exit_code([*args("cut"), "--resume"]) == 130
    assert len(list((work / "done").glob("*.json"))) == 2
    # 3. resumed again: no surrogate training left, the two finished subjects are not redone
    monkeypatch.setattr(Surrogate, "train_round", lambda *a, **k: pytest.fail("the surrogate trained again"))
    again: list[str] = []
    monkeypatch.setattr(R, "write_subject", lambda *a, **k: again.append(a[0].sid) or real_write(*a, **k))
    assert exit_code([*args("cut"), "--resume"]) == 0
    assert not set(again) & set(written) and len(again) == 2 and not work.exists()
    assert _digests(tmp_path / "cut") == _digests(tmp_path / "full")


@pytest.mark.slow
@pytest.mark.distributed
def test_protect_subjects_under_torchrun_two_processes(tmp_path) -> None:
    from helpers import torchrun
    from helpers import torchrun_status as _exit

    key = str(tmp_path / "k.key")
    assert exit_code(["protect", TINY, "--method", "noise3d", "--out", str(tmp_path / "one"), "--key", key]) == 0
    r = torchrun(["protect", TINY, "--method", "noise3d", "--out", str(tmp_path / "two"), "--key", key], tmp_path)
    assert _exit(r) == 0, r.stderr[-2000:]
    assert _digests(tmp_path / "two") == _digests(tmp_path / "one")  # model-free: sharding changes no byte
    r = torchrun(["protect", TINY, "--method", "seg-em", "--out", str(tmp_path / "em"), "--key", key, *TINY_EM],
                 tmp_path)
    assert _exit(r) == 0, r.stderr[-2000:]
    m = json.loads((tmp_path / "em" / "manifest.json").read_text())
    assert m["metrics"]["protected"] == 3 and len(m["fit"]["surrogate_loss"]) == 2
    assert all(b["max_change"] <= b["budget"] for s in m["subjects"].values() if s["protected"]
               for b in s["budget"].values())
