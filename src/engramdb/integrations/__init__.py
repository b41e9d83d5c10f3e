"""Adapters for agent frameworks, over engramdb's public API; each needs its extra.

- ``engramdb.integrations.langgraph``: ``EngramSaver``, ``EngramStore``
  (``pip install 'engramdb[langgraph]'``)
- ``engramdb.integrations.langchain``: ``EngramVectorStore``, ``EngramByteStore``,
  ``EngramCache``, ``EngramSemanticCache`` (``pip install 'engramdb[langchain]'``)

Modules are imported on demand: ``import engramdb`` never loads a framework.
"""
