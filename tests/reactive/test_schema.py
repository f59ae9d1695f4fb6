"""Table and index declarations."""

from __future__ import annotations

import pytest

from marketpulse.reactive import Schema, Table
from marketpulse.reactive.schema import SchemaError


def test_index_defs_include_builtins_and_implicit_fields() -> None:
    defs = Table(indexes={"by_channel": ["channel", "sentAt"]}).index_defs("messages")
    assert set(defs) == {"by_id", "by_creation_time", "by_channel"}
    assert defs["by_channel"].key_fields == ("channel", "sentAt", "_creationTime", "_id")
    assert defs["by_creation_time"].key_fields == ("_creationTime", "_id")


@pytest.mark.parametrize(
    ("indexes", "message"),
    [
        ({"by_id": ["x"]}, "reserved"),
        ({"bad name": ["x"]}, "name must match"),
        ({"i": []}, "non-empty"),
        ({"i": "channel"}, "non-empty list"),
        ({"i": ["a", "a"]}, "duplicate"),
        ({"i": ["_creationTime"]}, "automatically"),
        ({"i": ["a..b"]}, "invalid field"),
    ],
)
def test_invalid_indexes_are_rejected(indexes: dict[str, object], message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        Schema({"t": Table(indexes=indexes)})  # type: ignore[dict-item]


def test_merge() -> None:
    a = Schema({"t": Table(indexes={"i": ["x"]})})
    assert a.merged(Schema({"t": Table(indexes={"i": ["x"]})})).tables.keys() == {"t"}
    assert a.merged(Schema({"u": Table()})).tables.keys() == {"t", "u"}
    with pytest.raises(SchemaError, match="differently"):
        a.merged(Schema({"t": Table(indexes={"i": ["y"]})}))
    with pytest.raises(SchemaError):
        Schema({"_t": Table()})
