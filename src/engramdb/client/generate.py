"""Generate the client classes from the embedded implementations' declarations.

    python -m engramdb.client.generate          # rewrite engramdb/client/_generated.py
    python -m engramdb.client.generate --check  # exit 1 when it is stale (the suite runs it)

For each class in ``FACES``, a sync class (``Remote<Face>``) and an asyncio class
(``Async<Face>``) get every public method declared ``@remote`` (``engramdb/remote.py``) and
every one whose client-side part ``client/_handles.py`` marks (``<Face>Face._<name>``), with
the embedded method's name, parameters, defaults, result type and docstring. A remote
method's body sends the call: only the arguments a caller passed (keyword-only ones that
differ from their defaults) go on the wire, in their wire form where the declaration names
one. A marked method's body runs its hand-written part as the mark says; a database property
that gives a role (``db.vectors``...) builds that role's handle.

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
from inspect import Parameter
from pathlib import Path
from typing import Any

from engramdb.client import _handles
from engramdb.dispatch import NAMESPACES
from engramdb.remote import RemoteSpec, remote_methods

__all__ = ["FACES", "generate", "main"]


# (namespace, module, embedded class) of each face: the classes the server serves
FACES = [(namespace, module, cls) for namespace, (module, cls, _) in NAMESPACES.items()]
# Every name a declared signature may use, by the (light) module the client takes it from.
_MODULES = {
    "collections.abc": "AsyncIterator Callable Iterator Mapping Sequence",
    "engramdb.context": "Context FeatureRead MemoryQuery SearchQuery SessionRead",
    "engramdb.records.keys": "Key",
    "engramdb.records.limits": "Limits",
    "engramdb.records.model": "Change Record ScanPage",
    "engramdb.records.ops": "Op",
    "engramdb.records.writes": "TransformFn",
    "engramdb.observability.metrics": "Metrics",
    "engramdb.transaction": "AsyncTransaction Transaction",
    "engramdb.cache.model": "AsyncCache Cache",
    "engramdb.embedders": "Embedder",
    "engramdb.vectors.model": "CollectionInfo Hit Item ItemPage",
    "engramdb.sessions.model": "Checkpoint Session SessionPage",
    "engramdb.memory.model": "Memory MemoryEvent MemoryHit",
    "engramdb.features.definitions": "Entity FeatureService FeatureView",
    "engramdb.features.model": "HistoricalResult IngestResult OnlineResponse SkewReport",
}
NAMES = {name: module for module, names in _MODULES.items() for name in names.split()}
_BUILTIN = {"int", "float", "str", "bytes", "bool", "None", "dict", "list", "tuple", "set",
            "object", "type", "builtins", "Any"}  # fmt: skip
_AWAITED = {"remote", "flow", "awaited", "stream"}  # what is awaited on asyncio faces
_PASSED: dict[Any, str] = {Parameter.KEYWORD_ONLY: "{0}={0}", Parameter.VAR_KEYWORD: "**{0}"}

OUTPUT = Path(__file__).with_name("_generated.py")


def _names_of(cls: str) -> tuple[str, str]:
    face = "Face" if cls == "Database" else ""  # engramdb.aio.AsyncDatabase is in-process
    return f"Remote{cls}{face}", f"Async{cls}{face}"


# The embedded types -> what each face has instead: (sync, asyncio).
HANDLES = {
    **{cls: _names_of(cls) for _, _, cls in FACES},
    **{name: (name, f"Async{name}") for name in ("Cache", "Transaction", "Iterator")},
}


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


class _Text(str):
    """An annotation's text, shown as it is in a signature."""

    def __repr__(self) -> str:
        return str(self)


def _method(
    face: tuple[str, type], name: str, kind: str, spec: RemoteSpec | None, is_async: bool
) -> tuple[str, set[str]]:
    """The source of one method of a generated class, and the names its signature uses."""
    namespace, cls = face
    member = inspect.getattr_static(cls, name)
    fn: Any = member.fget if isinstance(member, property) else getattr(cls, name)
    signature = inspect.signature(fn)
    local_only = spec.local_only if spec else frozenset()
    this, *params = signature.parameters.values()
    for p in params:
        if p.kind is p.VAR_POSITIONAL or (p.kind is p.VAR_KEYWORD and spec):
            raise ValueError(f"{cls.__name__}.{name}: *args/**kwargs cannot be declared remote")
        if p.default is not p.empty:
            _default(p.default)
    translated = [p.replace(annotation=_Text(_annotation(p.annotation, is_async))) for p in params]
    used = {n for p in translated for n in _names(p.annotation)}
    passed = [_PASSED.get(p.kind, "{0}").format(p.name) for p in params]  # to a hand-written part
    sent = [p for p in params if p.name not in local_only]
    positional = [p.name for p in sent if p.kind is not p.KEYWORD_ONLY]
    keyword = [(p.name, p.default) for p in sent if p.kind is p.KEYWORD_ONLY]
    returns = _annotation(signature.return_annotation, is_async)
    used |= _names(returns)
    header = signature.replace(parameters=[this, *translated], return_annotation=_Text(returns))
    doc = inspect.getdoc(fn)
    if not doc:
        raise ValueError(f"{cls.__name__}.{name} has no docstring: remote methods carry one")
    awaited = is_async and kind in _AWAITED
    lines = [
        *(["@property"] if isinstance(member, property) else []),
        f"{'async ' if awaited else ''}def {name}{header}:",
        textwrap.indent(f'"""{doc}\n"""' if "\n" in doc else f'"""{doc}"""', "    "),
    ]
    call = f"self._{name}({', '.join(passed)})"
    if kind == "stream":
        loop = "async for _item in {}:\n        yield _item" if is_async else "yield from {}"
        lines.append("    " + loop.format(f"self._stream({call}, [])"))
        return textwrap.indent("\n".join(lines), "    "), used
    if kind == "flow":
        call = f"self._run({call})"
    elif kind == "handle":
        call = f"{returns}(self)"
    elif kind == "remote":
        for param, form in spec.wire if spec else ():
            if param not in local_only:
                lines.append(f"    if {param} is not None:")
                lines.append(f"        {param} = self._wire({form!r}, {param})")
        if keyword:
            lines.append("    _kw: dict[str, Any] = {}")
        for param, default in keyword:
            if default is None or default is True or default is False:
                test = f"{param} is not {default!r}"
            else:
                test = f"{param} != {_default(default)}"
            lines.append(f"    if {test}:")
            lines.append(f'        _kw["{param}"] = {param}')
        one = len(positional) == 1
        args = f"({positional[0]},)" if one else "(" + ", ".join(positional) + ")"
        call = f'self._call("{namespace}.{name}", {args}, {"_kw" if keyword else "{}"})'
    call = f"await {call}" if awaited else call
    if returns == "None":
        lines.append(f"    {call}")
    else:
        # Typed through a variable: the transport returns Any, rebuilt to this type.
        lines.append(f"    _result: {returns} = {call}")
        lines.append("    return _result")
    return textwrap.indent("\n".join(lines), "    "), used


def generate() -> str:
    """The source of ``client/_generated.py``."""
    used: set[str] = set()
    used_remote: set[str] = set()  # names the decoders resolve at run time
    classes: list[str] = []
    methods: list[str] = []
    writes: list[str] = []
    mixins: list[str] = []
    for namespace, module, name in FACES:
        cls = getattr(importlib.import_module(module), name)
        declared = remote_methods(cls)
        mixin = getattr(_handles, f"{name}Face", None)
        marked = {
            attr[1:]: kind
            for attr in dir(mixin or object)
            if (kind := getattr(getattr(mixin, attr), "__client__", None))
        }
        mixins += [mixin.__name__] if mixin else []
        for attr, member in vars(cls).items() if name == "Database" else ():
            fget: Any = getattr(member, "fget", None)  # properties that give a role's handle
            if fget and attr not in marked and inspect.signature(fget).return_annotation in HANDLES:
                marked[attr] = "handle"
        for index, base in enumerate(("Calls", "AsyncCalls")):
            body = []
            for method in sorted(set(declared) | set(marked)):
                spec = declared[method][1] if method in declared else None
                kind = marked.get(method, "remote")
                text, names = _method((namespace, cls), method, kind, spec, bool(index))
                body.append(text)
                used |= names
                used_remote |= names if spec else set()
            awaited = " (awaited)" if index else ""
            doc = f'    """``{module}.{name}``{awaited}, over a client."""'
            bases = f"{mixin.__name__}, {base}" if mixin else base
            head = f"class {_names_of(name)[index]}({bases}):\n{doc}\n\n"
            classes.append(head + "\n\n".join(body))
        for n, (_, spec) in sorted(declared.items()):
            methods.append(f'    "{namespace}.{n}": ("{name}", "{n}"),')
            if spec.writes:
                writes.append(f'    "{namespace}.{n}",')
    generated = {h for pair in HANDLES.values() for h in pair} - set(NAMES)
    imports: dict[bool, dict[str, list[str]]] = {True: {}, False: {}}  # at run time?
    for name in sorted(used - _BUILTIN - generated):
        if name not in NAMES:
            raise ValueError(
                f"a declared signature uses {name!r}: add it to NAMES (a model module)"
            )
        at_run_time = name in used_remote or NAMES[name] == "collections.abc"
        imports[at_run_time].setdefault(NAMES[name], []).append(name)
    runtime, typing_only = (
        [f"{indent}from {module} import {', '.join(names)}" for module, names in found.items()]
        for found, indent in ((imports[True], ""), (imports[False], "    "))
    )
    kinds = [f'    "{name}": ({", ".join(_names_of(name))}),' for _, _, name in FACES]
    header = [
        "# GENERATED by `python -m engramdb.client.generate` from the @remote declarations of",
        "# the embedded implementations. Do not edit: change the implementation, then regenerate.",
        '"""The sync and asyncio client classes (generated)."""',
        "",
        "from __future__ import annotations",
        "",
        *(["import builtins"] if "builtins" in used else []),
        "from typing import TYPE_CHECKING, Any",
        f"from engramdb.client._handles import AsyncCalls, BUILT, Calls, {', '.join(mixins)}",
        *runtime,
        "",
        "if TYPE_CHECKING:",
        *typing_only,
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
    kinds_table = [
        "# embedded type -> the class (or factory) each face has for it: (sync, asyncio)",
        "KINDS: dict[str, tuple[Any, Any]] = {",
        *kinds,
        "    **BUILT,",
        "}",
    ]
    text = "\n\n\n".join(classes)
    return "\n".join(header) + "\n\n\n" + text + "\n\n\n" + "\n".join(kinds_table) + "\n"


def _formatted(source: str) -> str:
    """The source with imports sorted and formatted as ruff does (the project's style)."""
    import shutil
    import subprocess

    ruff = shutil.which("ruff") or ""
    for command in (["check", "--select", "I", "--fix-only"], ["format"]) if ruff else ():
        source = subprocess.run(
            [ruff, *command, "--stdin-filename", str(OUTPUT), "-"],
            input=source, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    return source


def main(argv: list[str] | None = None) -> int:
    source = _formatted(generate())
    if "--check" not in (sys.argv[1:] if argv is None else argv):
        OUTPUT.write_text(source)
        print(f"wrote {OUTPUT}")
    elif (OUTPUT.read_text() if OUTPUT.exists() else "") != source:
        print(f"{OUTPUT} is stale: run python -m engramdb.client.generate", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
