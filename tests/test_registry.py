from __future__ import annotations

import pytest

from unlearnable.errors import UserError
from unlearnable.registry import Registry, look_up_option


def test_duplicate_names_are_errors():
    reg = Registry("thing")
    reg.register("a")(lambda: 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(lambda: 2)


def test_unknown_name_suggests_the_closest():
    reg = Registry("method")
    reg.register("cuda")(object)
    with pytest.raises(UserError, match="did you mean 'cuda'"):
        reg.get("cdua")
    assert look_up_option("x", ["x", "y"]) == "x"
    with pytest.raises(UserError, match="choose from: x, y"):
        look_up_option("zzz", ["x", "y"])
