"""What a source holds: counts, sizes, annotation coverage, skipped files, and a contact sheet."""

from __future__ import annotations

import textwrap
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from vpt_env.data.annotations import Annotation
from vpt_env.data.sources import SubsetSource, _iter_readable, resolve_source
from vpt_env.progress import Progress

__all__ = ["SourceSummary", "contact_sheet", "summarize_source"]

_PALETTE = [
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
]


@dataclass
class SourceSummary:
    """Statistics of a source (see :func:`summarize_source`)."""

    source: str
    images_listed: int
    images_tried: int
    images_read: int
    skipped: dict[str, int] = field(default_factory=dict)
    height: dict[str, float] = field(default_factory=dict)
    width: dict[str, float] = field(default_factory=dict)
    classes: int = 0
    with_label: int = 0
    with_captions: int = 0
    with_boxes: int = 0
    boxes: int = 0
    captions: int = 0
    video_frames: int = 0

    def table(self) -> str:
        """A plain-text table of the statistics."""
        n = max(self.images_read, 1)
        rows = [
            ("source", self.source),
            (
                "images listed / tried / read",
                f"{self.images_listed} / {self.images_tried} / {self.images_read}",
            ),
            ("skipped", ", ".join(f"{k}: {v}" for k, v in self.skipped.items()) or "none"),
            ("height min / median / max", "{min:.0f} / {median:.0f} / {max:.0f}".format(**self.height)),
            ("width min / median / max", "{min:.0f} / {median:.0f} / {max:.0f}".format(**self.width)),
            ("classes", str(self.classes)),
            ("with a label", f"{self.with_label} ({self.with_label / n:.0%})"),
            (
                "with captions",
                f"{self.with_captions} ({self.with_captions / n:.0%}), {self.captions} captions",
            ),
            ("with boxes", f"{self.with_boxes} ({self.with_boxes / n:.0%}), {self.boxes} boxes"),
            ("video frames", str(self.video_frames)),
        ]
        w = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)

    def to_dict(self) -> dict[str, Any]:
        """The statistics as a JSON-ready dict."""
        return asdict(self)


def summarize_source(
    source: Any, max_images: int | None = None, strict: bool = False, keep: int = 16, progress: bool = False
) -> tuple[SourceSummary, list[tuple[np.ndarray, Annotation]], list[str]]:
    """Read (up to ``max_images`` of) a source and describe it (``progress``: show the reading on
    stderr, :class:`~vpt_env.progress.Progress`).

    Returns:
        The :class:`SourceSummary`, the first ``keep`` readable images with
        their annotations (for :func:`contact_sheet`), and the source's class names.
    """
    src = resolve_source(source, strict=strict)
    listed = len(src)
    head = SubsetSource(src, range(listed if max_images is None else min(max_images, listed)))
    heights, widths, kept = [], [], []
    counts = dict.fromkeys(("label", "captions", "boxes", "n_boxes", "n_captions", "video"), 0)
    bar = Progress(len(head), "reading images", unit="images", enabled=progress)
    with warnings.catch_warnings(record=True) as caught, bar:
        warnings.simplefilter("always")
        for _, arr, ann in _iter_readable(head, strict, 1, 1 << 30, bar):
            heights.append(arr.shape[0])
            widths.append(arr.shape[1])
            counts["label"] += ann.label is not None
            counts["captions"] += bool(ann.captions)
            counts["n_captions"] += len(ann.captions)
            counts["boxes"] += len(ann.boxes) > 0
            counts["n_boxes"] += len(ann.boxes)
            counts["video"] += ann.clip is not None
            if len(kept) < keep:
                kept.append((arr, ann))
    skipped = dict(getattr(src, "skipped", {}) or {})
    for w in caught:
        msg = str(w.message)
        if msg.startswith("skipped ") and "unreadable image" in msg:
            skipped["unreadable image"] = skipped.get("unreadable image", 0) + int(msg.split()[1])
    if not heights:
        raise ValueError(f"source {source!r} holds no readable image ({len(head)} tried)")

    def stats(v: list[int]) -> dict[str, float]:
        return {"min": float(np.min(v)), "median": float(np.median(v)), "max": float(np.max(v))}

    classes = list(getattr(src, "classes", []))
    summary = SourceSummary(
        source=str(source),
        images_listed=listed,
        images_tried=len(head),
        images_read=len(heights),
        skipped=skipped,
        height=stats(heights),
        width=stats(widths),
        classes=len(classes),
        with_label=counts["label"],
        with_captions=counts["captions"],
        with_boxes=counts["boxes"],
        boxes=counts["n_boxes"],
        captions=counts["n_captions"],
        video_frames=counts["video"],
    )
    return summary, kept, classes


def contact_sheet(
    samples: list[tuple[np.ndarray, Annotation]], classes: list[str], tile: int = 192, cols: int = 4
) -> Image.Image:
    """Images with their boxes (labelled by class) and first caption drawn, in a grid."""
    if not samples:
        raise ValueError("samples is empty")
    rows = (len(samples) + cols - 1) // cols
    cap_h = 40
    sheet = Image.new("RGB", (cols * (tile + 6) + 6, rows * (tile + cap_h + 6) + 6), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for k, (arr, ann) in enumerate(samples):
        img = Image.fromarray(arr)
        img.thumbnail((tile, tile))
        d = ImageDraw.Draw(img)
        for (x0, y0, x1, y1), lab in zip(ann.boxes.tolist(), ann.box_labels.tolist(), strict=True):
            colour = _PALETTE[lab % len(_PALETTE)]
            box = (x0 * img.width, y0 * img.height, x1 * img.width - 1, y1 * img.height - 1)
            d.rectangle(box, outline=colour, width=2)
            name = classes[lab] if 0 <= lab < len(classes) else str(lab)
            d.text((box[0] + 2, box[1] + 1), name, fill=colour)
        x = 6 + (k % cols) * (tile + 6)
        y = 6 + (k // cols) * (tile + cap_h + 6)
        sheet.paste(img, (x, y))
        parts = []
        if ann.label is not None:
            parts.append(f"[{classes[ann.label] if 0 <= ann.label < len(classes) else ann.label}]")
        if ann.clip is not None:
            parts.append(f"clip {ann.clip} t={ann.frame}")
        if ann.captions:
            parts.append(ann.captions[0])
        text = "\n".join(textwrap.wrap(" ".join(parts), width=tile // 6)[:3])
        draw.text((x, y + tile + 2), text, fill=(220, 220, 220))
    return sheet
