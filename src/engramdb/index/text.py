"""BM25 keyword search over a collection's texts, with tantivy (native, incremental).

Documents are keyed by the same labels as the vector index. The index lives in memory and
is rebuilt from the collection's records (or its snapshot's texts) when a process first uses
the collection: tantivy allows one writer per index directory, and every process sharing a
database keeps its own derived indexes. English stemming (``en_stem``) matches the
reference figures in ``../shared/data`` (Cranfield nDCG@10 0.534 with tantivy BM25).

Queries are reduced to the words ``en_stem`` would keep, lower-cased and OR-ed, so user text
can never be a query-syntax error:

- lower-cased, because tantivy's parser reads upper-case ``AND``, ``OR``, ``NOT`` and ``IN``
  as operators (``en_stem`` lower-cases every token anyway);
- only words the tokenizer keeps, because a word that yields no token leaves an empty
  clause, and two of them make the parser fail ("Only excluding terms given"): it splits on
  anything but letters and digits (``_`` too) and drops tokens of 40 bytes or more;
- a word said n times is sent once with boost n: the parser drops repeats of an identical
  word, so without the boost "The ... the" would weigh twice and "the ... the" once. Every
  occurrence counts, as in Lucene's match queries (BM25 with linear query term frequency).

Writes are not thread-safe by themselves: the collection's write lock guards them.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["TextIndex"]

_WORD = re.compile(r"[^\W_]+")  # letters and digits: on its own, one en_stem token
_LONGEST = 40  # bytes: en_stem's RemoveLongFilter drops tokens this long or longer
# Up to this many admissible labels, a search restricted to them ORs one term query per label
# (a term lookup each); past it, tantivy's term-set query. A term set walks the label term
# dictionary, so its cost grows with the whole index: on 20k memories, 100 labels (one user's
# memories) took 1.19 ms as a term set and 0.22 ms as an OR of term queries; the two met
# near 700 labels.
_UNION_UP_TO = 512


class TextIndex:
    def __init__(self) -> None:
        import tantivy

        builder = tantivy.SchemaBuilder()
        builder.add_integer_field("label", stored=True, indexed=True, fast=True)
        builder.add_text_field("text", stored=False, tokenizer_name="en_stem")
        self._schema = builder.build()
        self._tantivy = tantivy
        self._index = tantivy.Index(self._schema)
        self._writer = self._index.writer(heap_size=32_000_000, num_threads=1)
        self._dirty = False
        self._committing = threading.Lock()
        self.documents = 0

    def add(self, label: int, text: str) -> None:
        self._writer.add_document(self._tantivy.Document(label=int(label), text=text))
        self._dirty = True
        self.documents += 1

    def remove(self, label: int) -> None:
        self._writer.delete_documents_by_term("label", int(label))
        self._dirty = True
        self.documents -= 1

    def refresh(self) -> None:
        """Make added and removed documents visible to searches (a commit, when needed).

        Searches call it under the collection's read lock, so several may arrive at once:
        one commits, the others wait for it. Writes hold the write lock, so none is added
        meanwhile.
        """
        if self._dirty:
            with self._committing:
                if self._dirty:
                    self._writer.commit()
                    self._index.reload()
                    self._dirty = False

    def search(
        self,
        query: str,
        k: int,
        allowed: Callable[[np.ndarray], np.ndarray] | None = None,
        *,
        only: np.ndarray | None = None,
    ) -> list[tuple[int, float]]:
        """Top ``k`` ``(label, bm25)`` pairs; ``allowed(labels)`` masks admissible labels.

        With a mask the search deepens until k admissible hits are found or the matches
        run out, so a filter never cuts the answer short. ``only``: the admissible labels
        themselves, when they are few (a user's memories among everyone's): tantivy then
        searches just those (a term-set clause scoring 0, so BM25 scores are unchanged)
        instead of deepening through every other match, each read back from its stored
        document (~45,000 of them per search at 0.1% selectivity when it did).
        """
        words = Counter(w.lower() for w in _WORD.findall(query) if len(w.encode()) < _LONGEST)
        if not words or k <= 0:
            return []
        self.refresh()
        terms = " ".join(word if n == 1 else f"{word}^{n}" for word, n in words.items())
        parsed = self._index.parse_query(terms, ["text"])
        searcher = self._index.searcher()
        if only is not None:
            if not len(only):
                return []
            tantivy, schema = self._tantivy, self._schema
            if len(only) <= _UNION_UP_TO:
                should, term = tantivy.Occur.Should, tantivy.Query.term_query
                within = tantivy.Query.boolean_query(
                    [(should, term(schema, "label", label)) for label in only.tolist()]
                )
            else:
                within = tantivy.Query.term_set_query(schema, "label", only.tolist())
            parsed = tantivy.Query.boolean_query(
                [
                    (tantivy.Occur.Must, parsed),
                    (tantivy.Occur.Must, tantivy.Query.boost_query(within, 0.0)),
                ]
            )
            hits = searcher.search(parsed, k).hits
            return [
                (int(searcher.doc(address)["label"][0]), float(score)) for score, address in hits
            ]
        limit = k if allowed is None else max(4 * k, 64)
        while True:
            hits = searcher.search(parsed, limit).hits
            found = [
                (int(searcher.doc(address)["label"][0]), float(score)) for score, address in hits
            ]
            if allowed is not None and found:
                keep = allowed(np.fromiter((label for label, _ in found), dtype=np.int64))
                found = [hit for hit, ok in zip(found, keep) if ok]
            if len(found) >= k or len(hits) < limit:
                return found[:k]
            limit *= 4

    def stats(self) -> dict[str, Any]:
        return {"documents": self.documents}
