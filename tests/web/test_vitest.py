"""The dashboard's unit tests (Vitest + Testing Library on jsdom) and its type check."""

from __future__ import annotations

import re
from typing import Any


def test_vitest_unit_tests_pass(node: Any) -> None:
    result = node.run("vitest", "run", "--reporter=dot")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    # Guard against a run that silently collected nothing.
    passed = re.search(r"Tests\s+(\d+) passed", output)
    assert passed and int(passed.group(1)) >= 30, output[-3000:]


def test_dashboard_type_checks(node: Any) -> None:
    result = node.run("tsc", "--noEmit", "-p", "tsconfig.json")
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
