#!/usr/bin/env python3
"""Writes the retrieval benchmark's corpus: the docstrings of the Python standard library.

One document per public module, class and function of the standard library (top-level modules
and the public submodules of its packages), each holding what `python3 -m pydoc` shows of it:
a title line, the signature, the docstring, and for a class its own methods' signatures and
docstrings. Documents are written to corpus.jsonl beside this script, one JSON object a line:
{"id": "collections.Counter", "kind": "class", "text": "..."}, sorted by id.

Deterministic for a given Python build: modules are imported in sorted order, nothing random is
used, and memory addresses in signatures are blanked. The committed corpus.jsonl was made with
the Python version recorded in corpus.meta.json.

    python3 bench/retrieval/make_corpus.py
"""

import contextlib
import importlib
import inspect
import io
import json
import pathlib
import pkgutil
import re
import sys
import warnings

HERE = pathlib.Path(__file__).resolve().parent

# Packages and modules left out: GUIs and demos (they open windows or need a display), tests,
# tooling with its own private API, and modules that print or start things on import.
SKIP = {
    "antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "test", "tests",
    "lib2to3", "ensurepip", "pydoc_data", "distutils", "msilib", "venv", "__main__",
    "xxsubtype", "xxlimited", "xxlimited_35", "nturl2path", "sre_compile", "sre_constants",
    "sre_parse", "winreg", "winsound", "msvcrt", "_winapi", "nt",
}
# The longest docstring kept per member; a few generated docstrings run to many pages.
MAX_DOC_CHARS = 6000

ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def skipped(name):
    parts = name.split(".")
    return any(p in SKIP or p.startswith("_") for p in parts)


def module_names():
    names = set()
    for top in sorted(sys.stdlib_module_names):
        if skipped(top):
            continue
        module = load(top)
        if module is None:
            continue
        names.add(top)
        path = getattr(module, "__path__", None)
        if path is None:
            continue
        for info in pkgutil.walk_packages(path, prefix=top + ".", onerror=lambda _: None):
            if not skipped(info.name):
                names.add(info.name)
    return sorted(names)


def load(name):
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            return importlib.import_module(name)
    except BaseException:  # noqa: BLE001 - any failing import just leaves the module out
        return None


def own_doc(obj):
    doc = obj.__doc__ if isinstance(getattr(obj, "__doc__", None), str) else None
    if not doc:
        return ""
    return inspect.cleandoc(doc)[:MAX_DOC_CHARS].strip()


def signature(obj):
    """The signature, with only plain literal defaults shown: a default such as `os.environ`
    would otherwise copy this machine's environment into the corpus."""
    try:
        sig = inspect.signature(obj)
    except Exception:  # noqa: BLE001 - some C signatures do not evaluate; pydoc shows (...)
        return "(...)"
    params = []
    for p in sig.parameters.values():
        d = p.default
        plain = d is p.empty or d is None or isinstance(d, (bool, int, float)) or (
            isinstance(d, (str, bytes)) and len(d) <= 40 and "/" not in str(d))
        params.append(p if plain else p.replace(default=Elided()))
    return ADDRESS.sub("", str(sig.replace(parameters=params, return_annotation=sig.empty)))


class Elided:
    def __repr__(self):
        return "..."


def public(module):
    """The module's public names, as `from module import *` would give them, in order."""
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in vars(module) if not n.startswith("_")]
    return sorted(n for n in names if isinstance(n, str) and not n.startswith("_"))


def defined_in(obj, module_name):
    """Whether `obj` belongs to `module_name`: defined there, or in its C accelerator
    (`heapq.heappush` is `_heapq.heappush`)."""
    home = getattr(obj, "__module__", None)
    if not isinstance(home, str):
        return False
    return home == module_name or (
        home.startswith("_") and "." not in home and home.lstrip("_") == module_name)


def generic(attr, doc):
    """A docstring every class inherits from `object` (`Initialize self.  See help(...)`)."""
    base = getattr(object, attr, None)
    return base is not None and doc == own_doc(base)


def class_text(module_name, name, cls):
    bases = ", ".join(b.__qualname__ for b in cls.__bases__ if b is not object)
    head = f"class {name}({bases})" if bases else f"class {name}"
    lines = [f"{head} in module {module_name}", ""]
    doc = own_doc(cls)
    if doc:
        lines += [doc, ""]
    methods = []
    for attr, value in sorted(vars(cls).items()):
        if attr.startswith("_") and attr != "__init__":
            continue
        func = value.__func__ if isinstance(value, (classmethod, staticmethod)) else value
        if isinstance(func, property):
            mdoc = own_doc(func)
            if mdoc:
                methods.append(f"{attr}\n    {mdoc.replace(chr(10), chr(10) + '    ')}")
            continue
        if not callable(func):
            continue
        mdoc = own_doc(func)
        if not mdoc or generic(attr, mdoc):
            continue
        methods.append(f"{attr}{signature(func)}\n    {mdoc.replace(chr(10), chr(10) + '    ')}")
    if methods:
        lines += ["Methods defined here:", ""] + methods
    return "\n".join(lines).strip()


def documents():
    docs = {}
    for mname in module_names():
        module = load(mname)
        if module is None:
            continue
        doc = own_doc(module)
        if doc:
            docs[mname] = ("module", f"module {mname}\n\n{doc}")
        for name in public(module):
            obj = getattr(module, name, None)
            if obj is None or not defined_in(obj, mname):
                continue
            qual = f"{mname}.{name}"
            if inspect.isclass(obj):
                text = class_text(mname, name, obj)
                if own_doc(obj) or "Methods defined here" in text:
                    docs[qual] = ("class", text)
            elif inspect.isfunction(obj) or inspect.isbuiltin(obj):
                fdoc = own_doc(obj)
                if fdoc:
                    docs[qual] = ("function", f"{name}{signature(obj)} in module {mname}\n\n{fdoc}")
    return docs


def main():
    docs = documents()
    with open(HERE / "corpus.jsonl", "w", encoding="utf-8") as out:
        for doc_id in sorted(docs):
            kind, text = docs[doc_id]
            out.write(json.dumps({"id": doc_id, "kind": kind, "text": text}, ensure_ascii=False))
            out.write("\n")
    meta = {
        "python": sys.version.split()[0],
        "documents": len(docs),
        "bytes": sum(len(t.encode()) for _, t in docs.values()),
    }
    (HERE / "corpus.meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
