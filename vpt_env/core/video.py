"""Moves in time on video sources: from a frame to a nearby frame of the same clip."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["VideoIndex", "move_in_time"]


class VideoIndex(NamedTuple):
    """Where each image (frame) of a pool sits in its clip.

    Attributes:
        order: ``(N,)`` image index at each position of the (clip, frame) order.
        rank: ``(N,)`` position of each image in that order.
        first: ``(N,)`` position of the first frame of each image's clip.
        last: ``(N,)`` position of the last frame of each image's clip.
    """

    order: Tensor
    rank: Tensor
    first: Tensor
    last: Tensor

    @classmethod
    def from_clips(cls, clips: Tensor, frames: Tensor) -> VideoIndex | None:
        """Build the index from per-image clip and frame indices (None unless every image is a frame)."""
        if clips.numel() == 0 or bool((clips < 0).any()):
            return None
        n = clips.shape[0]
        key = clips.to(torch.float64) * (frames.max().to(torch.float64) + 1) + frames.to(torch.float64)
        order = torch.argsort(key, stable=True)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(n, device=order.device)
        sorted_clips = clips[order]
        start = torch.ones(n, dtype=torch.bool, device=clips.device)
        start[1:] = sorted_clips[1:] != sorted_clips[:-1]
        pos = torch.arange(n, device=clips.device)
        first_sorted = torch.cummax(torch.where(start, pos, torch.zeros_like(pos)), 0).values
        end = torch.ones(n, dtype=torch.bool, device=clips.device)
        end[:-1] = start[1:]
        last_sorted = torch.flip(
            torch.cummin(torch.flip(torch.where(end, pos, torch.full_like(pos, n)), [0]), 0).values, [0]
        )
        return cls(order=order, rank=rank, first=first_sorted[rank], last=last_sorted[rank])


def move_in_time(image: Tensor, move: Tensor, index: VideoIndex, max_step: int) -> Tensor:
    """The frame ``round(move * max_step)`` frames away in the same clip, clamped to the clip.

    Args:
        image: ``(B,)`` int64 current frames (image indices).
        move: ``(B,)`` float in ``[-1, 1]``.
        index: the pool's :class:`VideoIndex`.
        max_step: largest move, in frames.

    Returns:
        ``(B,)`` int64 new image indices.
    """
    pos = index.rank[image] + torch.round(move * max_step).long()
    pos = torch.minimum(torch.maximum(pos, index.first[image]), index.last[image])
    return index.order[pos]
