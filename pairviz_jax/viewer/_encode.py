"""Encoding arrays and images for the pages: float16 base64, data URIs, inline assets."""

from __future__ import annotations

import base64
import functools
import io
import json
import os
from typing import Any

import numpy as np
from PIL import Image

_STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")


def f16(x: Any, *, scaled: bool = False) -> dict[str, Any]:
    """An array as little-endian float16 in base64: ``{"b64", "shape", "scale"}``.

    Args:
      x: any float array.
      scaled: store ``x / max|x|`` (and ``scale = max|x|``), so values far below float16's
        normal range (6e-5; the entries of C for 256 tokens are ~1e-5) keep 3 significant
        digits. The page multiplies back.
    """
    x = np.asarray(x, np.float32)
    scale = float(np.abs(x).max()) if scaled and x.size else 1.0
    if not np.isfinite(scale) or scale == 0.0:
        scale = 1.0
    data = (x / scale).astype("<f2").tobytes()
    return {"b64": base64.b64encode(data).decode("ascii"), "shape": list(x.shape), "scale": scale}


def image_bytes(image: np.ndarray, *, quality: int = 90) -> tuple[bytes, str]:
    """uint8 [H, W, 3] -> (encoded bytes, MIME type): PNG unless JPEG is much smaller."""
    pil = Image.fromarray(np.asarray(image, np.uint8))
    png = io.BytesIO()
    pil.save(png, format="PNG", optimize=False)
    jpg = io.BytesIO()
    pil.save(jpg, format="JPEG", quality=quality)
    if png.tell() <= 1.5 * jpg.tell():
        return png.getvalue(), "image/png"
    return jpg.getvalue(), "image/jpeg"


def data_uri(image: np.ndarray) -> str:
    """uint8 [H, W, 3] -> ``data:image/...;base64,...``."""
    data, mime = image_bytes(image)
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def resize_for_display(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """uint8 image at (height, width): Lanczos up or down (display only, not model input)."""
    pil = Image.fromarray(np.asarray(image, np.uint8))
    if pil.size == (width, height):
        return np.asarray(pil)
    return np.asarray(pil.resize((width, height), Image.LANCZOS))


@functools.lru_cache(maxsize=8)
def colormap_lut(name: str = "inferno") -> str:
    """A matplotlib colormap as 256 RGB triples, base64 (the pages draw with it)."""
    import matplotlib

    lut = matplotlib.colormaps[name].resampled(256)(np.linspace(0.0, 1.0, 256))[:, :3]
    return base64.b64encode(np.rint(lut * 255).astype(np.uint8).tobytes()).decode("ascii")


def script_json(obj: Any) -> str:
    """JSON that is safe inside ``<script>``: no ``</`` (so no ``</script>``), no ``<!--``."""
    text = json.dumps(obj, separators=(",", ":"), allow_nan=False)
    return text.replace("</", "<\\/").replace("<!--", "<\\u0021--")


@functools.lru_cache(maxsize=16)
def static(name: str) -> str:
    """The text of ``static/<name>`` (CSS and JS inlined into the pages)."""
    with open(os.path.join(_STATIC, name), encoding="utf-8") as f:
        return f.read()


def page(
    *, title: str, csp: str, body: str, scripts: list[str], styles: list[str], data: Any = None
) -> str:
    """A whole HTML document with inline styles and scripts (and the page data as JSON)."""
    from html import escape

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{escape(csp)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title>",
        *(f"<style>{static(s)}</style>" for s in styles),
        "</head><body>",
        body,
    ]
    if data is not None:
        parts.append(f'<script type="application/json" id="pv-data">{script_json(data)}</script>')
    parts += [f"<script>{static(s)}</script>" for s in scripts]
    parts.append("</body></html>")
    return "\n".join(parts)
