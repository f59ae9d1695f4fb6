"""marketpulse.reactive.codegen: Python hints and JSON Schemas -> TypeScript declarations."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Any, Literal, NotRequired, TypedDict

import pytest
import typing_extensions
from pydantic import BaseModel, Field

from marketpulse.reactive import FunctionModule, Int64, MutationCtx, QueryCtx
from marketpulse.reactive.codegen import (
    API_JS,
    TypeMapper,
    describe_modules,
    generate,
    render,
    schema_to_ts,
)
from marketpulse.reactive.engine import Engine, Identity
from marketpulse.reactive.persistence import open_persistence


class Side(enum.Enum):
    BUY = "buy"
    SELL = "sell"


class Level(TypedDict):
    price: float
    size: float
    note: NotRequired[str | None]


class Page(typing_extensions.TypedDict):
    """The TypedDict pydantic requires before Python 3.12, so the one argument hints use."""

    numItems: float
    cursor: str | None
    id: typing_extensions.NotRequired[float]


class Tree(TypedDict):
    name: str
    children: list[Tree]


class Order(BaseModel):
    ticker: str
    count: int = Field(1, description="contracts")


@pytest.mark.parametrize(
    ("hint", "expected"),
    [
        (str, "string"),
        (int, "number"),
        (float, "number"),
        (bool, "boolean"),
        (Int64, "bigint"),
        (bytes, "ArrayBuffer"),
        (None, "null"),
        (str | None, "string | null"),
        (int | float, "number"),
        (Literal["1m", "5m", "1h"], '"1m" | "5m" | "1h"'),
        (Literal["a"] | None, '"a" | null'),
        (Side, '"buy" | "sell"'),
        (list[str], "Array<string>"),
        (tuple[float, float], "[number, number]"),
        (tuple[int, ...], "Array<number>"),
        (list[tuple[float, float]], "Array<[number, number]>"),
        (dict[str, int], "Record<string, number>"),
        (Annotated[int, Field(ge=1, le=200)], "number"),
        (Level, "{ price: number; size: number; note?: string | null }"),
        (Page, "{ numItems: number; cursor: string | null; id?: number }"),
        (Order, "{\n  ticker: string;\n  /** contracts */\n  count?: number;\n}"),
        (list[Level] | None, "Array<{ price: number; size: number; note?: string | null }> | null"),
    ],
)
def test_hint_mapping(hint: Any, expected: str) -> None:
    mapper = TypeMapper()
    assert render(mapper.map(hint)) == expected
    assert mapper.loose == []


@pytest.mark.parametrize(
    ("hint", "loose"),
    [
        (Any, "Any"),
        (dict, "bare dict"),
        (dict[str, Any], "Any"),
        (dict[int, str], "dict with non-string keys"),
        (list, "bare list"),
        (complex, "class complex"),
    ],
)
def test_loose_hints_become_any_and_are_reported(hint: Any, loose: str) -> None:
    mapper = TypeMapper()
    assert "any" in render(mapper.map(hint))
    assert loose in mapper.loose


def test_recursive_typeddict_stops_at_any() -> None:
    mapper = TypeMapper()
    assert render(mapper.map(Tree)) == "{ name: string; children: Array<any> }"
    assert any("recursive" in x for x in mapper.loose)


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "string"}, "string"),
        ({"type": "integer"}, "number"),
        ({"type": ["number", "null"]}, "number | null"),
        ({"enum": ["buy", "sell"]}, '"buy" | "sell"'),
        ({"const": 3}, "3"),
        ({"oneOf": [{"type": "null"}, {"type": "boolean"}]}, "boolean | null"),
        ({"type": "array", "items": {"type": "string"}}, "Array<string>"),
        (
            {
                "type": "array",
                "prefixItems": [{"type": "number"}, {"type": "number"}],
                "minItems": 2,
                "maxItems": 2,
            },
            "[number, number]",
        ),
        (
            {"type": "array", "prefixItems": [{"type": "number"}, {"type": "string"}]},
            "Array<number | string>",
        ),
        (
            {
                "type": "object",
                "properties": {"a": {"type": "number"}, "b-c": {"type": "string"}},
                "required": ["a"],
            },
            '{ a: number; "b-c"?: string }',
        ),
        ({"type": "object", "additionalProperties": {"type": "number"}}, "Record<string, number>"),
        ({"type": "object", "additionalProperties": False}, "Record<string, never>"),
    ],
)
def test_schema_mapping(schema: dict[str, Any], expected: str) -> None:
    mapper = TypeMapper()
    assert render(schema_to_ts(schema, mapper)) == expected
    assert mapper.loose == []


def test_unsupported_schema_is_any_and_reported() -> None:
    mapper = TypeMapper()
    assert render(schema_to_ts({"$ref": "#/defs/x"}, mapper)) == "any"
    assert mapper.loose == ["$ref #/defs/x"]


def _demo_modules() -> list[FunctionModule]:
    messages = FunctionModule("messages")

    @messages.query
    def list_(
        ctx: QueryCtx, channel: str, limit: Annotated[int, Field(ge=1, le=200)] = 20
    ) -> list[Level]:
        """Newest messages of a ``channel``.

        More detail that stays out of the declaration.
        """
        return []

    @messages.mutation(name="send")
    def send(ctx: MutationCtx, channel: str, body: str, tag: str | None = None) -> str:
        return ""

    @messages.internal_mutation
    def purge(ctx: MutationCtx) -> int:
        return 0

    nested = FunctionModule("admin/tools")

    @nested.query
    def ping(ctx: QueryCtx) -> bool:
        return True

    @nested.action
    async def fetch(ctx: Any, url: str) -> dict[str, int]:
        return {}

    return [messages, nested]


def test_describe_modules_types_every_function() -> None:
    functions, loose = describe_modules(_demo_modules())
    by_path = {f.path: f for f in functions}
    assert sorted(by_path) == [
        "admin/tools:fetch",
        "admin/tools:ping",
        "messages:list_",
        "messages:purge",
        "messages:send",
    ]
    send = by_path["messages:send"]
    assert (send.kind, send.visibility) == ("mutation", "public")
    assert render(send.args) == "{ channel: string; body: string; tag?: string | null }"
    assert render(send.returns) == "string"
    assert render(by_path["admin/tools:ping"].args) == "Record<string, never>"
    assert by_path["messages:list_"].doc == "Newest messages of a `channel`."
    assert by_path["messages:purge"].visibility == "internal"
    assert loose == {}


def test_result_schema_overrides_a_loose_return_hint() -> None:
    module = FunctionModule("m")

    @module.query
    def get(ctx: QueryCtx, id: str) -> dict[str, Any] | None:
        return None

    schema = {
        "oneOf": [
            {"type": "null"},
            {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]},
        ]
    }
    functions, loose = describe_modules([module], {"m:get": schema})
    assert render(functions[0].returns) == "{ x: number } | null"
    assert functions[0].result_from == "schema"
    assert loose == {}
    functions, loose = describe_modules([module])
    assert functions[0].result_from == "hints"
    assert loose == {"m:get": ["Any"]}


def test_generated_files_have_convex_layout() -> None:
    out = generate(_demo_modules())
    d_ts = out.files["api.d.ts"]
    assert out.files["api.js"] == API_JS
    assert 'import { anyApi } from "convex/server";' in API_JS
    assert "export const api = anyApi;" in API_JS
    assert 'import type { FunctionReference } from "convex/server";' in d_ts
    public, internal = d_ts.split("export declare const internal")
    assert "export declare const api: {" in public
    # Public functions only under api, internal ones only under internal.
    assert "send: FunctionReference<" in public and "purge" not in public
    assert "purge: FunctionReference<" in internal and "send" not in internal
    # Nested module paths nest objects: api.admin.tools.ping.
    assert "admin: {\n    tools: {\n" in public
    assert '"action",\n        "public",\n        { url: string },' in public
    assert "/** Newest messages of a `channel`. */" in public
    assert "More detail" not in d_ts


def test_a_path_that_is_a_function_and_a_module_is_both() -> None:
    # Module "a" has a function "b" and module "a/b" exists: `api.a.b` is a function reference
    # and `api.a.b.c` another, as the clients' anyApi resolves them. This used to crash.
    a, ab, abc = FunctionModule("a"), FunctionModule("a/b"), FunctionModule("a/b/c")

    @a.query
    def b(ctx: QueryCtx) -> int:
        """The b."""
        return 1

    @ab.query
    def c(ctx: QueryCtx) -> str:
        return ""

    @ab.mutation
    def d(ctx: MutationCtx) -> None:
        return None

    @abc.query
    def e(ctx: QueryCtx) -> bool:
        return True

    expected = (
        '{a:{/**Theb.*/b:FunctionReference<"query","public",Record<string,never>,number>&{'
        'c:FunctionReference<"query","public",Record<string,never>,string,>&{'
        'e:FunctionReference<"query","public",Record<string,never>,boolean,>;};'
        'd:FunctionReference<"mutation","public",Record<string,never>,null,>;};};};'
    )
    for order in ([a, ab, abc], [abc, ab, a], [ab, a, abc]):
        d_ts = generate(order).files["api.d.ts"]
        public = d_ts.split("export declare const api:")[1].split("/**\n * A utility")[0]
        assert "".join(public.split()) == expected


async def test_results_the_store_refuses_are_not_given_a_type(tmp_path: Path) -> None:
    # A pydantic model or a set validates an argument, but the store refuses one as a result
    # ("... is not a Convex value"): codegen used to declare such a function as returning an
    # object or an array, a value the client never receives. It is `any` and reported now.
    module = FunctionModule("m")

    @module.query
    def echo(ctx: QueryCtx, order: Order) -> Order:
        return order

    @module.query
    def tags(ctx: QueryCtx, tags: list[str]) -> frozenset[str]:
        return frozenset(tags)

    @module.query
    def rows(ctx: QueryCtx) -> list[Level]:
        return [{"price": 0.5, "size": 1.0}]

    engine = await Engine.open(open_persistence(f"sqlite:{tmp_path / 's.db'}"), [module])
    try:
        for path, args in [("m:echo", {"order": {"ticker": "KX"}}), ("m:tags", {"tags": ["a"]})]:
            r = engine.run_query(path, args, Identity.anonymous())
            assert not r.success and "not a Convex value" in (r.error_message or "")
        assert engine.run_query("m:rows", {}, Identity.anonymous()).success
    finally:
        await engine.close()

    functions, loose = describe_modules([module])
    by_path = {f.path: f for f in functions}
    assert render(by_path["m:echo"].returns) == "any"
    echo_args = "".join(render(by_path["m:echo"].args).split())
    assert echo_args == "{order:{ticker:string;/**contracts*/count?:number;};}"
    assert render(by_path["m:tags"].returns) == "any"
    assert render(by_path["m:tags"].args) == "{ tags: Array<string> }"
    assert render(by_path["m:rows"].returns).startswith("Array<{ price: number")
    assert any("pydantic model Order" in w for w in loose["m:echo"])
    assert any("frozenset" in w for w in loose["m:tags"])
    assert "m:rows" not in loose
