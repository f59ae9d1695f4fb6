"""One ``applyUpdates`` batch on both sides of the wire: books packed against books as lists.

The worker renders its coalesced books into a batch and encodes it as Convex JSON (the
``StoreClient``'s ``value_to_json`` + ``orjson``); the store decodes it (``json_to_value``) and
checks it (``parse_batch``). Since session 12 each side of a book travels packed
(``marketdata.packed_levels``: one Convex ``bytes`` value); the baseline, in the same run, is the
same books as ``[[price, size], ...]`` lists, which the worker sent before and the store still
takes. Two shapes: the median batch of ``bench/latency.py`` at 10,000 msgs/s (73 books of ~6
levels a side, 46 prices, 42 trades) and deep books (100 books of 100 levels a side, as Kalshi's
busiest markets hold: the most one batch takes).

    python bench/batch_codec.py [--quick]

Prints CPU µs per batch for each step and form, and the ratios; the last line is JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import orjson

from _common import emit, print_table
from marketpulse.kalshi import OrderBook
from marketpulse.marketdata._batch import parse_batch
from marketpulse.pipeline import _coalesce
from marketpulse.pipeline._coalesce import Coalescer
from marketpulse.reactive.values import json_to_value, value_to_json

SHAPES = {"10k median": (73, 6, 46, 42), "deep books": (100, 100, 0, 0)}
"""name -> (books, levels a side, prices, trades)."""


def _books(n: int, depth: int, rng: random.Random) -> list[OrderBook]:
    books = []
    for i in range(n):
        b = OrderBook(f"KX-{i:04d}")
        yes = [(Decimal(p) / 1000, Decimal(rng.randint(1, 5000))) for p in range(300, 300 + depth)]
        no = [(Decimal(p) / 1000, Decimal(rng.randint(1, 5000))) for p in range(400, 400 + depth)]
        b.apply_snapshot(yes, no)
        books.append(b)
    return books


def _fill(c: Coalescer, books: list[OrderBook], prices: int, trades: int) -> None:
    for b in books:
        c.book(b.ticker, b, 1.0, now=0.0)
    for i in range(prices):
        c.price(books[i % len(books)].ticker, {"yesBid": 0.41, "yesAsk": 0.43}, 1.0, now=0.0)
    for i in range(trades):
        trade = {"id": f"t{i}", "ticker": books[i % len(books)].ticker, "side": "buy"}
        c.trade({**trade, "price": 0.42, "size": 3.0, "timestamp": 1.0}, now=0.0)


def _as_lists(levels: list[tuple[Decimal, Decimal]]) -> list[list[float]]:
    """The baseline: a side as the worker rendered it before (``[[price, size], ...]``)."""
    return [[float(p), float(s)] for p, s in levels]


@contextlib.contextmanager
def _form(form: str) -> Iterator[None]:
    packer = _coalesce.pack_decimal_levels
    if form == "lists":
        _coalesce.pack_decimal_levels = _as_lists  # type: ignore[assignment]
    try:
        yield
    finally:
        _coalesce.pack_decimal_levels = packer


def _cpu_us(fn: Callable[[], object], n: int) -> float:
    fn()
    start = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - start) / n * 1e6


def _render(
    c: Coalescer, books: list[OrderBook], shape: tuple[int, int, int, int], n: int
) -> tuple[dict[str, Any], float]:
    """One batch as the coalescer renders it, and the CPU µs its drain took (the coalescer's
    inputs, the same in both forms, are not timed)."""
    spent = 0.0
    args: dict[str, Any] = {}
    for _ in range(n + 1):
        _fill(c, books, shape[2], shape[3])
        start = time.process_time()
        args = c.batches_to_send()[0].args
        spent += time.process_time() - start
        assert len(args["batch"]["books"]) == shape[0] and not len(c), "one batch holds it all"
    return args, spent / (n + 1) * 1e6


def _measure_form(
    books: list[OrderBook], shape: tuple[int, int, int, int], form: str, n: int
) -> dict[str, float]:
    with _form(form):
        args, render_us = _render(Coalescer(), books, shape, n)
    body = orjson.dumps({"path": "marketData:applyUpdates", "args": value_to_json(args)})
    decoded = json_to_value(orjson.loads(body)["args"])
    parse_batch(decoded["batch"])
    return {
        "render_us": render_us,
        "encode_us": _cpu_us(lambda: orjson.dumps(value_to_json(args)), n),
        "decode_us": _cpu_us(lambda: json_to_value(orjson.loads(body)["args"]), n),
        "check_us": _cpu_us(lambda: parse_batch(decoded["batch"]), n),
        "bytes": float(len(body)),
    }


def measure(shape: tuple[int, int, int, int], n: int) -> dict[str, dict[str, float]]:
    books = _books(shape[0], shape[1], random.Random(1))
    return {form: _measure_form(books, shape, form, n) for form in ("lists", "packed")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    opts = parser.parse_args()
    n = 20 if opts.quick else 200
    figures: dict[str, Any] = {}
    rows = []
    for name, shape in SHAPES.items():
        f = measure(shape, n)
        worker = {k: f[k]["render_us"] + f[k]["encode_us"] for k in f}
        store = {k: f[k]["decode_us"] + f[k]["check_us"] for k in f}
        figures[name] = {
            **f,
            "worker_ratio": round(worker["packed"] / worker["lists"], 3),
            "store_ratio": round(store["packed"] / store["lists"], 3),
        }
        for form in ("lists", "packed"):
            g = f[form]
            rows.append(
                [
                    name,
                    form + (" (baseline)" if form == "lists" else ""),
                    f"{g['render_us']:,.0f}",
                    f"{g['encode_us']:,.0f}",
                    f"{g['decode_us']:,.0f}",
                    f"{g['check_us']:,.0f}",
                    f"{g['bytes']:,.0f}",
                ]
            )
        rows.append(
            [
                name,
                "packed / lists",
                f"worker x{figures[name]['worker_ratio']}",
                "",
                f"store x{figures[name]['store_ratio']}",
                "",
                "",
            ]
        )
    print_table(
        "one applyUpdates batch: CPU µs per step (goal: cheaper than the lists baseline)",
        ["batch", "books as", "worker: render", "encode", "store: decode", "check", "JSON bytes"],
        rows,
    )
    emit({"bench": "batch_codec", "quick": opts.quick, "shapes": figures})


if __name__ == "__main__":
    main()
