"""protect --verify / --target-acc through the real CLI: a verdict in the manifest, and refusals that write nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import run_cli, write_medmnist
from unlearnable.audit.verify import LEARNT_ABOVE, VICTIM_FIELDS, best_epoch_note, combine, per_class, verdict

SMALL = "mni-tissue:n=240,test=120"


def test_verify_writes_a_verdict(tmp_path, capsys):
    out = tmp_path / "prot"
    code, _, err = run_cli(["protect", SMALL, "--method", "tiles", "--eps", "8/255", "--out", str(out), "--verify",
                            "--verify-epochs", "4"], capsys)
    v = json.loads((out / "manifest.json").read_text())["verify"]
    assert code == (3 if v["verdict"] == "invalid" else 0), err  # written either way; invalid proves nothing
    assert v["victim"] == "smallcnn" and v["epochs"] == 4 and v["chance"] == 0.25
    assert {"clean_acc", "protected_acc", "psnr", "verdict", "reason"} <= set(v)
    assert v["verdict"] == verdict(v["clean_acc"], v["protected_acc"], v["chance"])[0]
    # the protected victim's best epoch on the clean test split, beside the final one the verdict uses
    scored = [e["test_acc"] for e in v["curves"]["protected"]]
    assert v["best_acc"] == round(max(scored), 4) and scored[v["best_epoch"] - 1] == max(scored)
    assert v["best_acc"] >= v["protected_acc"]
    assert ("but at epoch" in v["reason"]) == (v["verdict"] == "protected" and v["best_acc"] > 0.35)
    assert 29.5 < v["psnr"] < 33  # 8/255 sign noise: 30.1 dB before clipping
    assert "verify:" in err
    # per class: the protected victim's confusion on the 120 clean test images, and what follows from it
    cm = v["confusion"]
    assert len(cm) == 4 and sum(map(sum, cm)) == 120
    assert sum(cm[k][k] for k in range(4)) / 120 == pytest.approx(v["protected_acc"], abs=1e-4)
    assert [c["class"] for c in v["per_class"]] == ["background", "csf", "gm", "wm"]
    assert [c["test_images"] for c in v["per_class"]] == [sum(row) for row in cm]
    assert v["classes_learnt"] == [c["class"] for c in v["per_class"]
                                   if c["recall"] > LEARNT_ABOVE and c["precision"] > LEARNT_ABOVE]
    md = (out / "report.md").read_text()  # the report says which classes leak, with the per-class table
    assert "| class | test images | recall | precision |" in md
    assert (f"**{', '.join(v['classes_learnt'])}**" in md) if v["classes_learnt"] else ("tells no class apart" in md)
    assert v["learnt_above"] == LEARNT_ABOVE and f"precision above {LEARNT_ABOVE:.0%}" in md
    # the verdict's scope: the victim and recipe it covers, and how to check against a deeper one
    assert "holds for the victim that was trained: a `smallcnn`, 4 epochs" in md
    assert "| its best epoch |" in md and f"(epoch {v['best_epoch']})" in md
    assert "--verify-victim smallcnn,resnet18 --verify-epochs 40" in md and "max pools" in md
    # the data's own colour cues beside the verdict: the tissue patches' background and white matter differ from the
    # rest in brightness by more than twice the budget (docs/methods.md, "Colour cues")
    cues = v["colour_cues"]
    assert cues["cue"] == "brightness" and cues["test_split"] == "test" and cues["budget_levels"] == pytest.approx(8)
    assert set(cues["apart_beyond_budget"]) <= set(cues["named"]) <= {"background", "csf", "gm", "wm"}
    assert "wm" in cues["named"] and cues["acc"] > 0.4
    assert cues["summary"] in err and cues["summary"][1:] in md
    both = [c for c in v["classes_learnt"] if c in cues["named"]]
    assert ("among them: a victim can learn such classes" in md) == bool(both)
    # the report states the threshold the manifest recorded, not a number of its own
    from unlearnable.report.kinds import protect as protect_report
    m = json.loads((out / "manifest.json").read_text())
    m["verify"]["learnt_above"] = 0.75
    (out / "manifest.json").write_text(json.dumps(m))
    assert "precision above 75%" in "\n".join(protect_report(out))


def test_verify_with_the_cpu_stand_in_for_resnet18(tmp_path, capsys):
    """`--verify-victim resnet18-narrow`: the deeper victim a CPU can afford; the manifest names it."""
    out = tmp_path / "prot"
    code, _, err = run_cli(["protect", SMALL, "--method", "tiles", "--out", str(out), "--verify",
                            "--verify-victim", "resnet18-narrow", "--verify-epochs", "1"], capsys)
    v = json.loads((out / "manifest.json").read_text())["verify"]
    assert code == (3 if v["verdict"] == "invalid" else 0), err
    assert v["victim"] == "resnet18-narrow" and v["epochs"] == 1
    md = (out / "report.md").read_text()
    assert "a `resnet18-narrow`, 1 epoch, crop/flip" in md
    assert "--verify-victim resnet18-narrow --verify-epochs 40" in md


def test_per_class_tells_a_default_class_from_a_learnt_one():
    """A protected victim that sends most clean images to one class has that class's recall at 100% and its
    precision near the class's share: not "learnt"; a class it still recognises has both high."""
    cm = [[50, 0, 0, 0],   # a: all to itself, and nothing else goes there: learnt
          [0, 30, 20, 0],  # b: recall 0.6, precision 1.0: learnt
          [0, 0, 50, 0],   # c: the default class, recall 1.0, precision 50 / 120
          [0, 0, 50, 0]]   # d: never recognised
    rows = {c["class"]: c for c in per_class(cm, ("a", "b", "c", "d"))}
    assert rows["a"]["f1"] == 1.0 and rows["c"]["recall"] == 1.0 and rows["c"]["precision"] == pytest.approx(0.4167)
    assert [k for k, c in rows.items() if min(c["recall"], c["precision"]) > LEARNT_ABOVE] == ["a", "b"]
    assert rows["d"] == {"class": "d", "test_images": 50, "recall": 0.0, "precision": 0.0, "f1": 0.0}


def test_verify_victims_take_the_precision_and_record_it(npz_path, tmp_path, capsys):
    out = tmp_path / "prot"
    code, _, err = run_cli(["protect", str(npz_path), "--method", "tiles", "--out", str(out), "--verify",
                            "--verify-epochs", "1", "--precision", "bf16"], capsys)
    m = json.loads((out / "manifest.json").read_text())
    assert code in (0, 3), err  # a 1-epoch victim on 24 images may well not learn: written, "invalid"
    assert m["verify"]["precision"] == m["verify"]["recipe"]["precision"] == m["runtime"]["precision"] == "bf16"


def test_verify_against_several_victims_reports_each_and_the_worst(tmp_path, capsys):
    """`--verify-victim smallcnn,resnet18-narrow`: both trained; the verdict and the top-level numbers are the worst
    victim's, the manifest and the report list each one."""
    out = tmp_path / "prot"
    code, _, err = run_cli(["protect", SMALL, "--method", "tiles", "--out", str(out), "--verify",
                            "--verify-victim", "smallcnn,resnet18-narrow", "--verify-epochs", "2"], capsys)
    v = json.loads((out / "manifest.json").read_text())["verify"]
    assert code == (3 if v["verdict"] == "invalid" else 0), err
    each = v["victims"]
    assert [x["victim"] for x in each] == ["smallcnn", "resnet18-narrow"] and set(each[0]) == set(VICTIM_FIELDS)
    assert all(x["epochs"] == 2 and x["verdict"] == verdict(x["clean_acc"], x["protected_acc"], 0.25)[0]
               for x in each)
    if v["verdict"] != "invalid":
        assert v["protected_acc"] == max(x["protected_acc"] for x in each)
        assert v["victim"] == max(each, key=lambda x: x["protected_acc"])["victim"]
    assert "'smallcnn', 'resnet18-narrow' victims" in err
    md = (out / "report.md").read_text()
    assert "| victim | verdict | clean victim | protected victim |" in md
    assert "`smallcnn`" in md and "`resnet18-narrow`" in md
    assert "holds for the victims that were trained: `smallcnn`, `resnet18-narrow`, 2 epochs" in md


def test_target_acc_must_hold_for_every_victim(tmp_path, capsys):
    """`--target-acc` with two victims: each budget tried is judged by its worst victim, and the budget chosen is
    the smallest that met the target for both."""
    src = tmp_path / "levels.npz"  # four grey levels: flip/crop-proof classes that both victims learn in 8 epochs
    arrays = {}
    for split, n, seed in (("train", 640, 0), ("test", 160, 1)):
        g = np.random.default_rng(seed)
        y = np.arange(n) % 4
        arrays[f"{split}_images"] = (g.integers(0, 60, (n, 16, 16)) + (y * 50)[:, None, None]).astype(np.uint8)
        arrays[f"{split}_labels"] = y[:, None].astype(np.uint8)
    np.savez(src, **arrays)
    from unlearnable.protect.keys import Key, save_key
    key = save_key(Key.from_seed(1), tmp_path / "fixed.key")  # a fresh key per run could leave a victim unfooled
    out = tmp_path / "prot"  # (with this key both are at or under 50% at the maximum budget, 32/255)
    code, _, err = run_cli(["protect", str(src), "--method", "tiles", "--out", str(out), "--target-acc", "0.99",
                            "--key", str(key), "--verify-victim", "smallcnn,resnet18-narrow", "--verify-epochs", "8"],
                           capsys)
    assert code == 0, err
    v = json.loads((out / "manifest.json").read_text())["verify"]
    assert v["target_acc"] == 0.99 and [x["victim"] for x in v["victims"]] == ["smallcnn", "resnet18-narrow"]
    assert v["protected_acc"] == max(x["protected_acc"] for x in v["victims"]) <= 0.99
    assert all(t["victim"] in ("smallcnn", "resnet18-narrow") for t in v["search"])
    chosen = min(int(t["eps"].split("/")[0]) for t in v["search"] if t["met"])
    assert round(v["eps"] * 255) == chosen
    assert all(t["met"] == (t["protected_acc"] <= 0.99) for t in v["search"])
    # the colour cues are judged at the budget chosen: these four levels lie 50 grey levels apart in mean
    cues = v["colour_cues"]
    assert cues["budget_levels"] == pytest.approx(chosen) and len(cues["named"]) >= 2
    gaps = {r["class"]: r["gap_levels"] for r in cues["per_class"]}
    assert all(45 < g < 55 for g in gaps.values())
    assert cues["apart_beyond_budget"] == [c for c in cues["named"] if gaps[c] > 2 * chosen]


def _e(victim, clean, prot, chance=0.25, best=None, best_epoch=None):
    v, why = verdict(clean, prot, chance)
    best = prot if best is None else best
    return {"victim": victim, "epochs": 8, "clean_acc": clean, "protected_acc": prot, "chance": chance,
            "best_acc": best, "best_epoch": best_epoch or 8, "score": "final", "scored_acc": prot, "verdict": v,
            "reason": why + best_epoch_note(v, best, best_epoch or 8, chance), "classes_learnt": [], "wall_s": {},
            "psnr": 31.0}


def test_a_protected_verdict_says_when_an_earlier_epoch_learnt():
    assert best_epoch_note("protected", 0.34, 3, 0.25) == ""  # never above chance + 10 points: nothing to add
    note = best_epoch_note("protected", 0.612, 3, 0.25)
    assert note.startswith("; but at epoch 3 the protected victim reached 61.2%") and "best on clean held-out" in note
    assert best_epoch_note("not protected", 0.9, 3, 0.25) == ""  # the verdict already says it learnt
    assert best_epoch_note("protected", None, None, 0.25) == ""  # no epoch was scored
    early = combine([_e("a", 0.9, 0.3), _e("b", 0.9, 0.33, best=0.7, best_epoch=2)])
    assert early["verdict"] == "protected" and early["reason"].startswith("every victim is within 10 points")
    assert "but at their best epochs b 70.0% at epoch 2" in early["reason"]
    assert [x["best_acc"] for x in early["victims"]] == [0.3, 0.7]
    assert "best epochs" not in combine([_e("a", 0.9, 0.3), _e("b", 0.9, 0.33)])["reason"]


def test_combine_takes_the_worst_victim():
    one = _e("a", 0.9, 0.3)
    assert combine([one]) is one and "victims" not in one  # one victim: the entry as it always was
    both = combine([_e("a", 0.9, 0.3), _e("b", 0.9, 0.33)])
    assert both["verdict"] == "protected" and both["victim"] == "b" and both["protected_acc"] == 0.33
    assert both["reason"].startswith("every victim is within 10 points of chance (a 30.0%, b 33.0%")
    leak = combine([_e("a", 0.9, 0.3), _e("b", 0.9, 0.6), _e("c", 0.9, 0.34)])
    assert leak["verdict"] == "not protected" and leak["victim"] == "b" and leak["reason"].startswith("b: ")
    assert [x["verdict"] for x in leak["victims"]] == ["protected", "not protected", "protected"]
    note = "chance is the share of the commonest class, 'nv', among the 100 test images (uniform chance 33.3%)"
    imb = combine([_e("a", 0.9, 0.3) | {"chance_note": note}, _e("b", 0.9, 0.33) | {"chance_note": note}])
    assert imb["reason"].endswith(f"; chance 25.0%); {note}")  # several victims: the note stays in the reason
    bad = combine([_e("a", 0.9, 0.6), _e("b", 0.26, 0.25)])  # a clean twin that did not learn proves nothing
    assert bad["verdict"] == "invalid" and bad["victim"] == "b" and bad["reason"].startswith("b: ")


def test_verify_score_best_scores_the_best_epoch(tmp_path, capsys):
    out = tmp_path / "prot"
    code, _, err = run_cli(["protect", SMALL, "--method", "tiles", "--out", str(out), "--verify", "--verify-epochs",
                            "4", "--verify-score", "best"], capsys)
    v = json.loads((out / "manifest.json").read_text())["verify"]
    assert code == (3 if v["verdict"] == "invalid" else 0), err
    assert v["score"] == "best" and v["scored_acc"] == v["best_acc"] >= v["protected_acc"]
    assert v["verdict"] == verdict(v["clean_acc"], v["best_acc"], v["chance"])[0]
    if v["verdict"] != "invalid":
        assert v["reason"].startswith(f"the protected victim's best epoch ({v['best_epoch']}) reached")
        assert "but at epoch" not in v["reason"]  # the verdict already scored the best epoch


def test_combine_and_the_target_search_take_the_scored_accuracy():
    a, b = _e("a", 0.9, 0.3), _e("b", 0.9, 0.33)
    a |= {"score": "best", "scored_acc": 0.34}  # a's best epoch is worse than b's final one
    b |= {"score": "best", "scored_acc": 0.33}
    both = combine([a, b])
    assert both["victim"] == "a" and both["reason"].startswith("every victim is within 10 points of chance at their "
                                                                "best epochs (a 34.0%, b 33.0%")
    assert [x["scored_acc"] for x in both["victims"]] == [0.34, 0.33]


def test_the_verify_victim_and_the_demo_train_the_same_number_of_epochs():
    """protect --verify, the demo and VerifyOptions share one default (the CLI modules stay torch-free at import,
    so they spell it; this keeps the three in step)."""
    import inspect

    from unlearnable.audit.verify import VERIFY_EPOCHS, VerifyOptions
    from unlearnable.cli.demo_cmds import demo
    from unlearnable.cli.protect_cmds import protect_cmd

    assert VerifyOptions().epochs == VERIFY_EPOCHS == 16
    assert inspect.signature(protect_cmd).parameters["verify_epochs"].default.default == VERIFY_EPOCHS
    assert inspect.signature(demo).parameters["epochs"].default.default == VERIFY_EPOCHS


def test_each_victim_checkpoints_into_a_folder_of_its_own_images_and_recipe(tmp_path):
    """A --resume continues a victim only on the same protected images with the same recipe and size; any change
    (another key or budget, labels, epochs, --verify-size) names another folder, where training starts afresh."""
    import torch

    from unlearnable.audit.verify import victim_dir
    from unlearnable.data import load
    from unlearnable.train.loop import Recipe

    ds = load("mni-tissue:n=40,test=8")
    r = Recipe(model="smallcnn", epochs=3)
    here = victim_dir(tmp_path, ds, r, None)
    assert here.parent == tmp_path and here.name.startswith("smallcnn-")
    assert victim_dir(tmp_path, ds, Recipe(model="smallcnn", epochs=3), None) == here  # same inputs: same folder
    idx = ds.indices("train")
    moved = ds.images.clone()
    moved[idx[0], 0, 0, 0] ^= 1  # one grey level of one pixel of one training image
    relabelled = ds.labels.clone()
    relabelled[idx[0]] = (relabelled[idx[0]] + 1) % ds.num_classes
    others = {victim_dir(tmp_path, ds.with_images(moved, torch.arange(len(ds))), r, None),
              victim_dir(tmp_path, replace_labels(ds, relabelled), r, None),
              victim_dir(tmp_path, ds, Recipe(model="smallcnn", epochs=4), None),
              victim_dir(tmp_path, ds, r, 16)}
    assert here not in others and len(others) == 4
    test_only = ds.images.clone()
    test_only[ds.indices("test")[0], 0, 0, 0] ^= 1  # the clean test split is not what the victim trains on
    assert victim_dir(tmp_path, ds.with_images(test_only, torch.arange(len(ds))), r, None) == here
    assert victim_dir(None, ds, r, None) is None  # no --resume folder: no checkpoints


def replace_labels(ds, labels):
    from dataclasses import replace

    return replace(ds, labels=labels)


def test_verdicts():
    assert verdict(0.9, 0.12, 0.1)[0] == "protected"
    assert verdict(0.9, 0.5, 0.1)[0] == "not protected"
    assert verdict(0.2, 0.1, 0.1)[0] == "invalid"  # the clean victim did not learn: nothing is proved


@pytest.mark.parametrize("score", ["final", "best"])
def test_target_acc_that_cannot_be_met_writes_nothing(tmp_path, capsys, score):
    out = tmp_path / "prot"
    code, _, err = run_cli(["protect", SMALL, "--method", "random", "--out", str(out), "--target-acc", "0.05",
                            "--verify-epochs", "3", "--verify-score", score], capsys)
    assert code == 2
    line = err.strip().splitlines()[-1]
    assert "--target-acc 0.05" in line and "32/255" in line and "nothing written" in line
    assert ("(protected accuracy at its best epoch " in line) == (score == "best")
    assert f"protected accuracy{' at its best epoch' if score == 'best' else ''} " in err  # the search's log
    assert "the images' own brightness alone tells apart" in line and "wm" in line  # why, where the data says
    assert not out.exists() and not (tmp_path / "prot.key").exists()


@pytest.mark.parametrize("args, needle", [
    (["--target-acc", "1.5"], "--target-acc 1.5"),
    (["--target-acc", "0"], "--target-acc 0"),
    (["--eps", "40/255"], "eps=40/255"),
    (["--verify", "--verify-victim", "nosuchnet"], "nosuchnet"),
    (["--verify", "--verify-victim", "smallcnn,nosuchnet"], "nosuchnet"),
    (["--verify", "--verify-victim", "smallcnn,smallcnn"], "named twice"),
    (["--verify", "--verify-victim", "auto,smallcnn"], "'auto' stands alone"),
    (["--verify", "--verify-victim", "smallcnn,"], "an empty victim name"),
    (["--verify", "--verify-size", "4"], "--verify-size 4"),
    (["--verify-size", "16"], "--verify-size 16: only with --verify"),
    (["--verify", "--verify-score", "last"], "--verify-score last: must be one of final, best"),
    (["--verify-score", "best"], "--verify-score best: only with --verify"),
])
def test_bad_verify_options(npz_path, tmp_path, capsys, args, needle):
    out = tmp_path / "prot"
    code, _, err = run_cli(["protect", str(npz_path), "--method", "tiles", "--out", str(out), *args], capsys)
    assert code == 2 and needle in err.strip().splitlines()[-1]
    assert not out.exists()


def test_verify_needs_two_classes_and_a_test_split(tmp_path, capsys):
    one = tmp_path / "one.npz"
    write_medmnist(one, classes=1)
    code, _, err = run_cli(["protect", str(one), "--method", "random", "--out", str(tmp_path / "a"), "--verify"],
                           capsys)
    assert code == 2 and "class" in err and not (tmp_path / "a").exists()
    notest = tmp_path / "notest.npz"
    x = np.random.default_rng(0).integers(0, 255, (20, 8, 8), dtype=np.uint8)
    np.savez(notest, train_images=x, train_labels=(np.arange(20) % 2)[:, None])
    code, _, err = run_cli(["protect", str(notest), "--method", "random", "--out", str(tmp_path / "b"), "--verify"],
                           capsys)
    assert code == 2 and "no 'test' or 'val' split" in err and not (tmp_path / "b").exists()


def test_target_acc_needs_an_eps_and_says_so_before_any_work(npz_path, tmp_path, capsys):
    out = tmp_path / "prot"
    code, _, err = run_cli(["protect", str(npz_path), "--method", "ops", "--out", str(out), "--target-acc", "0.3"],
                           capsys)
    assert code == 2 and "method 'ops' has no L-inf budget" in err.strip().splitlines()[-1]
    assert "verify: training" not in err and not out.exists() and not (tmp_path / "prot.key").exists()


def test_verify_size_trains_the_victims_on_resized_images(tmp_path, capsys):
    out = tmp_path / "prot"
    code, _, err = run_cli(["protect", SMALL, "--method", "tiles", "--out", str(out), "--verify", "--verify-epochs",
                            "2", "--verify-size", "16"], capsys)
    v = json.loads((out / "manifest.json").read_text())["verify"]
    assert code in (0, 3), err
    assert v["victim_size"] == [16, 16] and v["resized"] is True and "resized to 16x16" in err
    assert 29.5 < v["psnr"] < 33  # measured on the images as written (32 px), not on the resized view
    assert "at 16x16 pixels (resized)" in (out / "report.md").read_text()
    native = tmp_path / "native"
    run_cli(["protect", SMALL, "--method", "tiles", "--out", str(native), "--verify", "--verify-epochs", "1"], capsys)
    v = json.loads((native / "manifest.json").read_text())["verify"]
    assert v["victim_size"] == [32, 32] and v["resized"] is False


def test_at_size_antialiases_like_a_trainers_resize():
    """Why a downscaling trainer defeats fine tiles: an antialiased 2x downscale turns a 2-px checkerboard of +-8
    around mid-grey into flat mid-grey, while a 4-px-period pattern keeps a period-2 pattern (at lower amplitude)."""
    import torch

    from unlearnable.audit.verify import at_size
    from unlearnable.data import ImageSet
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    fine = 128 + 8 * (1 - 2 * ((yy + xx) % 2))
    coarse = 128 + 8 * (1 - 2 * ((yy // 2 + xx // 2) % 2))
    imgs = torch.stack([fine, coarse])[:, None].to(torch.uint8)
    ds = ImageSet(imgs, torch.tensor([0, 1]), ("a", "b"), ("train", "train"), ("x", "y"))
    small = at_size(ds, 16)
    assert small.size == (16, 16) and small.images.dtype == torch.uint8 and small.ids == ds.ids
    assert int((small.images[0].int() - 128).abs().max()) <= 1  # the fine pattern is gone
    swing = small.images[1].int() - 128
    assert int(swing.abs().max()) >= 3 and bool((swing[0, 0, ::2] * swing[0, 0, 1::2] < 0).all())  # kept, smaller
    assert at_size(ds, None) is ds and at_size(ds, 32) is ds


def test_verify_warns_about_classes_with_no_test_images(tmp_path, capsys):
    """A rare class with training images but none held out is never scored: the warning names it, the run goes on."""
    import shutil

    from helpers import write_folder

    src = write_folder(tmp_path / "src", classes=("cat", "dog", "rare"), per_class=6)
    shutil.rmtree(src / "test" / "rare")
    out = tmp_path / "prot"
    code, _, err = run_cli(["protect", str(src), "--method", "random", "--eps", "8/255", "--out", str(out), "--verify",
                            "--verify-epochs", "1"], capsys)
    assert code in (0, 3), err  # 3: a one-epoch victim on a dozen images need not learn
    assert ("warning: verify: 1 class(es) have training images but none in the clean 'test' split, so the verdict "
            "says nothing about them: rare") in err
    assert (out / "manifest.json").is_file()
    # evaluate on the same pair says so too (the results, not a verdict)
    code, _, err = run_cli(["evaluate", "--protected", str(out), "--clean", str(src), "-o", str(tmp_path / "ev"),
                            "--model", "smallcnn", "--epochs", "1", "--batch-size", "8", "--device", "cpu"], capsys)
    assert code in (0, 3), err
    assert "warning: 1 class(es) have training images but none in the clean 'test' split, so the results say nothing " \
           "about them: rare" in err
    # without 'rare', a victim that answers 'cat' everywhere scores half the test split: that is chance, not 1/3
    assert "chance is the share of the commonest class, 'cat', among the 12 test images (uniform chance 33.3%); " \
           "balanced accuracy (mean per-class recall): clean " in err
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert res["chance_acc"] == 0.5 and res["clean_balanced_acc"] is not None
