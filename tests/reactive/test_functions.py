"""Function registration, paths and argument validation."""

from __future__ import annotations

import enum
import sys
import typing
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, Field

from marketpulse.reactive import ArgumentValidationError, FunctionModule, Int64, QueryCtx
from marketpulse.reactive.functions import canonical_path


@pytest.mark.parametrize(
    ("path", "canonical"),
    [
        ("messages:list", "messages:list"),
        ("messages.js:list", "messages:list"),
        ("messages", "messages:default"),
        ("messages.js", "messages:default"),
        ("a/b:c", "a/b:c"),
        ("a/b.js:c", "a/b:c"),
    ],
)
def test_canonical_path(path: str, canonical: str) -> None:
    assert canonical_path(path) == canonical


@pytest.mark.parametrize("path", ["", ":x", "m:", "m:a:b", ".js:x"])
def test_malformed_paths(path: str) -> None:
    with pytest.raises(ValueError):
        canonical_path(path)


m = FunctionModule("demo")


@m.query
def typed(
    ctx: QueryCtx,
    n: int,
    x: float = 1.0,
    tags: list[int] | None = None,
    limit: Annotated[int, Field(ge=1)] = 1,
    blob: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {}


@m.internal_mutation(name="renamed")
def _hidden(ctx: Any) -> None:
    return None


@m.action
async def act(ctx: Any, a: str) -> str:
    return a


def spec_args(args: Any) -> dict[str, Any]:
    return m.functions["typed"].validate_args(args)


def test_metadata_for_codegen() -> None:
    spec = m.functions["typed"]
    assert (spec.path, spec.kind, spec.visibility) == ("demo:typed", "query", "public")
    assert [(a.name, a.required) for a in spec.args][:2] == [("n", True), ("x", False)]
    assert spec.args[0].annotation is int
    assert spec.return_hint == dict[str, Any]
    hidden = m.functions["renamed"]
    assert (hidden.kind, hidden.visibility) == ("mutation", "internal")
    assert m.functions["act"].kind == "action"


def test_numbers() -> None:
    assert spec_args({"n": 3.0}) == {"n": 3}
    assert type(spec_args({"n": 3.0})["n"]) is int
    assert spec_args({"n": 3, "x": 2}) == {"n": 3, "x": 2}
    assert spec_args({"n": 1, "tags": [1.0, 2.0]})["tags"] == [1, 2]
    for bad in ({"n": 3.5}, {"n": "3"}, {"n": True}, {"n": 1, "x": "2.0"}, {"n": 1, "limit": 0}):
        with pytest.raises(ArgumentValidationError):
            spec_args(bad)


def test_tuples_and_sets_accept_the_arrays_clients_send() -> None:
    # A client can only send an array (JSON and Convex values have no tuple or set), and strict
    # validation used to refuse one for such an argument: every call failed, while codegen
    # declared `[number, number]` / `Array<string>` for it.
    mod = FunctionModule("containers")

    @mod.query
    def f(
        ctx: Any,
        point: tuple[float, int],
        tags: set[str],
        frozen: frozenset[int] | None = None,
        rows: list[tuple[int, ...]] | None = None,
        bare: tuple | None = None,  # type: ignore[type-arg]
    ) -> None: ...

    spec = mod.functions["f"]
    out = spec.validate_args(
        {"point": [1, 2.0], "tags": ["a", "b", "a"], "frozen": [1.0], "rows": [[1, 2]], "bare": [1]}
    )
    assert out == {
        "point": (1.0, 2),
        "tags": {"a", "b"},
        "frozen": frozenset({1}),
        "rows": [(1, 2)],
        "bare": (1,),
    }
    assert type(out["point"][1]) is int
    for bad in (
        {"point": [1, 2.5], "tags": []},
        {"point": [1], "tags": []},
        {"point": [1, 2], "tags": [["x"]]},
        {"point": [1, 2], "tags": "ab"},
    ):
        with pytest.raises(ArgumentValidationError):
            spec.validate_args(bad)


class Side(enum.Enum):
    BUY = "buy"
    SELL = "sell"


class Grade(enum.IntEnum):
    LOW = 1
    HIGH = 2


def test_enums_accept_their_values() -> None:
    # A client sends an Enum argument's value (codegen declares `"buy" | "sell"`); strict
    # validation used to refuse anything but a member ("Input should be an instance of Side").
    mod = FunctionModule("enums")

    @mod.query
    def f(ctx: Any, side: Side, grade: Grade | None = None) -> None: ...

    spec = mod.functions["f"]
    assert spec.validate_args({"side": "sell", "grade": 2.0}) == {
        "side": Side.SELL,
        "grade": Grade.HIGH,
    }
    assert spec.validate_args({"side": Side.BUY})["side"] is Side.BUY
    for bad in ({"side": "hold"}, {"side": "buy", "grade": True}, {"side": "buy", "grade": "1"}):
        with pytest.raises(ArgumentValidationError):
            spec.validate_args(bad)
    with pytest.raises(ArgumentValidationError, match="expected one of 'buy', 'sell'"):
        spec.validate_args({"side": "hold"})


def test_missing_unknown_and_shape() -> None:
    with pytest.raises(ArgumentValidationError, match="missing required argument 'n'"):
        spec_args({})
    with pytest.raises(ArgumentValidationError, match="unexpected argument 'zz'"):
        spec_args({"n": 1, "zz": 2})
    with pytest.raises(ArgumentValidationError, match="must be an object"):
        spec_args("n=1")
    with pytest.raises(ArgumentValidationError, match="missing"):
        spec_args(None)
    assert spec_args({"n": 1, "blob": {"a": [1, "x"]}})["blob"] == {"a": [1, "x"]}


def test_declaration_errors() -> None:
    mod = FunctionModule("x")
    with pytest.raises(TypeError, match="async def"):
        mod.action(lambda ctx: None)
    with pytest.raises(TypeError, match="synchronous"):

        @mod.query
        async def q(ctx: Any) -> None: ...

    @mod.query
    def dup(ctx: Any) -> None: ...

    with pytest.raises(ValueError, match="twice"):
        mod.query(dup)
    with pytest.raises(ValueError):
        FunctionModule("a:b")


class Point(BaseModel):
    x: float
    y: float


class Opaque:
    pass


def test_int64_models_and_unsupported_types() -> None:
    mod = FunctionModule("types")

    @mod.query
    def f(ctx: Any, big: Int64, p: Point | None = None) -> None: ...

    spec = mod.functions["f"]
    out = spec.validate_args({"big": Int64(2**62), "p": {"x": 1, "y": 2.5}})
    assert out["big"] == 2**62 and isinstance(out["big"], Int64)
    assert out["p"] == Point(x=1.0, y=2.5)
    assert isinstance(spec.validate_args({"big": 5})["big"], Int64)
    for bad in ({"big": 5.0}, {"big": "5"}, {"big": True}, {"big": 1, "p": {"x": "a"}}):
        with pytest.raises(ArgumentValidationError):
            spec.validate_args(bad)

    with pytest.raises(TypeError, match="unsupported type"):

        @mod.query
        def g(ctx: Any, o: Opaque) -> None: ...


def test_a_typed_dict_pydantic_refuses_is_a_type_error_naming_the_argument() -> None:
    # On Python < 3.12 pydantic refuses typing.TypedDict (it wants typing_extensions'): that
    # escaped as a PydanticUserError naming neither the function nor the argument.
    if sys.version_info >= (3, 12):
        pytest.skip("pydantic takes typing.TypedDict on Python 3.12+")
    mod = FunctionModule("typed")
    with pytest.raises(TypeError, match=r"typed:add: argument 'item': .*typing_extensions"):

        @mod.mutation
        def add(ctx: Any, item: TypingItem) -> None: ...


class TypingItem(typing.TypedDict):
    name: str
