"""``--config FILE``: file + flag precedence, unknown keys, bad types, and config.yaml reproducing a run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from helpers import run_cli, write_train_test_npz
from unlearnable.config import Config, convert, dump_config, load_config
from unlearnable.errors import UserError


@pytest.fixture()
def npz(tmp_path: Path) -> Path:
    return write_train_test_npz(tmp_path / "tiny.npz", n=16)


def _protect_config(path: Path, **values) -> Path:
    path.write_text(yaml.safe_dump(values))
    return path


def test_file_then_flags_override_and_config_yaml_records_every_value(npz, tmp_path, capsys):
    cfg = _protect_config(tmp_path / "c.yaml", source=str(npz), method="random", eps="4/255",
                          out=str(tmp_path / "a"), key=str(tmp_path / "k.key"))
    code, _, err = run_cli(["protect", "--config", str(cfg), "--eps", "2/255"], capsys)
    assert code == 0, err
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["params"]["eps"] == pytest.approx(2 / 255)  # the flag beats the file
    written = yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())["protect"]
    assert written["eps"] == "2/255" and written["method"] == "random" and written["splits"] == "train"
    assert written["verify_epochs"] == 16  # defaults are written too: every parameter's final value


def test_written_config_reproduces_the_run(npz, tmp_path, capsys):
    key = tmp_path / "k.key"
    code, _, err = run_cli(["protect", str(npz), "-m", "random", "--eps", "8/255", "-o", str(tmp_path / "a"),
                            "--key", str(key)], capsys)
    assert code == 0, err
    code, _, err = run_cli(["protect", "--config", str(tmp_path / "a" / "config.yaml"), "-o", str(tmp_path / "b")],
                           capsys)
    assert code == 0, err
    a, b = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in "ab")
    assert a["metrics"] == b["metrics"] and a["params"] == b["params"]
    assert a["key_fingerprint"] == b["key_fingerprint"]
    assert (tmp_path / "a" / "tiny.npz").read_bytes() == (tmp_path / "b" / "tiny.npz").read_bytes()


@pytest.mark.parametrize("body, message", [
    ({"protect": {"methd": "random"}}, "unknown key 'methd' for 'protect' (did you mean 'method'?)"),
    ({"epochs": "abc"}, "epochs: 'abc' is not a valid integer"),
    ({"verify": "yes"}, "verify: 'yes' is not a valid true/false"),
    ({"evaluate": {"epochs": 1}}, "no 'protect' section (it has: evaluate)"),
    ({"protect": {}, "protcet": {}}, "key 'protcet' is not a command (did you mean 'protect'?)"),
    ([1, 2], "expected a mapping"),
])
def test_bad_config_is_one_line_exit_2_nothing_written(npz, tmp_path, capsys, body, message):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(body))
    out = tmp_path / "o"
    code, _, err = run_cli(["protect", str(npz), "-m", "random", "-o", str(out), "--config", str(cfg)], capsys)
    assert code == 2 and err.count("\n") == 1 and str(cfg) in err and message in err, err
    assert not out.exists() and not list(tmp_path.glob("o.key"))


def test_config_needs_a_command_and_an_existing_file(tmp_path, capsys):
    code, _, err = run_cli(["--config", str(tmp_path / "x.yaml")], capsys)
    assert code == 2 and "name a command first" in err
    code, _, err = run_cli(["protect", "--config", str(tmp_path / "x.yaml")], capsys)
    assert code == 2 and "x.yaml: no such file" in err


def test_option_names_and_aliases_are_accepted(tmp_path):
    (tmp_path / "c.yaml").write_text("batch-size: 8\n--epochs: 2\ncompile: true\n")
    schema = {"batch_size": int, "epochs": int, "compile_": bool}
    c = load_config(tmp_path / "c.yaml", "evaluate", schema, aliases={"compile": "compile_"})
    assert dict(c.values) == {"batch_size": 8, "epochs": 2, "compile_": True}


def test_types_are_strict_and_round_trip(tmp_path):
    assert convert(3, float, "x") == 3.0 and convert(0.1, str, "x") == "0.1" and convert("a", list[str], "x") == ["a"]
    for value, typ in ((1.5, int), (True, int), ("1", int), ({"a": 1}, str), (True, str)):
        with pytest.raises(UserError):
            convert(value, typ, "x")
    values = {"source": "a b.npz", "out": Path("o"), "param": ["eps=8/255"], "size": None, "verify": False}
    (tmp_path / "config.yaml").write_text(dump_config(Config("protect", values)))
    schema = {"source": str, "out": Path, "param": list[str], "size": int, "verify": bool}
    hidden = dump_config(Config("forget", {"forget_ids": "s1,s2", "out": "o"}, withheld=frozenset({"forget_ids"})))
    assert "s1" not in hidden and "withheld (pass them again): forget_ids" in hidden
    back = load_config(tmp_path / "config.yaml", "protect", schema, ["protect", "evaluate"])
    assert dict(back.values) == values | {"out": "o"}
