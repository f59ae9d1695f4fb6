"""Reading the store's Prometheus metrics in tests: one sample, by name and labels."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


def sample(text: str, name: str, **labels: str) -> float:
    """The value of the sample ``name`` in the exposition ``text`` whose labels include
    ``labels``; fail the test when there is none."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    raise AssertionError(f"{name} {labels or ''} not in the scrape")


def metric(url: str, name: str, **labels: str) -> float:
    """Scrape ``url``'s ``/metrics`` now and return one sample (:func:`sample`)."""
    return sample(httpx.get(f"{url}/metrics", timeout=10).text, name, **labels)
