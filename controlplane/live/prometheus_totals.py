"""The metrics `PrometheusExporter` reads at each scrape from the run's parts: the response caches'
checked and false hits, their cache stores' outages, the rows the database refused.

The running totals are counters over the daemon's life (``_total``, they only grow): a plugin instance
that ``POST /admin/reload`` replaces or drops takes its totals with it, so they are carried forward
(`CacheTotals.refresh`, at each scrape and at each reload). A store made afresh by a reload has not
been tried yet and says it is up; while the store it replaced was down and the new one, on the same
URL, has not been tried, it is counted down (its first call says which it is).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

__all__ = ["CacheTotals", "RefusedRows"]


def _stores(plugins: list[Any]) -> list[Any]:
    """The plugins' stores that can be unreachable (``reports_outages``: `RedisStore`)."""
    found = (getattr(p.instance, attr, None) for p in plugins for attr in ("store", "_store"))
    return [s for s in found if getattr(s, "reports_outages", False) is True]


def _tried(store: Any) -> bool:
    """Whether ``store`` was called since it was made (a failed call, or any call given a run time)."""
    return bool(getattr(store, "tried", store.failures > 0))


class CacheTotals:
    """``cache_checked_hits_total``, ``cache_false_hits_total``, ``cache_false_hit_rate``,
    ``cache_stores_down`` and ``cache_store_failures_total``, from ``loaded()`` (the run's plugins now,
    `PluginSet.loaded`: a reload swaps them); those with ``cache_report()`` count as caches."""

    def __init__(self, namespace: str) -> None:
        self.ns = namespace
        self.loaded: Callable[[], list[Any]] = list
        self._caches: dict[int, Any] = {}  # id -> the cache plugins loaded when last looked at
        self._stores: dict[int, Any] = {}  # id -> their stores
        self.carried = {"checked": 0, "false": 0, "failures": 0}  # of the instances no longer loaded
        self._down_urls: set[str] = set()  # of stores replaced while down, until their successor is tried

    def watch(self, loaded: Callable[[], list[Any]]) -> None:
        self.loaded = loaded
        self.refresh()

    def refresh(self) -> None:
        """Look at the plugins loaded now: those no longer loaded leave their totals to the carried ones."""
        plugins = list(self.loaded())
        caches = {id(p.instance): p.instance for p in plugins if hasattr(p.instance, "cache_report")}
        stores = {id(s): s for s in _stores(plugins)}
        for key, cache in self._caches.items():
            if key not in caches:
                report = cache.cache_report()
                self.carried["checked"] += report["checked_hits"]
                self.carried["false"] += report["false_hits"]
        for key, store in self._stores.items():
            if key not in stores:
                self.carried["failures"] += store.failures
                if not store.available:
                    self._down_urls.add(getattr(store, "url", None))
        self._caches, self._stores = caches, stores

    def _down(self, store: Any) -> bool:
        if not store.available:
            return True
        url = getattr(store, "url", None)
        if url in self._down_urls:
            if not _tried(store):
                return True  # its predecessor was down: not known to be up yet
            self._down_urls.discard(url)
        return False

    def describe(self) -> Iterator[Any]:
        return self._families(0, 0, 0, 0)

    def collect(self) -> Iterator[Any]:
        self.refresh()
        reports = [c.cache_report() for c in self._caches.values()]
        checked = self.carried["checked"] + sum(r["checked_hits"] for r in reports)
        false = self.carried["false"] + sum(r["false_hits"] for r in reports)
        stores = list(self._stores.values())
        failures = self.carried["failures"] + sum(s.failures for s in stores)
        return self._families(checked, false, sum(self._down(s) for s in stores), failures)

    def _families(self, checked: int, false: int, down: int, failures: int) -> Iterator[Any]:
        ns = self.ns
        yield CounterMetricFamily(
            f"{ns}_cache_checked_hits", "Response-cache hits whose correctness is known (semantic-cache: its "
            "verified would-be hits), since the daemon started (plugins a reload replaced included).", value=checked)
        yield CounterMetricFamily(f"{ns}_cache_false_hits", "Wrong answers among cache_checked_hits_total.",
                                  value=false)
        yield GaugeMetricFamily(
            f"{ns}_cache_false_hit_rate", "cache_false_hits_total / cache_checked_hits_total, as the run "
            "summary's (NaN while none was checked).", value=false / checked if checked else float("nan"))
        yield GaugeMetricFamily(
            f"{ns}_cache_stores_down", "Plugins' cache stores (Redis) in an outage now: their caches serve misses "
            "(a store a reload made afresh, on the URL of one that was down, counts down until it is tried).",
            value=down)
        yield CounterMetricFamily(
            f"{ns}_cache_store_failures", "Calls to the plugins' cache stores (Redis) that found them unreachable, "
            "since the daemon started (stores a reload replaced included).", value=failures)


class RefusedRows:
    """``storage_rows_refused_total``: the rows the run's database refused for good."""

    def __init__(self, namespace: str) -> None:
        self.ns = namespace
        self.count: Callable[[], int] = lambda: 0

    def describe(self) -> Iterator[Any]:
        return self._families(0)

    def collect(self) -> Iterator[Any]:
        return self._families(self.count())

    def _families(self, refused: int) -> Iterator[Any]:
        yield CounterMetricFamily(
            f"{self.ns}_storage_rows_refused", "Rows of the run the database refused for good (a repeated request "
            "id), saved to refused files; the other rows are written.", value=refused)
