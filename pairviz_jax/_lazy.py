"""Lazy package attributes: a package names its public objects and their modules, and each
module is imported on first use, so ``visualize.py --help`` and ``train.py --help`` import no
JAX. The one place this project defers imports (``runs``, ``plotting``, ``batch``, ``train``,
``data``)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_attributes(
    package: str, where: Mapping[str, str], public: Iterable[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package`` (PEP 562).

    Args:
      package: the package's ``__name__``.
      where: public name -> the full name of the module that defines it; any other name is
        tried as a submodule of ``package``.
      public: the package's ``__all__``.

    Returns:
      ``(__getattr__, __dir__)``; an attribute once imported is kept in the package.
    """
    public = tuple(public)

    def __getattr__(name: str) -> Any:
        module = where.get(name, f"{package}.{name}")
        try:
            value = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if name in where or e.name != module:
                raise
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        if name in where:
            value = getattr(value, name)
        vars(sys.modules[package])[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(public))

    return __getattr__, __dir__
