"""The Pareto front of cost against SLO attainment: the points no other point beats on both."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

__all__ = ["pareto_front"]

T = TypeVar("T")


def pareto_front(points: Sequence[T], cost: Any = lambda p: p["cost"], value: Any = lambda p: p["attainment"]) -> list[T]:
    """The non-dominated points (lower cost, higher value), cheapest first. A point is dominated
    when another costs no more and attains at least as much, and is strictly better in one."""
    ranked = sorted((p for p in points if cost(p) is not None and value(p) is not None),
                    key=lambda p: (cost(p), -value(p)))
    front: list[T] = []
    best = float("-inf")
    for p in ranked:
        if value(p) > best:
            front.append(p)
            best = value(p)
    return front
