"""Template captions of the embedded scenes: objects, colours, sizes and positions.

A caption lists the objects in drawing order, each as ``a [size] colour
class position``, for example ``"a red sneaker at the top left, a small blue
digit 3 in the centre and a large green zebra on the right"``:

* colour: the hue name of the object's colour (``red``, ``orange``,
  ``yellow``, ``green``, ``cyan``, ``blue``, ``purple``, ``pink``), after
  ``dark`` when its luminance is below 0.3 and ``light`` above 0.7; in
  grayscale scenes ``black``, ``grey`` or ``white``;
* size: ``small`` in the lowest third of the object-size range, ``large`` in
  the highest third, nothing in between;
* position: the cell of a 3x3 grid holding the box centre (``at the top
  left``, ``at the top``, ``on the left``, ``in the centre``, ...).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["HUE_NAMES", "caption", "colour_name", "position_name"]

#: Hue names and the upper end of their hue range, in degrees.
HUE_NAMES: tuple[tuple[str, float], ...] = (
    ("red", 15), ("orange", 45), ("yellow", 70), ("green", 160), ("cyan", 200),
    ("blue", 260), ("purple", 290), ("pink", 345), ("red", 360),
)
_ROWS = ("top", "", "bottom")
_COLS = ("left", "", "right")


def colour_name(rgb: np.ndarray, grey: bool = False) -> str:
    """Name of an RGB colour in [0, 1]: a hue name, maybe after dark/light, or black/grey/white."""
    r, g, b = (float(v) for v in rgb)
    hi, lo = max(r, g, b), min(r, g, b)
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    if grey or hi - lo < 0.08:
        return "black" if luma < 0.3 else "white" if luma > 0.7 else "grey"
    shade = "dark " if luma < 0.3 else "light " if luma > 0.7 else ""
    if hi == r:
        hue = (60 * (g - b) / (hi - lo)) % 360
    elif hi == g:
        hue = 60 * (b - r) / (hi - lo) + 120
    else:
        hue = 60 * (r - g) / (hi - lo) + 240
    return shade + next(name for name, end in HUE_NAMES if hue < end)


def position_name(cx: float, cy: float) -> str:
    """Where a point (normalised image coordinates) lies on a 3x3 grid, as a phrase."""
    row, col = _ROWS[min(2, int(cy * 3))], _COLS[min(2, int(cx * 3))]
    if row and col:
        return f"at the {row} {col}"
    if row:
        return f"at the {row}"
    return f"on the {col}" if col else "in the centre"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def caption(
    names: Sequence[str],
    colours: np.ndarray,
    boxes: np.ndarray,
    size_range: tuple[float, float],
    grey: bool = False,
) -> str:
    """The caption of one scene.

    Args:
        names: class name of each object, in drawing order.
        colours: ``(M, 3)`` object colours in [0, 1].
        boxes: ``(M, 4)`` normalised boxes ``(x0, y0, x1, y1)``.
        size_range: the scenes' ``object_size`` range (longer box side over the scene side).
        grey: name colours ``white``/``grey`` only.

    Returns:
        One sentence-like caption, without a final full stop.
    """
    lo, hi = size_range
    parts = []
    for name, rgb, box in zip(names, colours, boxes, strict=True):
        longer = max(box[2] - box[0], box[3] - box[1])
        t = (longer - lo) / (hi - lo) if hi > lo else 0.5
        words = ["small"] if t < 1 / 3 else ["large"] if t > 2 / 3 else []
        words += [colour_name(rgb, grey), name]
        phrase = " ".join(words)
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        parts.append(f"{_article(phrase)} {phrase} {position_name(float(cx), float(cy))}")
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]
