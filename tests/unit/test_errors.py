"""Every exception class the package defines derives from its one root, EmotionTritonError (errors.py).

The modules are found with pkgutil, not listed. Those that import torch or transformers (the build's)
would take seconds to import, and a `__main__` runs when imported: their classes are read from the
source instead, by name.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import importlib.util
import inspect
import pkgutil
from pathlib import Path

import emotion_triton
from emotion_triton.errors import EmotionTritonError

HEAVY = {"torch", "transformers"}  # optional dependencies, seconds to import


def package_modules() -> dict[str, ast.Module]:
    """Every module of the package, by name, parsed (a package by its name plus ".__init__")."""
    modules = {}
    for info in pkgutil.walk_packages(emotion_triton.__path__, "emotion_triton."):
        origin = importlib.util.find_spec(info.name).origin
        modules[info.name + (".__init__" if info.ispkg else "")] = ast.parse(Path(origin).read_text(), origin)
    return modules


def top_level_imports(name: str, tree: ast.Module, package: set[str]) -> set[str]:
    """What `name` imports when it is imported (not in its functions): modules, the package's by full name."""
    here = name.rpartition(".")[0]
    found = set()
    for statement in tree.body:
        for node in ast.walk(statement) if isinstance(statement, ast.Try) else [statement]:
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's package, one level up per dot after the first
                    parent = here.rsplit(".", node.level - 1)[0]
                    base = f"{parent}.{base}" if base else parent
                found.add(base)
                found |= {f"{base}.{alias.name}" for alias in node.names}
    found = {f"{m}.__init__" if f"{m}.__init__" in package else m for m in found}
    return found


def heavy_modules(modules: dict[str, ast.Module]) -> set[str]:
    """The package's modules whose import imports torch or transformers, directly or through another."""
    package = set(modules)
    imports = {name: top_level_imports(name, tree, package) for name, tree in modules.items()}
    heavy = {name for name, found in imports.items() if {m.split(".")[0] for m in found} & HEAVY}
    while True:
        more = {name for name, found in imports.items() if found & heavy} - heavy
        if not more:
            return heavy
        heavy |= more


def test_every_exception_class_of_the_package_derives_from_the_root():
    modules = package_modules()
    heavy = heavy_modules(modules) | {name for name in modules if name.endswith(".__main__")}
    assert "emotion_triton.build.training" in heavy and "emotion_triton.serving.rollout" not in heavy
    rooted, exceptions, stray = set(), set(), []
    for name in sorted(set(modules) - heavy):
        name = name.removesuffix(".__init__")
        for cls in vars(importlib.import_module(name)).values():
            if inspect.isclass(cls) and issubclass(cls, BaseException) and cls.__module__ == name:
                exceptions.add(cls.__name__)
                if issubclass(cls, EmotionTritonError):
                    rooted.add(cls.__name__)
                else:
                    stray.append(f"{name}.{cls.__name__}{tuple(base.__name__ for base in cls.__bases__)}")
    # The heavy modules' classes by their bases' names, read from the source (an `as` name is the imported one).
    classes = []
    for name in sorted(heavy):
        aliases = {
            alias.asname: alias.name
            for node in ast.walk(modules[name])
            if isinstance(node, ast.ImportFrom)
            for alias in node.names
            if alias.asname
        }
        for node in ast.walk(modules[name]):
            if isinstance(node, ast.ClassDef):
                bases = {aliases.get(n, n) for b in node.bases for n in [getattr(b, "id", getattr(b, "attr", ""))]}
                classes.append((f"{name}.{node.name}", node.name, bases))
    exceptions |= {n for n, v in vars(builtins).items() if inspect.isclass(v) and issubclass(v, BaseException)}
    for _ in classes:  # a heavy module's class may derive from another one's: as many rounds as classes
        exceptions |= {cls for _, cls, bases in classes if bases & exceptions}
        rooted |= {cls for _, cls, bases in classes if bases & rooted}
    for where, cls, bases in classes:
        if cls in exceptions and cls not in rooted:
            stray.append(f"{where}{tuple(sorted(bases))}")
    assert not stray, f"exception classes outside emotion_triton.errors.EmotionTritonError: {stray}"
    # The walk saw the package's errors (a walk that found nothing would pass).
    assert {"ClientError", "Unhealthy", "TrainingPlanError"} <= rooted  # imported; the canary's fallback; read
