"""Type safety across the stack: the generated `api` makes tsc check calls against Python.

Probe files are compiled with tsc against (a) the committed web/src/_generated, which must be
what ``marketpulse codegen`` produces from the marketData module today, and (b) declarations
generated on the spot from a functions module written here. A correct call compiles; a wrong
argument name, type or literal, a missing argument, a misread result field or an internal
function used as public each fail to compile, in the file that has them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, TypedDict

import pytest
from pydantic import Field

from marketpulse.reactive import (
    FunctionModule,
    MutationCtx,
    PaginationOptions,
    PaginationResult,
    QueryCtx,
)
from marketpulse.reactive.codegen import generate

WEB = Path(__file__).resolve().parents[2] / "web"
_ERROR = re.compile(r"^(?P<file>[^(\s]+)\(\d+,\d+\): error TS\d+: (?P<msg>.*)$")

MARKETDATA_PROBES = {
    "ok.ts": """
        export function Ok() {
          const price = useQuery(api.marketData.getPrice, { ticker: "KX" });
          const book = useQuery(api.marketData.getOrderbook, { ticker: "KX", depth: 5 });
          const trades = useQuery(api.marketData.getRecentTrades, { ticker: "KX" });
          const candles = useQuery(api.marketData.getCandles, { ticker: "KX", interval: "5m" });
          const streams = useQuery(api.marketData.getStreamStatus, {});
          const list = useQuery(api.marketData.listMarkets, { search: null, limit: 10 });
          const skipped = useQuery(api.marketData.getPrice, "skip");
          const fixed: string | undefined = price?.changePercent24h.toFixed(2);
          const best: number | undefined = book?.bids[0]?.[0];
          const side: "buy" | "sell" | undefined = trades?.[0]?.side;
          const when = trades?.map((t) => new Date(t.timestamp));
          return [fixed, best, side, when, candles?.[0]?.close, streams?.[0]?.lagMs, list, skipped];
        }
    """,
    "wrong_arg_name.ts": """
        export const p = () => useQuery(api.marketData.getPrice, { tickr: "KX" });
    """,
    "wrong_arg_type.ts": """
        export const p = () => useQuery(api.marketData.getPrice, { ticker: 42 });
    """,
    "missing_arg.ts": """
        export const p = () => useQuery(api.marketData.getOrderbook, { depth: 5 });
    """,
    "wrong_literal.ts": """
        export const p = () => useQuery(api.marketData.getCandles, { ticker: "KX", interval: "2m" });
    """,
    "wrong_result_field.ts": """
        export function P() {
          const price = useQuery(api.marketData.getPrice, { ticker: "KX" });
          return price?.lastPrice;
        }
    """,
    "internal_as_public.ts": """
        export const p = () => useMutation(api.marketData.applyUpdates);
    """,
}

MARKETDATA_EXPECTED = {
    "wrong_arg_name.ts": "tickr",
    "wrong_arg_type.ts": "number",
    "missing_arg.ts": "ticker",
    "wrong_literal.ts": '"2m"',
    "wrong_result_field.ts": "lastPrice",
    "internal_as_public.ts": "applyUpdates",
}


def _header(api_import: str) -> str:
    return (
        'import { useMutation, usePaginatedQuery, useQuery } from "convex/react";\n'
        f'import {{ api }} from "{api_import}";\n'
        "void useMutation;\n"
        "void usePaginatedQuery;\n"
    )


@pytest.fixture
def probe_dir() -> Iterator[Path]:
    """A scratch project inside web/, so probes resolve web/node_modules."""
    path = Path(tempfile.mkdtemp(prefix=".typecheck-", dir=WEB))
    (path / "tsconfig.json").write_text(
        '{"extends": "../tsconfig.json", "compilerOptions": {"types": []}, "include": ["*.ts"]}'
    )
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _compile(
    node: Any, project: Path, probes: dict[str, str], api_import: str
) -> dict[str, list[str]]:
    for name, body in probes.items():
        (project / name).write_text(_header(api_import) + body)
    result = node.run("tsc", "--noEmit", "--pretty", "false", "-p", str(project))
    errors: dict[str, list[str]] = {name: [] for name in probes}
    for line in result.stdout.splitlines():
        m = _ERROR.match(line.strip())
        if m:
            errors.setdefault(Path(m["file"]).name, []).append(m["msg"])
    unexpected = set(errors) - set(probes)
    assert not unexpected, f"errors outside the probes: {result.stdout[-3000:]}"
    return errors


def test_committed_api_is_what_codegen_generates() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "marketpulse",
            "codegen",
            "--check",
            "--out",
            str(WEB / "src" / "_generated"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_marketdata_calls_are_type_checked(node: Any, probe_dir: Path) -> None:
    errors = _compile(node, probe_dir, MARKETDATA_PROBES, "../src/_generated/api")
    assert errors["ok.ts"] == []
    for name, needle in MARKETDATA_EXPECTED.items():
        assert errors[name], f"{name} compiled, but it should not"
        assert any(needle in msg for msg in errors[name]), (name, errors[name])


class Message(TypedDict):
    channel: str
    body: str
    sentAt: float


def _demo_modules() -> list[FunctionModule]:
    chat = FunctionModule("chat/rooms")
    # `api.chat.rooms` is also a function of module "chat": both a reference and a namespace.
    top = FunctionModule("chat")

    @top.query
    def rooms(ctx: QueryCtx) -> list[str]:
        return []

    @chat.query
    def recent(
        ctx: QueryCtx,
        channel: str,
        order: Literal["asc", "desc"] = "desc",
        limit: Annotated[int, Field(ge=1, le=50)] = 20,
    ) -> list[Message]:
        return []

    @chat.mutation
    def send(ctx: MutationCtx, channel: str, body: str) -> str:
        return ""

    @chat.query
    def page(ctx: QueryCtx, channel: str, paginationOpts: PaginationOptions) -> PaginationResult:
        return ctx.db.query("messages").paginate(paginationOpts)

    return [chat, top]


def test_generated_declarations_check_a_fresh_module(node: Any, probe_dir: Path) -> None:
    gen = probe_dir / "_generated"
    gen.mkdir()
    for fname, text in generate(_demo_modules()).files.items():
        (gen / fname).write_text(text)
    probes = {
        "ok.ts": """
            export function Ok() {
              const msgs = useQuery(api.chat.rooms.recent, { channel: "general", order: "asc" });
              const send = useMutation(api.chat.rooms.send);
              const sent: Promise<string> = send({ channel: "general", body: "hi" });
              const rooms: string[] | undefined = useQuery(api.chat.rooms, {});
              const pages = usePaginatedQuery(
                api.chat.rooms.page, { channel: "general" }, { initialNumItems: 10 }
              );
              return [msgs?.[0]?.sentAt.toFixed(0), sent, rooms, pages.loadMore];
            }
        """,
        "bad_order.ts": """
            export const p = () => useQuery(api.chat.rooms.recent, { channel: "g", order: "up" });
        """,
        "bad_send.ts": """
            export function P() {
              const send = useMutation(api.chat.rooms.send);
              return send({ channel: "general", text: "hi" });
            }
        """,
    }
    errors = _compile(node, probe_dir, probes, "./_generated/api")
    assert errors["ok.ts"] == []
    assert any('"up"' in m for m in errors["bad_order.ts"]), errors
    assert any("text" in m for m in errors["bad_send.ts"]), errors
