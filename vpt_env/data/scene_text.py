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

``words`` chooses which of size, colour and position a caption names (the
class always): with random per-object colours, colour words let a
caption-image model match colours instead of shapes, so
``words=("position",)`` or ``()`` gives captions without that shortcut
(``"a digit 3 at the top left and a digit 7"`` / ``"a digit 3 and a digit 7"``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["CAPTION_WORDS", "HUE_NAMES", "caption", "colour_name", "position_name"]

#: Hue names and the upper end of their hue range, in degrees.
HUE_NAMES: tuple[tuple[str, float], ...] = (
    ("red", 15), ("orange", 45), ("yellow", 70), ("green", 160), ("cyan", 200),
    ("blue", 260), ("purple", 290), ("pink", 345), ("red", 360),
)
#: The optional attributes a caption can name, in the order they appear.
CAPTION_WORDS: tuple[str, ...] = ("size", "colour", "position")
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
    words: Sequence[str] = CAPTION_WORDS,
) -> str:
    """The caption of one scene.

    Args:
        names: class name of each object, in drawing order.
        colours: ``(M, 3)`` object colours in [0, 1].
        boxes: ``(M, 4)`` normalised boxes ``(x0, y0, x1, y1)``.
        size_range: the scenes' ``object_size`` range (longer box side over the scene side).
        grey: name colours ``black``/``grey``/``white`` only.
        words: which of :data:`CAPTION_WORDS` to name besides the class.

    Returns:
        One sentence-like caption, without a final full stop.
    """
    unknown = set(words) - set(CAPTION_WORDS)
    if unknown:
        raise ValueError(f"words: unknown {sorted(unknown)}; accepted: {list(CAPTION_WORDS)}")
    lo, hi = size_range
    parts = []
    for name, rgb, box in zip(names, colours, boxes, strict=True):
        said: list[str] = []
        if "size" in words:
            longer = max(box[2] - box[0], box[3] - box[1])
            t = (longer - lo) / (hi - lo) if hi > lo else 0.5
            said += ["small"] if t < 1 / 3 else ["large"] if t > 2 / 3 else []
        if "colour" in words:
            said.append(colour_name(rgb, grey))
        phrase = " ".join([*said, name])
        part = f"{_article(phrase)} {phrase}"
        if "position" in words:
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            part += " " + position_name(float(cx), float(cy))
        parts.append(part)
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]
