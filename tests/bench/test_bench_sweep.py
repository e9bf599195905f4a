"""bench/efficacy_sweep.py: every job of the named grids is a valid protection spec, and the table reads its rows."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from unlearnable.protect import METHODS
from unlearnable.train.defenses import parse_defense

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import efficacy_sweep as S  # noqa: E402


@pytest.mark.parametrize("name", S.GRIDS)
def test_grid_specs_are_valid(name):
    jobs = S.grid(name)
    assert jobs, name
    assert len(set(jobs)) == len(jobs)
    for data, victim, spec, *_ in jobs:
        assert S.sized(data) and victim in S.VICTIMS  # a dataset of DATASETS or VARIANTS, at most resized
        spec, defences = S.split_defences(spec)
        for d in defences:
            assert parse_defense(d).transform(torch.zeros(1, 1, 8, 8, dtype=torch.uint8)).shape == (1, 1, 8, 8)
        if spec != "clean":
            method, params = S.parse_spec(spec)
            counts = params.pop("counts", None)  # bench-only: each class's tile level set by hand
            if counts is not None:
                assert method == "tiles" and all(c.isdigit() for c in counts.split("-")), spec
            codes = params.pop("codes", None)  # bench-only: zero-mean square-wave tiles
            if codes is not None:
                assert method == "tiles" and codes == "walsh" and data.startswith("mni-tissue"), spec
            METHODS.get(method)(**params)  # parses and validates, or raises


def test_variants_are_builtin_sources():
    from unlearnable.data.formats.builtin import parse_builtin
    for name, source in S.VARIANTS.items():
        assert name not in S.DATASETS and parse_builtin(source) is not None


def test_sized_datasets_are_built_at_their_size_with_export_ids(tmp_path):
    assert S.sized("textures-norm@96") == ("textures-norm", 96) and S.sized("mnist5k") == ("mnist5k", None)
    for bad in ("cifar10", "textures@big", "textures-norm@"):
        with pytest.raises(SystemExit, match="unknown"):
            S.sized(bad)
    tr, te_im, te_lab = S._load(str(tmp_path), "textures@40")  # no file: built here from the photographs
    assert tr.images.shape[1:] == (3, 40, 40) and te_im.shape[1:] == (3, 40, 40) and len(te_lab) == 500
    assert tr.ids[:2] == ("000000", "000001") and len(tr) == 2000 and tr.num_classes == 10
    S.export(tmp_path, ["textures@40"])  # a file, when there is one, is what is read
    again = S._load(str(tmp_path), "textures@40")[0]
    assert torch.equal(again.images, tr.images) and again.classes == tr.classes


def test_hand_set_tile_counts_give_each_class_its_level():
    from unlearnable.data import ImageSet
    from unlearnable.protect import Key
    data = ImageSet(torch.zeros(8, 1, 8, 8, dtype=torch.uint8), torch.arange(8) % 4,
                    tuple(f"{i:06d}" for i in range(8)), ("train",) * 8, ("a", "b", "c", "d"))
    from unlearnable.protect import tiles as T
    product = T.levels_by_colour
    with S._tile_counts("10-6-15-1"):
        codes = METHODS.get("tiles")(levels="colour").fit(data, Key.from_seed(7))
    assert [int((t > 0).sum()) for t in codes.tiles] == [10, 6, 15, 1]
    assert T.levels_by_colour is product  # the product's assignment is back after the job


def test_walsh_tiles_are_zero_mean_and_orthogonal_under_every_shift_and_mirror():
    from unlearnable.protect import tiles as T
    w = S.walsh_tiles(8)
    assert w.shape == (8, 1, 4, 4) and set(w.unique().tolist()) == {-1.0, 1.0}
    assert (w.sum((1, 2, 3)) == 0).all()  # no brightness offset
    for i in range(8):
        for j in range(8):
            agree = T._variants(w[j]) @ w[i].flatten()  # every cyclic shift and mirror of tile j
            assert (agree.abs().max() == 16) if i == j else (agree == 0).all(), (i, j)
    with pytest.raises(SystemExit, match="codes=walsh"):
        S.walsh_tiles(9)
    with pytest.raises(SystemExit, match="codes=walsh"):
        S.walsh_tiles(4, channels=3)


def test_walsh_counts_give_each_class_its_offset_and_keep_most_of_its_pattern():
    w, m = S.walsh_tiles(4), S.walsh_tiles(4, counts=[7, 11, 5, 9])
    assert [int((t > 0).sum()) for t in m] == [7, 11, 5, 9]
    assert [int((a != b).sum()) for a, b in zip(w, m)] == [1, 3, 3, 1]  # the fewest flips that reach each count
    with pytest.raises(SystemExit, match="one count"):
        S.walsh_tiles(4, counts=[7, 11, 5])
    with pytest.raises(SystemExit, match="one count"):
        S.walsh_tiles(4, counts=[7, 11, 5, 16])


def test_walsh_codes_replace_the_draw_for_one_job_only():
    from unlearnable.data import ImageSet
    from unlearnable.protect import Key
    from unlearnable.protect import tiles as T
    data = ImageSet(torch.full((8, 1, 8, 8), 100, dtype=torch.uint8), torch.arange(8) % 4,
                    tuple(f"{i:06d}" for i in range(8)), ("train",) * 8, ("a", "b", "c", "d"))
    product = T.draw_tiles
    with S._tile_codes("walsh"):
        codes = METHODS.get("tiles")().fit(data, Key.from_seed(7))
    assert torch.equal(codes.tiles, S.walsh_tiles(4))
    with S._tile_codes("walsh", "7-11-5-9"):
        offset = METHODS.get("tiles")().fit(data, Key.from_seed(7))
    assert torch.equal(offset.tiles, S.walsh_tiles(4, counts=[7, 11, 5, 9]))
    assert T.draw_tiles is product
    assert not torch.equal(METHODS.get("tiles")().fit(data, Key.from_seed(7)).tiles, codes.tiles)


def test_table_skips_failed_jobs(tmp_path):
    rows = tmp_path / "rows.jsonl"
    ok = {"data": "textures", "victim": "smallcnn", "spec": "tiles", "seed": 0, "test": 0.444, "best_test": 0.568,
          "train": 1.0, "psnr": 30.2, "fit_s": 0.1}
    rows.write_text(json.dumps(ok) + "\n" + json.dumps({"job": ["x"], "error": "boom"}) + "\n")
    text = S.table(str(rows))
    assert "| textures | smallcnn | `tiles` | 7 / 0 | 44.4 | 56.8 | 100.0 | 30.2 | 0 |" in text and "boom" not in text


def test_cue_reads_brightness_and_not_patterns(tmp_path):
    """``cue`` scores what per-image statistics alone tell: classes that differ in brightness are read perfectly
    (and a shift of 8/255 does not hide it); classes that differ only in where their pixels sit are not."""
    g = torch.Generator().manual_seed(0)

    def save(name, images, labels):
        n = len(labels) // 2
        split = {"tr": (images[:n], labels[:n], ["a", "b"]), "te": (images[n:], labels[n:])}
        torch.save(split, tmp_path / f"{name}.pt")

    labels = torch.arange(200) % 2
    bright = (60 + 120 * labels[:, None, None, None] + torch.randint(0, 20, (200, 1, 8, 8), generator=g))
    save("bright", bright.to(torch.uint8), labels)
    # same pixel values, placed by class: a left-half blob or a right-half blob of equal brightness
    placed = torch.randint(0, 40, (200, 1, 8, 8), generator=g)
    for i, y in enumerate(labels.tolist()):
        placed[i, :, :, 4 * y:4 * y + 4] += 150
    save("placed", placed.to(torch.uint8), labels)
    rows = {r["data"]: r for r in S.cue(str(tmp_path), ("bright", "placed"))}
    assert rows["bright"]["clean"] == 1.0 and rows["bright"]["shift_8"] == 1.0
    assert rows["placed"]["clean"] < 0.7


def _tiny_split(folder: Path, n_train: int, n_test: int, seed: int) -> None:
    """``folder/tiny.pt`` as ``efficacy_sweep.py export`` writes it: two classes of 12 px grey images that differ
    in brightness (easy to learn)."""
    g = torch.Generator().manual_seed(seed)
    n = n_train + n_test
    labels = torch.arange(n) % 2
    images = (40 + 150 * labels[:, None, None, None] + torch.randint(0, 30, (n, 1, 12, 12), generator=g))
    images = images.to(torch.uint8)
    torch.save({"tr": (images[:n_train], labels[:n_train], ["a", "b"]),
                "te": (images[n_train:], labels[n_train:])}, folder / "tiny.pt")


def test_robust_em_bench_runs_every_cell(tmp_path, capsys):
    """bench/robust_em.py: one row per (dataset, spec), one clean-test accuracy per defence, on a tiny split."""
    import robust_em as R

    _tiny_split(tmp_path, 32, 16, seed=1)
    R.main(["--data", str(tmp_path), "--datasets", "tiny", "--n", "24", "--epochs", "1",
            "--specs", "clean;em,robust=2/255,robust_steps=1,max_outer=1,train_steps=1,pgd_steps=1,batch_size=8",
            "--defences", "none,at:linf:2/255:steps=1"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["spec"].split(",")[0] for r in rows] == ["clean", "em"]
    for r in rows:
        assert r["n"] == 24 and set(r["test"]) == {"none", "at:linf:2/255:steps=1"}
        assert all(0.0 <= v <= 1.0 for v in r["test"].values())
    assert rows[0]["psnr"] is None and rows[1]["psnr"] > 30


def test_partial_bench_measures_the_clean_rows_floor(tmp_path, capsys):
    """bench/partial.py: the clean baseline, the clean-rows-only floor, and each spec at mix 1 and mix R; the
    mixed training set takes exactly the audit's protected rows."""
    import partial as P

    _tiny_split(tmp_path, 40, 20, seed=2)
    P.main(["--data", str(tmp_path), "--datasets", "tiny", "--n", "40", "--epochs", "1", "--mix", "0.25",
            "--specs", "random;tiles"])
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["n"] == 40 and row["protected_rows"] == 10 and row["mix"] == 0.25
    assert set(row["specs"]) == {"random", "tiles"}
    for v in (row["clean"], row["clean_rows_only"], *(s[k] for s in row["specs"].values() for k in ("full", "mix"))):
        assert 0.0 <= v <= 1.0
    with pytest.raises(SystemExit):
        P.main(["--data", str(tmp_path), "--datasets", "tiny", "--mix", "1.0"])


def test_figure_draws_every_finished_run(tmp_path):
    rows = tmp_path / "rows.jsonl"
    runs = [{"data": "textures", "victim": "resnet18", "spec": spec, "seed": k, "chance": 0.1, "test": acc}
            for k, (spec, acc) in enumerate([("tiles", 0.8), ("tiles", 0.7), ("adv", 0.6)])]
    rows.write_text("\n".join(map(json.dumps, runs)) + "\n" + json.dumps({"job": ["x"], "error": "boom"}) + "\n")
    out = tmp_path / "runs.png"
    S.figure([str(rows)], str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = tmp_path / "none.jsonl"
    empty.write_text(json.dumps({"job": ["x"], "error": "boom"}) + "\n")
    with pytest.raises(SystemExit, match="no finished runs"):
        S.figure([str(empty)], str(tmp_path / "no.png"))
