"""Rank fusion for hybrid search: reciprocal-rank fusion (default) or weighted scores.

RRF (Cormack et al., 2009): ``score(d) = sum over lists of 1 / (k0 + rank(d))`` with
``k0 = 60``; it needs no score calibration between BM25 and cosine, which is why it is the
default. ``weighted`` min-max normalises each list to [0, 1] and blends
``alpha * vector + (1 - alpha) * text``; it rewards a strong match in one list more.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["rrf", "weighted"]

RRF_K = 60


def rrf(
    vector: Sequence[tuple[int, float]], text: Sequence[tuple[int, float]], k0: int = RRF_K
) -> list[tuple[int, float, dict[str, float]]]:
    """Fuse two ranked ``(label, score)`` lists; returns ``(label, fused, parts)`` best first.

    ``parts`` holds each list's raw score (absent when the item was not in that list) and
    its rank.
    """
    fused: dict[int, float] = {}
    parts: dict[int, dict[str, float]] = {}
    for name, ranked in (("vector", vector), ("text", text)):
        for rank, (label, score) in enumerate(ranked, start=1):
            fused[label] = fused.get(label, 0.0) + 1.0 / (k0 + rank)
            detail = parts.setdefault(label, {})
            detail[name] = score
            detail[f"{name}_rank"] = rank
    return sorted(
        ((label, score, parts[label]) for label, score in fused.items()),
        key=lambda item: (-item[1], item[0]),
    )


def _normalised(ranked: Sequence[tuple[int, float]]) -> dict[int, float]:
    if not ranked:
        return {}
    scores = [s for _, s in ranked]
    low, high = min(scores), max(scores)
    span = high - low
    return {label: (1.0 if span == 0 else (score - low) / span) for label, score in ranked}


def weighted(
    vector: Sequence[tuple[int, float]],
    text: Sequence[tuple[int, float]],
    alpha: float = 0.5,
) -> list[tuple[int, float, dict[str, float]]]:
    """``alpha`` * normalised vector score + (1 - ``alpha``) * normalised BM25."""
    v, t = _normalised(vector), _normalised(text)
    raw = {"vector": dict(vector), "text": dict(text)}
    out = []
    for label in v.keys() | t.keys():
        score = alpha * v.get(label, 0.0) + (1 - alpha) * t.get(label, 0.0)
        parts = {name: raw[name][label] for name in ("vector", "text") if label in raw[name]}
        out.append((label, score, parts))
    out.sort(key=lambda item: (-item[1], item[0]))
    return out
