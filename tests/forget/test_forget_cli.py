from __future__ import annotations

import json
from pathlib import Path

import pytest

from unlearnable.data.subjects import load_subjects
from unlearnable.forget.record import CONTENT_PURPOSE, ID_PURPOSE, keyed
from unlearnable.protect.keys import load_key
from unlearnable.segment.train import load_model

from .conftest import TINY, exit_code

SPLITS = ("retain", "forget", "test")


@pytest.fixture(scope="module")
def forget_all(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    meta = json.loads((tiny_model_dir / "model.json").read_text())
    ids = meta["train_ids"][:2]
    out = tmp_path_factory.mktemp("forget") / "compare"
    code = exit_code(["forget", str(tiny_model_dir), TINY, "--forget", ",".join(ids), "--strategy", "all",
                       "--epochs", "1,2", "--out", str(out), "--device", "cpu"])
    assert code == 0
    return out, ids


def test_results_json_contract(forget_all) -> None:
    out, _ = forget_all
    r = json.loads((out / "results.json").read_text())
    for s in SPLITS:
        assert set(r["original"][s]) >= {"dice", "mae"} and 0 <= r["original"][s]["dice"] <= 1
    assert set(r["strategies"]) == {"noisy-label", "max-loss", "random-encoder", "fix-decoder", "finetune", "retrain",
                                    "salun", "scrub"}  # no sisa: this model was not trained with --shards
    for runs in r["strategies"].values():
        assert list(runs) == ["1", "2"]
        for h in runs.values():
            for s in SPLITS:
                assert isinstance(h[s]["dice"], float) and isinstance(h[s]["mae"], float)
            assert 0 <= h["mia_auc"] <= 1 and h["time_s"] > 0
            assert set(h["gap_to_retrain"]) == {"forget_dice", "test_dice", "mia_auc", "mia_learned_auc"}
            for attack in ("loss", "learned"):  # point estimate inside its bootstrap interval
                a, (lo, hi) = h["mia"][attack]["auc"], h["mia"][attack]["ci"]
                assert 0 <= lo <= a <= hi <= 1, (attack, a, lo, hi)
            assert h["steps"] >= 1 and h["steps_rel_retrain"] > 0
    retrain, salun = r["strategies"]["retrain"], r["strategies"]["salun"]
    assert retrain["2"]["time_rel_retrain"] == 1.0
    assert retrain["2"]["cpu_rel_retrain"] == 1.0 and 0 < salun["2"]["cpu_s"] <= salun["2"]["time_s"] * 1.5
    assert retrain["2"]["steps"] == 2 * r["setup"]["retrain_steps_per_epoch"]
    assert salun["2"]["steps"] <= 0.1 * retrain["2"]["steps"] + 1  # the default budget: 10% of retrain's steps
    assert r["strategies"]["retrain"]["1"]["gap_to_retrain"]["forget_dice"] == 0.0


def test_forget_report_keeps_its_table_and_embeds_its_figures(forget_all) -> None:
    out, _ = forget_all
    md = (out / "report.md").read_text()
    assert md.startswith("# Unlearning report") and md.count("| retrain | 2 |") == 1  # not rendered twice
    assert "forget:" in (out / "config.yaml").read_text()
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and 'src="dice_bars.png"' not in page


def test_segment_train_report(tiny_model_dir: Path) -> None:
    meta = json.loads((tiny_model_dir / "model.json").read_text())
    md = (tiny_model_dir / "report.md").read_text()
    assert f"| test | {len(meta['test_ids'])} | {meta['scores']['test']['dice']:.3f} |" in md
    assert "segment train:" in (tiny_model_dir / "config.yaml").read_text()


def test_outputs_and_erasure_record(forget_all) -> None:
    out, ids = forget_all
    for f in ("dice_bars.png", "overlay.png", "overlay.npz", "report.md", "erasure_record.json"):
        assert (out / f).stat().st_size > 0
    rec = json.loads((out / "erasure_record.json").read_text())
    key_file = out.with_name(out.name + ".key")  # default OUT.key, beside the output, owner-only
    assert key_file.stat().st_mode & 0o777 == 0o600
    key = load_key(key_file)
    content = load_subjects(TINY).hashes()
    assert rec["request"]["keyed_with"]["key_fingerprint"] == key.fingerprint and rec["request"]["count"] == 2
    assert rec["request"]["subjects"] == sorted(
        ({"id_hmac": keyed(key, ID_PURPOSE, i), "content_hmac": keyed(key, CONTENT_PURPOSE, content[i])} for i in ids),
        key=lambda r: r["id_hmac"])
    text = (out / "erasure_record.json").read_text()
    assert not any(content[i] in text for i in ids)  # no bare content hash either
    assert len(rec["model_before"]["sha256"]) == 64
    assert rec["guarantee"]["retrain"].startswith("exact") and rec["guarantee"]["salun"].startswith("approximate")
    assert any(c.startswith("membership") for c in rec["checks_run"]) and "HMAC-SHA256" in rec["how_to_verify"]
    after = rec["models_after"]["noisy-label"]["2"]
    assert after["sha256"] != rec["model_before"]["sha256"] and (out / after["path"]).exists()
    for f in out.rglob("*"):  # no raw forget id anywhere in the output
        if f.suffix in (".json", ".md", ".yaml", ".html"):
            assert not any(i in f.read_text() for i in ids), f
    model, meta = load_model(out / "models" / "noisy-label" / "2")
    assert meta["unlearning"]["strategy"] == "noisy-label" and not set(ids) & set(meta["train_ids"])
    assert not set(ids) & set(meta["subject_sha256"])  # the unlearned model keeps no trace of them
    assert not list(out.parent.glob(".compare*"))  # no checkpoints or temp folders left


def _bad(tmp_path: Path, model_dir: Path, capsys, extra: list[str], message: str) -> None:
    out = tmp_path / "out"
    args = ["forget", str(model_dir), TINY, "--out", str(out), "--epochs", "1", "--device", "cpu", *extra]
    assert exit_code(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not list(tmp_path.iterdir())  # nothing written, not even checkpoints or a key


def test_other_data_with_the_same_ids_is_refused(tmp_path, tiny_model_dir, capsys) -> None:
    """Issue 15: a model trained on TINY must not 'forget' other brains that happen to carry the same ids."""
    out = tmp_path / "out"
    sid = json.loads((tiny_model_dir / "model.json").read_text())["train_ids"][1]
    args = ["forget", str(tiny_model_dir), TINY + ",seed=1", "--forget", sid, "--out", str(out),
            "--epochs", "1", "--device", "cpu"]
    assert exit_code(args) == 2
    err = capsys.readouterr().err.strip()
    assert f"subject {sid}: its volumes in brain-phantoms:n=6,size=16,seed=1 differ from the ones" in err, err
    assert len(err.splitlines()) == 1 and not list(tmp_path.iterdir())


def test_a_model_without_content_hashes_is_refused(tmp_path, tiny_model_dir, capsys) -> None:
    import shutil

    old = tmp_path / "old"
    shutil.copytree(tiny_model_dir, old)
    meta = json.loads((old / "model.json").read_text())
    del meta["subject_sha256"]
    (old / "model.json").write_text(json.dumps(meta))
    out = tmp_path / "out"
    sid = meta["train_ids"][0]
    assert exit_code(["forget", str(old), TINY, "--forget", sid, "--out", str(out), "--device", "cpu"]) == 2
    assert "records no subject content hashes" in capsys.readouterr().err
    assert not out.exists()


def test_unknown_forget_id(tmp_path, tiny_model_dir, capsys) -> None:
    _bad(tmp_path, tiny_model_dir, capsys, ["--forget", "synth-00"], "unknown subject id in --forget 'synth-00'")


def test_forget_everyone(tmp_path, tiny_model_dir, capsys) -> None:
    ids = json.loads((tiny_model_dir / "model.json").read_text())["train_ids"]
    _bad(tmp_path, tiny_model_dir, capsys, ["--forget", ",".join(ids)], "nothing would be left to retain")


def test_forget_a_test_subject(tmp_path, tiny_model_dir, capsys) -> None:
    sid = json.loads((tiny_model_dir / "model.json").read_text())["test_ids"][0]
    _bad(tmp_path, tiny_model_dir, capsys, ["--forget", sid], "held out as a test subject")


@pytest.mark.parametrize("extra, message", [
    (["--strategy", "noisy-labels"], "did you mean 'noisy-label'"),
    (["--epochs", "0"], "horizons must be positive"),
    (["--budget", "0"], "--budget 0.0: must be a share of retrain's steps"),
    (["--stop", "calibrate"], "did you mean 'calibrated'"),
])
def test_bad_options(tmp_path, tiny_model_dir, capsys, extra, message) -> None:
    _bad(tmp_path, tiny_model_dir, capsys, ["--forget", "synth-000", *extra], message)


def test_not_a_model_folder(tmp_path, capsys) -> None:
    (tmp_path / "m").mkdir()
    assert exit_code(["forget", str(tmp_path / "m"), TINY, "--forget", "x", "--out", str(tmp_path / "o")]) == 2
    assert "not a model folder" in capsys.readouterr().err
