"""langchain-tests' standard suites, on every face: ``VectorStoreIntegrationTests`` (sync
and async), ``BaseStoreSyncTests``/``BaseStoreAsyncTests`` for the byte store, and
``SyncCacheTestSuite``/``AsyncCacheTestSuite`` for both LLM caches."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("langchain_tests")

from langchain_tests.integration_tests import (
    AsyncCacheTestSuite,
    BaseStoreAsyncTests,
    BaseStoreSyncTests,
    SyncCacheTestSuite,
    VectorStoreIntegrationTests,
)
from langchain_tests.integration_tests.vectorstores import EMBEDDING_SIZE

from engramdb.integrations.langchain import (
    EngramByteStore,
    EngramCache,
    EngramSemanticCache,
    EngramVectorStore,
)


def _closing(adapter: Any) -> Iterator[Any]:
    try:
        yield adapter
    finally:
        adapter.close()


class TestVectorStore(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self, open_face: Callable[..., Any]) -> Iterator[EngramVectorStore]:  # type: ignore[override]
        store = EngramVectorStore(open_face(), self.get_embeddings(), dim=EMBEDDING_SIZE)
        yield from _closing(store)


class TestByteStoreSync(BaseStoreSyncTests[bytes]):
    @pytest.fixture
    def kv_store(self, open_face: Callable[..., Any]) -> Iterator[EngramByteStore]:  # type: ignore[override]
        yield from _closing(EngramByteStore(open_face()))

    @pytest.fixture
    def three_values(self) -> tuple[bytes, bytes, bytes]:
        return b"foo", b"bar", b"buzz"


class TestByteStoreAsync(BaseStoreAsyncTests[bytes]):
    @pytest.fixture
    def kv_store(self, open_face: Callable[..., Any]) -> Iterator[EngramByteStore]:  # type: ignore[override]
        yield from _closing(EngramByteStore(open_face()))

    @pytest.fixture
    def three_values(self) -> tuple[bytes, bytes, bytes]:
        return b"foo", b"bar", b"buzz"


class TestCacheSync(SyncCacheTestSuite):
    @pytest.fixture
    def cache(self, open_face: Callable[..., Any]) -> Iterator[EngramCache]:  # type: ignore[override]
        yield from _closing(EngramCache(open_face()))


class TestCacheAsync(AsyncCacheTestSuite):
    @pytest.fixture
    def cache(self, open_face: Callable[..., Any]) -> Iterator[EngramCache]:  # type: ignore[override]
        yield from _closing(EngramCache(open_face()))


def _semantic(open_face: Callable[..., Any]) -> EngramSemanticCache:
    return EngramSemanticCache(open_face(), VectorStoreIntegrationTests.get_embeddings())


class TestSemanticCacheSync(SyncCacheTestSuite):
    @pytest.fixture
    def cache(self, open_face: Callable[..., Any]) -> Iterator[EngramSemanticCache]:  # type: ignore[override]
        yield from _closing(_semantic(open_face))


class TestSemanticCacheAsync(AsyncCacheTestSuite):
    @pytest.fixture
    def cache(self, open_face: Callable[..., Any]) -> Iterator[EngramSemanticCache]:  # type: ignore[override]
        yield from _closing(_semantic(open_face))
