"""What a base hands to its loss and to the regularizers: one step's embeddings and their similarity products.

Views are 0 and 1. Pair ``a`` is the query of view ``a`` against the key of view ``1 − a``: pair 0 is (q1, k2)
and pair 1 is (q2, k1). MoCo v2 without ``symmetric`` has pair 0 only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .losses import at_least_fp32, drop_positive, fp32_region

PerView = list  # [view 0, view 1], an entry None where that view has no such tensor


@dataclass
class Embeddings:
    """One step's embeddings.

    Attributes:
        q: per view, (N, D) normalised queries with gradient, or None when that view is not a query.
        k: per view, (N, D) this process's normalised keys (no gradient), or None.
        k_all: per view, (M, D) every process's keys in rank order (the same on every rank), or None.
        negatives: (K, D) the queue as it was before this step's enqueue (MoCo v2), or None (MoCo v3).
        offset: N · rank: where this process's keys sit in ``k_all``.
        feats_q / feats_k: per view, the backbone features under the queries (with gradient) and the keys
            (momentum backbone, this process's, in batch order); filled when the base keeps features.
        new_keys: what the queue receives after the step: every process's keys, view by view, in rank order.
    """

    q: PerView
    k: PerView
    k_all: PerView
    negatives: torch.Tensor | None
    offset: int
    feats_q: PerView = field(default_factory=lambda: [None, None])
    feats_k: PerView = field(default_factory=lambda: [None, None])
    new_keys: torch.Tensor | None = None

    @property
    def pairs(self) -> list[int]:
        return [a for a in (0, 1) if self.q[a] is not None]


class Similarities:
    """The products of one step's embeddings, each computed once (in float32) for every loss term that reads it."""

    def __init__(self, emb: Embeddings) -> None:
        up = lambda vs: [None if v is None else at_least_fp32(v) for v in vs]  # noqa: E731
        self.q, self.k, self.k_all = up(emb.q), up(emb.k), up(emb.k_all)
        self.queue = None if emb.negatives is None else at_least_fp32(emb.negatives)
        self.offset = emb.offset
        self.pairs = emb.pairs
        self._cache: dict[tuple[str, int], torch.Tensor] = {}
        self.computed: Counter[str] = Counter()  # how many products of each kind were computed

    def _get(self, name: str, a: int, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        key = (name, a)
        if key not in self._cache:
            with fp32_region(self.q[self.pairs[0]]):
                self._cache[key] = fn()
            self.computed[name] += 1
        return self._cache[key]

    def positive(self, a: int) -> torch.Tensor:
        """(N,) q_a,i · k_b,i."""
        return self._get("positive", a, lambda: (self.q[a] * self.k[1 - a]).sum(1))

    def query_queue(self, a: int) -> torch.Tensor:
        """(N, K) q_a · queueᵀ, with gradient."""
        return self._get("query_queue", a, lambda: self.q[a] @ self.queue.t())

    def key_queue(self, a: int) -> torch.Tensor:
        """(N, K) k_b · queueᵀ, the key's view of the same negatives (no gradient)."""
        return self._get("key_queue", a, lambda: self.k[1 - a] @ self.queue.t())

    def cross(self, a: int) -> torch.Tensor:
        """(N, M) q_a · k_all,bᵀ: S12 for a = 0, S21 for a = 1; the positive of row i at offset + i."""
        return self._get("cross", a, lambda: self.q[a] @ self.k_all[1 - a].t())

    def key_batch(self, a: int) -> torch.Tensor:
        """(N, M) k_b · k_all,bᵀ (no gradient)."""
        return self._get("key_batch", a, lambda: self.k[1 - a] @ self.k_all[1 - a].t())

    def negatives(self, a: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The query's and the key's similarities to pair a's negatives: the queue when there is one, else every
        process's keys of view b except the positive. Shapes (N, K) or (N, M − 1)."""
        if self.queue is not None:
            return self.query_queue(a), self.key_queue(a)
        q_neg = self._get("query_batch_neg", a, lambda: drop_positive(self.cross(a), self.offset))
        k_neg = self._get("key_batch_neg", a, lambda: drop_positive(self.key_batch(a), self.offset))
        return q_neg, k_neg
