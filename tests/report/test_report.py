"""``unlearnable report DIR`` and the report every command leaves in its output folder."""

from __future__ import annotations

import base64
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from helpers import run_cli, write_train_test_npz

FAST = ["--model", "smallcnn", "--epochs", "1", "--batch-size", "8", "--device", "cpu"]


class _Images(HTMLParser):
    """Collects the ``src`` of every <img> in a page (and checks that it parses)."""

    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs)["src"])


def images(page: Path) -> list[str]:
    p = _Images()
    p.feed(page.read_text())
    return p.srcs


def assert_self_contained(folder: Path, n_figures: int) -> None:
    """Every figure of the HTML is an embedded PNG that decodes to the bytes of a PNG in the folder."""
    srcs = images(folder / "report.html")
    assert len(srcs) == n_figures and all(s.startswith("data:image/png;base64,") for s in srcs)
    pngs = {p.read_bytes() for p in folder.rglob("*.png")}
    assert all(base64.b64decode(s.split(",", 1)[1]) in pngs for s in srcs)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A protect output and its evaluate output, made by the real CLI (evaluate exits 3 on these tiny data)."""
    tmp = tmp_path_factory.mktemp("report")
    npz = write_train_test_npz(tmp / "tiny.npz", n=16)
    assert run_cli(["protect", str(npz), "-m", "random", "--eps", "8/255", "-p", "mode=classwise",
                    "-o", str(tmp / "prot")],
                   _NoCapture())[0] == 0
    code = run_cli(["evaluate", "--protected", str(tmp / "prot"), "--clean", str(npz), *FAST], _NoCapture())[0]
    assert code in (0, 3)
    return {"protect": tmp / "prot", "evaluate": tmp / "prot-audit", "npz": npz}


class _NoCapture:
    """``run_cli`` without pytest's capsys (module-scoped fixtures cannot use it)."""

    def readouterr(self):
        return type("C", (), {"out": "", "err": ""})()


def test_protect_output_reports_its_measured_quality(runs):
    out = runs["protect"]
    manifest = json.loads((out / "manifest.json").read_text())
    md = (out / "report.md").read_text()
    m = manifest["metrics"]["train"]
    assert "# Protection report: prot" in md and f"| train | {m['psnr_db']:.2f} | {m['ssim']:.4f} | 8.0/255 |" in md
    assert (out / "config.yaml").is_file() and "## Configuration" in md
    assert_self_contained(out, 0)


def test_a_verified_output_shows_its_victims_curves_in_place_and_nested(tmp_path, capsys):
    """--verify draws verify.png (accuracies only) beside the verification table; a folder that holds the output
    (the demo's) shows it at the sub-folder's path, once; an unverified output has no figure (the run above)."""
    npz = write_train_test_npz(tmp_path / "tiny.npz", n=16)
    out = tmp_path / "runs" / "tiles"
    code, _, err = run_cli(["protect", str(npz), "-m", "tiles", "-o", str(out), "--key", str(tmp_path / "k.key"),
                            "--verify", "--verify-epochs", "2"], capsys)
    assert code in (0, 3), err
    md = (out / "report.md").read_text()
    link = "![the --verify victim's clean-test accuracy per epoch](verify.png)"
    assert (out / "verify.png").is_file() and link in md
    assert md.index("### Verification") < md.index(link) < md.index("This verdict holds")
    assert "## Figures" not in md  # shown in place, not again at the end
    assert_self_contained(out, 1)
    code, _, err = run_cli(["report", str(tmp_path / "runs")], capsys)
    assert code == 0, err
    parent = (tmp_path / "runs" / "report.md").read_text()
    assert parent.count("verify.png") == 1 and "(tiles/verify.png)" in parent
    assert len(images(tmp_path / "runs" / "report.html")) == 1


def test_evaluate_output_reports_accuracies_verdict_and_curves(runs):
    out = runs["evaluate"]
    r = json.loads((out / "results.json").read_text())
    md = (out / "report.md").read_text()
    assert f"| clean | {100 * r['clean_acc']:.1f}% |" in md
    assert f"| protected: random | {100 * r['protected_acc']:.1f}% |" in md
    assert ("**INVALID**" in md) == (not r["valid"])  # exit 3 still leaves its report
    assert "![curves.png](curves.png)" in md
    assert_self_contained(out, 1)


def test_a_protected_output_with_a_report_still_loads_and_is_protected_like_before(runs, tmp_path, capsys):
    """The report and config.yaml beside the data change nothing for the tools that read a protect output."""
    from unlearnable.protect.run import load_output

    data, manifest = load_output(runs["protect"])
    assert manifest["method"] == "random" and len(data) == 24
    code, _, err = run_cli(["protect", str(runs["npz"]), "--like", str(runs["protect"]), "-o", str(tmp_path / "l"),
                            "--key", str(runs["protect"]) + ".key"], capsys)
    assert code == 0, err
    with np.load(runs["protect"] / "tiny.npz") as a, np.load(tmp_path / "l" / "tiny.npz") as b:
        assert all(np.array_equal(a[k], b[k]) for k in a.files)


def test_report_keeps_authored_text_and_renders_unknown_folders(tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "report.md").write_text("# My study\n\nWritten by hand.\n")
    (folder / "stats.json").write_text(json.dumps({"score": 0.25, "name": "x", "nested": {"a": 1}}))
    from PIL import Image

    Image.new("RGB", (4, 4), (200, 10, 10)).save(folder / "fig.png")
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.name != "report.md"}
    code, out, err = run_cli(["report", str(folder)], capsys)
    assert code == 0 and "generic report" in out, err
    md = (folder / "report.md").read_text()
    assert md.startswith("# My study\n\nWritten by hand.\n") and "![fig.png](fig.png)" in md
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.name in before} == before  # inputs untouched
    code, _, _ = run_cli(["report", str(folder)], capsys)
    assert code == 0 and (folder / "report.md").read_text() == md  # re-rendering replaces only its own block
    assert_self_contained(folder, 1)


def test_a_protected_image_folder_keeps_its_images_out_of_the_report(tmp_path, capsys):
    """``out/<class>/*.png`` is the protected dataset, not figures: the report embeds none of it, while a sub-output
    one level down (a folder with its own results) still shows its figures."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in "ab":
        (tmp_path / "src" / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(tmp_path / "src" / c / f"{i}.png")
    out = tmp_path / "out"
    code, _, err = run_cli(["protect", str(tmp_path / "src"), "--method", "tiles", "--out", str(out),
                            "--key", str(tmp_path / "k.key")], capsys)
    assert code == 0, err
    assert "![" not in (out / "report.md").read_text() and images(out / "report.html") == []
    sub = tmp_path / "study" / "cell"
    sub.mkdir(parents=True)
    (sub / "results.json").write_text("{}")
    Image.new("RGB", (4, 4)).save(sub / "fig.png")
    assert run_cli(["report", str(tmp_path / "study")], capsys)[0] == 0
    assert "![cell/fig.png](cell/fig.png)" in (tmp_path / "study" / "report.md").read_text()


def test_report_of_a_folder_without_authored_text_shows_every_json_scalar(tmp_path, capsys):
    (tmp_path / "r.json").write_text(json.dumps({"dice": 0.875, "ok": True, "rows": [1, 2]}))
    assert run_cli(["report", str(tmp_path)], capsys)[0] == 0
    md = (tmp_path / "report.md").read_text()
    assert "### r.json" in md and "| dice | 0.875 |" in md and "| ok | True |" in md and "rows" not in md


@pytest.mark.parametrize("make", [lambda p: p.write_text("x"), lambda p: None])
def test_report_of_a_non_folder_is_one_line_exit_2(tmp_path, capsys, make):
    target = tmp_path / "thing"
    make(target)
    code, _, err = run_cli(["report", str(target)], capsys)
    assert code == 2 and err.count("\n") == 1 and f"{target}: not a folder" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == (["thing"] if target.exists() else [])


def test_audit_and_sweep_figures_are_drawn_by_the_report_from_their_results_files(tmp_path, capsys):
    """The audit and sweep commands write results files only; ``report`` draws audit.md, the heat map and the
    batch-size plot from them (and again after they are deleted), with an invalid defence column marked."""
    audit = tmp_path / "audit"
    audit.mkdir()
    rows = [{"method": m, "defense": d, "mix": x, "clean_acc": c, "protected_acc": p, "valid": d != "jpeg:10",
             "invalid_reason": None if d != "jpeg:10" else "clean 0.30 < 0.45"}
            for m, x, p in (("clean", 0.0, 0.9), ("lsp", 1.0, 0.2)) for d, c in (("none", 0.9), ("jpeg:10", 0.3))]
    (audit / "audit.csv").write_text("method,defense,mix,clean_acc,protected_acc,valid\n")
    (audit / "audit.json").write_text(json.dumps({"model": "smallcnn", "epochs": 2, "defenses": ["none", "jpeg:10"],
                                                  "rows": rows}))
    for _ in range(2):
        assert run_cli(["report", str(audit)], capsys)[0] == 0
        md = (audit / "audit.md").read_text()
        assert "| clean (no protection) | 90.0 | 90.0 (invalid) |" in md and "| lsp (mix 1) | 20.0 |" in md
        assert "`smallcnn` victim (2 epochs)" in md and "clean 0.30 < 0.45" in md
        assert (audit / "heatmap.png").read_bytes()[:4] == b"\x89PNG"
        assert "![heatmap.png](heatmap.png)" in (audit / "report.md").read_text()
        (audit / "heatmap.png").unlink()
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "sweep.csv").write_text("dataset,method,batch_size,seed,clean_acc,protected_acc,protected_best_acc,"
                                     "chance_acc,valid\n"
                                     "d,uc,4,0,0.800000,0.300000,0.6,0.1,yes\nd,uc,8,0,0.700000,0.400000,,0.1,yes\n"
                                     "d,uc,4,1,0.900000,0.500000,0.7,0.1,yes\nd,uc,4,2,0.100000,0.100000,0.1,0.1,no\n")
    assert run_cli(["report", str(sweep)], capsys)[0] == 0
    assert (sweep / "accuracy_vs_batch_size.png").stat().st_size > 1000
    md = (sweep / "report.md").read_text()  # the seed summary: invalid cells counted, not averaged
    # seeds group over the best-epoch column (a per-cell number, not a varied key); a cell without one: "–"
    assert "| d | uc | 4 | 2 | 1 | 85.0 | 40.0 ± 14.1 [30.0, 50.0] | 45.0 | 65.0 |" in md, md
    assert "| d | uc | 8 | 1 | 0 | 70.0 | 40.0 ± 0.0 [40.0, 40.0] | 30.0 | – |" in md
    assert "| d | uc | 4 | 0 | 80.0% | 30.0% | 60.0% | 10.0% | yes |" in md  # per cell: accuracies as percentages
    assert_self_contained(sweep, 1)


def test_quality_table_gives_the_standard_error_of_a_sampled_ssim():
    from unlearnable.report.kinds import quality_table

    base = {"psnr_db": 33.0, "linf_max": 8 / 255, "linf_mean": 8 / 255, "l2_mean": 1.0, "changed_fraction": 1.0}
    text = quality_table({"train": {**base, "ssim": 0.8931, "ssim_images": 250, "ssim_se": 0.0042},
                          "test": {**base, "ssim": 0.9, "ssim_images": 40, "ssim_se": 0.0}})
    train, test = (line for line in text.splitlines() if line.startswith(("| train", "| test")))
    assert "0.893 ± 0.004 (250 images)" in train
    assert "0.9000" in test and "±" not in test
