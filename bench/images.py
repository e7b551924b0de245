"""Grids of images as PNG bytes, drawn with Pillow and numpy (no matplotlib, so it is quick and
light to import): the sample grids of the run reports (:mod:`bench.report`) and the ``grids/``
pictures of the VAE bundle."""

from __future__ import annotations

import io
import math

import numpy as np

from bench.errors import BenchError

GAP = 2  # grey pixels between and around the images
GAP_GREY = 128


def image_grid(images: np.ndarray, columns: int | None = None, cell: int = 56, stretch: bool = False,
               limit: int | None = None) -> bytes:
    """A PNG of the first ``limit`` images side by side (all when None), ``columns`` to a row
    (default ceil(sqrt(n)), never more than n), each enlarged by an integer factor to about
    ``cell`` pixels, with 2-pixel grey gaps.

    Accepts (n, H, W), (n, H, W, C) and (n, C, H, W) with C in 1, 3, 4. Values in [0, 1] are
    drawn as they are (0 black, 1 white, clipped outside, NaN black), so faint generations look
    faint; ``stretch=True`` scales the grid's finite values to [0, 1] by its own min and max first
    (NaN drawn as the minimum)."""
    from PIL import Image

    x = np.asarray(images, dtype=np.float64)
    if limit is not None:
        x = x[:limit]
    if x.ndim == 4 and x.shape[1] in (1, 3, 4) and x.shape[-1] not in (1, 3, 4):
        x = np.moveaxis(x, 1, -1)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim not in (3, 4) or len(x) == 0 or (x.ndim == 4 and x.shape[-1] not in (3, 4)):
        raise BenchError(f"cannot draw images of shape {tuple(np.shape(images))}: expected (n, H, W), "
                         "(n, H, W, C) or (n, C, H, W) with C in 1, 3, 4 and n >= 1")
    if stretch:
        finite = x[np.isfinite(x)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        x = (np.nan_to_num(x, nan=lo) - lo) / (hi - lo if hi > lo else 1.0)
    else:
        x = np.nan_to_num(x)
    pixels = np.round(np.clip(x, 0.0, 1.0) * 255).astype(np.uint8)
    n, h, w = pixels.shape[:3]
    cols = min(int(columns or math.ceil(math.sqrt(n))), n)
    rows = math.ceil(n / cols)
    scale = max(1, round(cell / max(h, w)))
    pixels = pixels.repeat(scale, axis=1).repeat(scale, axis=2)
    shape = (rows * (h * scale + GAP) + GAP, cols * (w * scale + GAP) + GAP) + pixels.shape[3:]
    canvas = np.full(shape, GAP_GREY, dtype=np.uint8)
    if canvas.ndim == 3 and canvas.shape[-1] == 4:
        canvas[..., 3] = 255
    for i in range(n):
        r, c = divmod(i, cols)
        top, left = GAP + r * (h * scale + GAP), GAP + c * (w * scale + GAP)
        canvas[top : top + h * scale, left : left + w * scale] = pixels[i]
    buf = io.BytesIO()
    Image.fromarray(canvas).save(buf, format="PNG")  # uint8: L, RGB or RGBA by the last axis
    return buf.getvalue()
