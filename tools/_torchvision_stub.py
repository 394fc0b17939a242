"""A stand-in for torchvision, for the developer tools that build reference models in torch.

timm, transformers and open_clip import torchvision for data transforms these tools never
use; where it is missing (or was built for another torch) ``install()`` puts a module on
``sys.meta_path`` whose every attribute is a harmless class, before those imports.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import subprocess
import sys
import types


class _AnyAttr(type):
    """Classes whose every attribute is its own name (``InterpolationMode.NEAREST``, ...)."""

    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return name


class _Stub(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _AnyAttr(name, (), {"__init__": lambda self, *a, **k: None})


class TorchvisionStub(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Satisfies ``import torchvision[.anything]`` with ``_Stub`` modules."""

    def find_spec(self, fullname, path, target=None):
        if fullname == "torchvision" or fullname.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _Stub(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


def torchvision_works() -> bool:
    """Whether torchvision imports (probed in a subprocess: a broken one can crash torch)."""
    probe = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True)
    return probe.returncode == 0


def install() -> None:
    """Puts the stand-in before every other finder (call before timm/transformers import)."""
    if not any(isinstance(f, TorchvisionStub) for f in sys.meta_path):
        sys.meta_path.insert(0, TorchvisionStub())
