"""Exact fixed-point units used inside the simulator.

Prices are integers of 1/10,000 dollar (Kalshi's finest tick, ``$0.0001``) and sizes integers of
1/100 contract (``*_fp`` strings carry two decimals). Integer arithmetic on those units is exact,
like Decimal, and several times cheaper on the hot path; values cross the public API as
``Decimal`` and the wire as Kalshi's fixed-point strings.
"""

from __future__ import annotations

from decimal import Decimal

ONE = 10_000
"""One dollar in price units."""

_PRICE_STR: list[str] = [f"{p // ONE}.{p % ONE:04d}" for p in range(ONE + 1)]


def price_str(p: int) -> str:
    """``4500`` -> ``"0.4500"`` (Kalshi ``*_dollars`` string, 4 decimals)."""
    if 0 <= p <= ONE:
        return _PRICE_STR[p]
    sign = "-" if p < 0 else ""
    p = abs(p)
    return f"{sign}{p // ONE}.{p % ONE:04d}"


def size_str(n: int) -> str:
    """``1250`` -> ``"12.50"``; negative sizes (deltas) keep their sign."""
    if n < 0:
        n = -n
        return f"-{n // 100}.{n % 100:02d}"
    return f"{n // 100}.{n % 100:02d}"


def price_dec(p: int) -> Decimal:
    """Price units -> Decimal dollars with 4 places."""
    return Decimal(p).scaleb(-4)


def size_dec(n: int) -> Decimal:
    """Size units -> Decimal contracts with 2 places."""
    return Decimal(n).scaleb(-2)


def parse_price(text: str | int | float | Decimal) -> int:
    """A dollars value (string or number) -> price units; rejects finer than $0.0001."""
    d = Decimal(str(text)) * ONE
    if d != d.to_integral_value():
        raise ValueError(f"price {text!r} is finer than $0.0001")
    return int(d)


def parse_size(text: str | int | float | Decimal) -> int:
    """A contract count (string or number) -> size units; rejects finer than 0.01."""
    d = Decimal(str(text)) * 100
    if d != d.to_integral_value():
        raise ValueError(f"size {text!r} is finer than 0.01 contract")
    return int(d)


def cents(p: int) -> int:
    """Price units -> integer cents, for the legacy (pre March 2026) fields."""
    return (p + 50) // 100


def contracts(n: int) -> int:
    """Size units -> whole contracts, for the legacy integer count fields."""
    return n // 100
