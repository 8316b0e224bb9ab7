"""Thin helpers over ``torch.distributed`` that are the identity in a single process.

Losses that need negatives from the whole global batch (SimCLR, CLIP) gather
embeddings with :func:`all_gather_with_grad`; running statistics (the DINO
centre) are averaged with :func:`all_reduce_mean`. Both return their input
unchanged when no process group is initialised, so the same loss code runs in
one process and under ``torchrun``.

Example:
    >>> import torch
    >>> from agents.distributed import all_gather_with_grad, is_distributed, rank, world_size
    >>> is_distributed(), rank(), world_size()
    (False, 0, 1)
    >>> x = torch.ones(2, 3, requires_grad=True)
    >>> all_gather_with_grad(x) is x
    True
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "all_gather_with_grad",
    "all_reduce_mean",
    "barrier",
    "init_from_env",
    "is_distributed",
    "is_main_process",
    "rank",
    "world_size",
]


def is_distributed() -> bool:
    """Whether a ``torch.distributed`` process group is initialised (with more than zero peers)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's global rank (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """The number of processes (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on rank 0 (and in a single process): the one that writes files and logs."""
    return rank() == 0


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward sums the incoming gradients over ranks and keeps the local slice."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor) -> Tensor:
        parts = [torch.empty_like(x) for _ in range(world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        n = grad.shape[0] // world_size()
        return grad[rank() * n : (rank() + 1) * n]


def all_gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from every rank along dim 0, with gradients that match one big process.

    The forward is ``dist.all_gather``; the local rows are this rank's ``x``.
    The backward all-reduces (sums) the gradient of the gathered tensor over
    ranks and returns this rank's rows. Why not just "gather, then put the
    local tensor back in its slot"? That keeps only the gradient of *this*
    rank's loss terms with respect to its rows and drops the terms in which
    other ranks' anchors use these rows as negatives. With the sum, the
    gradient this rank gets for its rows is that of the sum of all ranks'
    losses, and DDP's gradient averaging then reproduces the single-process
    gradient of a loss that is a mean over the global batch, whether each rank
    computes the loss for its local anchors against the gathered keys or the
    whole global loss. Every rank must call this the same number of times,
    in the same order, and run backward through it (a collective).

    Args:
        x: ``(N, ...)`` the local tensor; every rank must pass the same shape.

    Returns:
        ``(world * N, ...)``, rank ``r``'s rows at ``[r * N, (r + 1) * N)``; ``x``
        itself when not distributed.
    """
    if not is_distributed() or world_size() == 1:
        return x
    if not (torch.is_grad_enabled() and x.requires_grad):
        parts = [torch.empty_like(x) for _ in range(world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)
    return _GatherWithGrad.apply(x)


def all_reduce_mean(x: Tensor) -> Tensor:
    """The mean of ``x`` over ranks (a new tensor, no gradient); ``x`` when not distributed.

    Args:
        x: any tensor with the same shape on every rank.
    """
    if not is_distributed() or world_size() == 1:
        return x
    out = x.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / world_size()


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    if is_distributed():
        dist.barrier()


def init_from_env() -> bool:
    """Initialise the process group from ``torchrun``'s environment variables.

    Uses ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
    ``MASTER_PORT``; the backend is ``"nccl"`` when CUDA is available (and the
    process is bound to ``cuda:LOCAL_RANK``), ``"gloo"`` otherwise.

    Returns:
        True if a process group is (now) initialised, False when ``WORLD_SIZE``
        is unset (a plain single-process run).
    """
    if is_distributed():
        return True
    if "WORLD_SIZE" not in os.environ:
        return False
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend)
    return True
