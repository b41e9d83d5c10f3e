"""Generate the clients' remote methods from the embedded implementations' declarations.

    python -m engramdb.client.generate          # rewrite engramdb/client/_generated.py
    python -m engramdb.client.generate --check  # exit 1 when it is stale (the suite runs it)

Every public method declared ``@remote`` (``engramdb/remote.py``) on the classes in
``FACES`` becomes a method of a sync class (``<Face>Calls``) and an asyncio class
(``Async<Face>Calls``) with the same name, parameters, defaults, result type and docstring,
whose body sends the call. Only the arguments a caller passed (keyword-only ones that
differ from their defaults) go on the wire; parameters with a wire form are encoded with it.
The hand-written client classes (``client/_handles.py``) subclass the generated ones and
add what runs on the client (iteration, optimistic updates, batching).

Signatures are copied as their source text, so every name they use must be importable by
the client from a model module: ``NAMES`` says where each comes from (the generator fails on
a name it does not know, which keeps implementation modules out of the client).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engramdb.remote import RemoteSpec, remote_methods

__all__ = ["FACES", "generate", "main"]


@dataclass(frozen=True)
class Face:
    name: str  # generated classes: <name>Calls and Async<name>Calls
    module: str
    cls: str
    namespace: str


FACES = (
    Face("Database", "engramdb.database", "Database", "db"),
    Face("RecordSet", "engramdb.recordset", "RecordSet", "records"),
    Face("VectorStore", "engramdb.vectors.store", "VectorStore", "vectors"),
    Face("Collection", "engramdb.vectors.collection", "Collection", "collection"),
    Face("SessionStore", "engramdb.sessions.store", "SessionStore", "sessions"),
    Face("MemoryStore", "engramdb.memory.store", "MemoryStore", "memory"),
    Face("CacheCore", "engramdb.cache.core", "CacheCore", "cache"),
    Face("FeatureStore", "engramdb.features.store", "FeatureStore", "features"),
)

# Every name a declared signature may use, and the (light) module the client takes it from.
NAMES = {
    "Any": "typing",
    "Mapping": "collections.abc",
    "Sequence": "collections.abc",
    "Key": "engramdb.records.keys",
    "Change": "engramdb.records.model",
    "Record": "engramdb.records.model",
    "ScanPage": "engramdb.records.model",
    "Op": "engramdb.records.ops",
    "CollectionInfo": "engramdb.vectors.model",
    "Hit": "engramdb.vectors.model",
    "Item": "engramdb.vectors.model",
    "ItemPage": "engramdb.vectors.model",
    "Session": "engramdb.sessions.model",
    "SessionPage": "engramdb.sessions.model",
    "Checkpoint": "engramdb.sessions.model",
    "Memory": "engramdb.memory.model",
    "MemoryEvent": "engramdb.memory.model",
    "MemoryHit": "engramdb.memory.model",
    "Entity": "engramdb.features.definitions",
    "FeatureService": "engramdb.features.definitions",
    "FeatureView": "engramdb.features.definitions",
    "OnlineResponse": "engramdb.features.model",
    "HistoricalResult": "engramdb.features.model",
    "IngestResult": "engramdb.features.model",
    "SkewReport": "engramdb.features.model",
}
# Implementation types a method returns, and the client handle that stands for them.
HANDLES = {"Collection": ("RemoteCollection", "AsyncCollection")}
_BUILTIN = {"int", "float", "str", "bytes", "bool", "None", "dict", "list", "tuple", "set",
            "object", "type", "builtins"}  # fmt: skip

OUTPUT = Path(__file__).with_name("_generated.py")


def _names(annotation: str) -> set[str]:
    return {
        node.id
        for node in ast.walk(ast.parse(annotation, mode="eval"))
        if isinstance(node, ast.Name)
    }


def _annotation(text: Any, face: int) -> str:
    assert isinstance(text, str), f"annotations must be postponed (strings), got {text!r}"
    for impl, handles in HANDLES.items():
        text = re.sub(rf"\b{impl}\b", handles[face], text)
    return str(text)


def _default(value: Any) -> str:
    text: str = repr(value)
    if ast.literal_eval(text) != value:
        raise ValueError(f"default {value!r} has no literal form")
    return text


def _method(
    face: Face, name: str, fn: Any, spec: RemoteSpec, is_async: bool, used: set[str]
) -> str:
    signature = inspect.signature(fn)
    params = list(signature.parameters.values())[1:]
    header: list[str] = ["self"]
    positional: list[str] = []
    keyword: list[tuple[str, Any]] = []
    star = False
    local_only = spec.local_only
    wire = dict(spec.wire)
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise ValueError(f"{face.cls}.{name}: *args/**kwargs cannot be declared remote")
        annotation = _annotation(p.annotation, int(is_async))
        used |= _names(annotation)
        text = f"{p.name}: {annotation}"
        if p.default is not p.empty:
            text += f" = {_default(p.default)}"
        if p.kind is p.KEYWORD_ONLY and not star:
            header.append("*")
            star = True
        header.append(text)
        if p.name in local_only:
            continue  # a hand-written override handles it on the client
        if p.kind is p.KEYWORD_ONLY:
            keyword.append((p.name, p.default))
        else:
            positional.append(p.name)
    returns = _annotation(signature.return_annotation, int(is_async))
    used |= _names(returns)
    doc = inspect.getdoc(fn)
    if not doc:
        raise ValueError(f"{face.cls}.{name} has no docstring: remote methods carry one")
    lines = [
        f"{'async ' if is_async else ''}def {name}({', '.join(header)}) -> {returns}:",
        textwrap.indent(f'"""{doc}\n"""' if "\n" in doc else f'"""{doc}"""', "    "),
    ]
    for param, form in wire.items():
        if param in local_only:
            continue
        lines.append(f"    if {param} is not None:")
        lines.append(f"        {param} = wire({form!r}, {param})")
    if keyword:
        lines.append("    kwargs: dict[str, Any] = {}")
        for param, default in keyword:
            if default is None or default is True or default is False:
                test = f"{param} is not {default!r}"
            else:
                test = f"{param} != {_default(default)}"
            lines.append(f"    if {test}:")
            lines.append(f'        kwargs["{param}"] = {param}')
    args = "(" + "".join(f"{p}, " for p in positional) + ")"
    call = f'self._call("{face.namespace}.{name}", {args}, {"kwargs" if keyword else "{}"})'
    lines.append(f"    return {'await ' if is_async else ''}{call}  # type: ignore[no-any-return]")
    return textwrap.indent("\n".join(lines), "    ")


def generate() -> str:
    """The source of ``client/_generated.py``."""
    used: set[str] = set()
    classes: list[str] = []
    methods: list[str] = []
    writes: list[str] = []
    for face in FACES:
        cls = getattr(importlib.import_module(face.module), face.cls)
        declared = sorted(remote_methods(cls).items())
        for prefix, base, is_async in (("", "Calls", False), ("Async", "AsyncCalls", True)):
            body = [_method(face, n, fn, spec, is_async, used) for n, (fn, spec) in declared]
            awaited = " (awaited)" if is_async else ""
            doc = f'    """The remote methods of ``{face.module}.{face.cls}``{awaited}."""'
            classes.append(
                f"class {prefix}{face.name}Calls({base}):\n{doc}\n\n" + "\n\n".join(body)
            )
        for n, (_, spec) in declared:
            methods.append(f'    "{face.namespace}.{n}": ("{face.name}", "{n}"),')
            if spec.writes:
                writes.append(f'    "{face.namespace}.{n}",')
    handles = {h for pair in HANDLES.values() for h in pair}
    imports: dict[str, list[str]] = {}
    for name in sorted(used - _BUILTIN - handles):
        if name not in NAMES:
            raise ValueError(
                f"a declared signature uses {name!r}: add it to NAMES (a model module)"
            )
        imports.setdefault(NAMES[name], []).append(name)
    import_lines = [
        f"from {module} import {', '.join(sorted(names))}"
        for module, names in sorted(imports.items())
    ]
    header = [
        "# GENERATED by `python -m engramdb.client.generate` from the @remote declarations of",
        "# the embedded implementations. Do not edit: change the implementation, then regenerate.",
        '"""The remote methods of the sync and asyncio clients (generated)."""',
        "",
        "from __future__ import annotations",
        "",
        "from typing import TYPE_CHECKING",
        "",
        *[line for line in import_lines if line.startswith(("from collections", "from typing"))],
        "",
        "from engramdb.client._calls import AsyncCalls, Calls, wire",
        *[
            line
            for line in import_lines
            if not line.startswith(("from collections", "from typing"))
        ],
        "",
        "if TYPE_CHECKING:",
        "    from engramdb.client._handles import " + ", ".join(sorted(handles)),
        "",
        "# remote method -> (face, method name): where the clients find each one's result type",
        "METHODS: dict[str, tuple[str, str]] = {",
        *methods,
        "}",
        "# remote methods that change data: never retried after the request may have been sent",
        "WRITES: frozenset[str] = frozenset({",
        *writes,
        "})",
    ]
    return "\n".join(header) + "\n\n\n" + "\n\n\n".join(classes) + "\n"


def _formatted(source: str) -> str:
    """The source as ``ruff format`` writes it (the project's style), when ruff is here."""
    import shutil
    import subprocess

    ruff = shutil.which("ruff")
    if ruff is None:
        return source
    done = subprocess.run(
        [ruff, "format", "--stdin-filename", str(OUTPUT), "-"],
        input=source, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    source = _formatted(generate())
    if "--check" in args:
        current = OUTPUT.read_text() if OUTPUT.exists() else ""
        if current != source:
            print(f"{OUTPUT} is stale: run python -m engramdb.client.generate", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(source)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
