"""``check_json_depth``: the nesting bound run before any recursive decoder sees client JSON."""

from __future__ import annotations

from typing import Any

import pytest

from marketpulse.reactive.limits import JsonTooDeep, check_json_depth


def _nest(depth: int, leaf: Any = 1.0) -> Any:
    value: Any = leaf
    for level in range(depth):
        value = {"k": value, "n": 2.0} if level % 2 else [value, "s", None, True, 3]
    return value


@pytest.mark.parametrize("depth", [1, 2, 7, 64])
def test_the_bound_is_exact(depth: int) -> None:
    check_json_depth(_nest(depth), depth)
    with pytest.raises(JsonTooDeep, match=f"deeper than {depth - 1} levels"):
        check_json_depth(_nest(depth), depth - 1)


def test_scalars_and_wide_values_pass() -> None:
    for scalar in ("x", 1, 1.5, True, None):
        check_json_depth(scalar, 0)
    wide = {"books": [{"bids": [[0.4, 1.0]] * 10, "ts": 1.0} for _ in range(200)]}
    check_json_depth(wide, 5)  # object, array, object, array of levels, a level
    with pytest.raises(JsonTooDeep):
        check_json_depth(wide, 4)


def test_container_subclasses_count_too() -> None:
    class Obj(dict[str, Any]):
        pass

    class Arr(list[Any]):
        pass

    deep: Any = 0.0
    for _ in range(10):
        deep = Arr([Obj(k=deep)])
    with pytest.raises(JsonTooDeep):
        check_json_depth(deep, 19)
    check_json_depth(deep, 20)
