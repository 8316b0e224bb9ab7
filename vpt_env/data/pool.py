"""ImagePool: every image of a source resident on one device, ready for batched rendering."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vpt_env.data.annotations import Annotations

__all__ = ["ImagePool"]

#: Pyramid levels stop when an image's shorter side would fall below this.
MIN_LEVEL_SIDE = 8
MAX_LEVELS = 10


class ImagePool:
    """Images of any sizes, packed into flat channels-last buffers with pyramids.

    Each image is stored at full resolution (level 0) and at successive
    half resolutions (area-averaged), all packed row-major into one
    ``(P, 3)`` buffer, so that a batch of views of different images and scales
    is rendered by one gather (see :func:`vpt_env.core.render.render`). The
    pyramid is what makes the bilinear render antialiased: a view samples the
    level whose resolution is closest to, and not below, its own.

    Args:
        images: RGB uint8 arrays ``(H, W, 3)``.
        annotations: per-image annotations (length ``len(images)``); None for none.
        device: where the buffers live.
        keep_float: also keep a float32 copy of the buffer (used by the
            bilinear render; nearest reads uint8 only).

    Attributes:
        image_hw: ``(N, 2)`` float32 heights and widths at full resolution.
        level_hw: ``(N, L, 2)`` int64 heights and widths of every level
            (levels past an image's last repeat its last level).
        level_offset: ``(N, L)`` int64 start of every level in the buffers.
        num_levels: ``(N,)`` int64 levels each image has.
        pixels: ``(P, 3)`` uint8 buffer.
        pixels_float: ``(P, 3)`` float32 buffer in ``[0, 1]`` or None.
        pixel_pairs: ``(P, 6)`` overlapping view of the float buffer: row ``k``
            holds pixels ``k`` and ``k + 1`` (one gather fetches both).
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        annotations: Annotations | None = None,
        device: torch.device | str = "cpu",
        keep_float: bool = True,
    ) -> None:
        if len(images) == 0:
            raise ValueError("images must hold at least one image")
        self.device = torch.device(device)
        levels_all: list[list[Tensor]] = []
        for i, im in enumerate(images):
            if not (isinstance(im, np.ndarray) and im.dtype == np.uint8 and im.ndim == 3
                    and im.shape[2] == 3):
                raise TypeError(f"images[{i}] must be a uint8 (H, W, 3) array")
            t = torch.from_numpy(np.array(im, copy=True)).permute(2, 0, 1)[None].float()
            levels = [t]
            while len(levels) < MAX_LEVELS and min(levels[-1].shape[-2:]) // 2 >= MIN_LEVEL_SIDE:
                prev = levels[-1]
                # Odd sizes: replicate the last row/column so that level L pixel k
                # averages exactly full-resolution pixels [k 2^L, (k + 1) 2^L).
                pad = (0, prev.shape[-1] % 2, 0, prev.shape[-2] % 2)
                if any(pad):
                    prev = F.pad(prev, pad, mode="replicate")
                levels.append(F.avg_pool2d(prev, 2))
            levels_all.append(levels)
        n = len(images)
        depth = max(len(lv) for lv in levels_all)
        hw = torch.zeros(n, depth, 2, dtype=torch.int64)
        offset = torch.zeros(n, depth, dtype=torch.int64)
        chunks: list[Tensor] = []
        pos = 0
        for i, levels in enumerate(levels_all):
            for j in range(depth):
                lv = levels[min(j, len(levels) - 1)]
                h, w = lv.shape[-2:]
                hw[i, j] = torch.tensor((h, w))
                if j < len(levels):
                    offset[i, j] = pos
                    chunks.append(lv[0].permute(1, 2, 0).reshape(-1, 3))
                    pos += h * w
                else:
                    offset[i, j] = offset[i, len(levels) - 1]
        flat = torch.cat(chunks)
        self.pixels = flat.round().clamp(0, 255).to(torch.uint8).to(self.device)
        self.pixels_float: Tensor | None = None
        self.pixel_pairs: Tensor | None = None
        if keep_float:
            # One spare pixel at the end, so every pixel has a right neighbour.
            padded = torch.cat((flat / 255.0, torch.zeros(1, 3))).to(self.device)
            self.pixels_float = padded[:-1]
            self.pixel_pairs = padded.as_strided((padded.shape[0] - 1, 6), (3, 1))
        self.level_hw = hw.to(self.device)
        self.level_offset = offset.to(self.device)
        self.num_levels = torch.tensor([len(lv) for lv in levels_all], device=self.device)
        self.image_hw = hw[:, 0].float().to(self.device)
        self.annotations = annotations if annotations is not None else Annotations.empty(n)
        if len(self.annotations) != n:
            raise ValueError(
                f"annotations has {len(self.annotations)} entries for {n} images"
            )
        self.annotations = self.annotations.to(self.device)

    def __len__(self) -> int:
        return int(self.image_hw.shape[0])

    def image(self, index: int, level: int = 0) -> np.ndarray:
        """Image ``index`` at pyramid ``level`` as an RGB uint8 ``(H, W, 3)`` array."""
        if not 0 <= index < len(self):
            raise IndexError(f"index must be in [0, {len(self)}), got {index}")
        level = min(level, int(self.num_levels[index]) - 1)
        h, w = (int(v) for v in self.level_hw[index, level])
        start = int(self.level_offset[index, level])
        return self.pixels[start : start + h * w].reshape(h, w, 3).cpu().numpy()

    @property
    def nbytes(self) -> int:
        """Bytes held on the device."""
        n = self.pixels.numel()
        return n + (4 * n if self.pixels_float is not None else 0)
