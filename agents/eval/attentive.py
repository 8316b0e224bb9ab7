"""Attention-pooling (MAP) probe over frozen spatial tokens.

A learned query cross-attends to the tokens (multi-head attention with one
query, then an MLP residual, as big_vision's ``MAPHead``) and a linear layer
classifies the pooled vector. Unlike a linear probe on a mean-pooled vector,
it can read a class carried by one token among many.

Example:
    >>> import torch
    >>> probe = AttentivePoolingProbe(dim=16, num_classes=5, heads=4)
    >>> tuple(probe(torch.randn(2, 9, 16)).shape)
    (2, 5)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from agents.eval.linear import check_targets, metric_name, score, train_probe
from vpt_env.progress import Progress

__all__ = ["AttentivePoolingProbe", "fit_attentive_probe"]


class AttentivePoolingProbe(nn.Module):
    """MAP head (one learned query, pre-norm attention, MLP residual) and a linear classifier.

    Args:
        dim: token width ``D`` (divisible by ``heads``).
        num_classes: ``K`` outputs.
        heads: attention heads.
        mlp_ratio: hidden width of the MLP, in multiples of ``dim``.

    Shape:
        ``forward(tokens (B, T, D)) -> logits (B, K)``.
    """

    def __init__(self, dim: int, num_classes: int, heads: int = 4, mlp_ratio: int = 4) -> None:
        super().__init__()
        sizes = {"dim": dim, "num_classes": num_classes, "heads": heads, "mlp_ratio": mlp_ratio}
        for name, v in sizes.items():
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if dim % heads:
            raise ValueError(f"heads must divide dim ({dim}), got {heads}")
        self.query = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.norm_in = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))
        self.norm_out = nn.LayerNorm(dim)
        self.classifier = nn.Linear(dim, num_classes)

    def pool(self, tokens: Tensor) -> Tensor:
        """The attention-pooled vector ``(B, D)`` of ``tokens (B, T, D)``."""
        kv = self.norm_in(tokens)
        x, _ = self.attn(self.query.expand(tokens.shape[0], -1, -1), kv, kv, need_weights=False)
        x = x + self.mlp(self.norm_mlp(x))
        return x[:, 0]

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.dim() != 3 or tokens.shape[-1] != self.query.shape[-1]:
            raise ValueError(f"tokens must be (B, T, {self.query.shape[-1]}), got {tuple(tokens.shape)}")
        return self.classifier(self.norm_out(self.pool(tokens)))


def fit_attentive_probe(
    train_tokens: Tensor,
    train_y: Tensor,
    test_tokens: Tensor,
    test_y: Tensor,
    multilabel: bool = False,
    epochs: int = 30,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    batch_size: int = 256,
    heads: int = 4,
    seed: int = 0,
    progress: Progress | None = None,
) -> dict[str, float]:
    """Fit an :class:`AttentivePoolingProbe` on frozen tokens and score it on the test tokens.

    Args:
        train_tokens, test_tokens: ``(N, T, D)`` and ``(M, T', D)`` tokens.
        train_y, test_y: int labels (-1 unknown), or multi-hot targets when ``multilabel``.
        multilabel: BCE and mAP instead of cross-entropy and top-1.
        epochs, lr, weight_decay, batch_size: AdamW schedule (constant learning rate).
        heads: attention heads (must divide ``D``).
        seed: initialisation and shuffling seed (the global RNG is untouched).
        progress: counts the epochs (:class:`~vpt_env.progress.Progress`).

    Returns:
        ``{"top1": test, "train_top1": train}`` or ``{"map": ..., "train_map": ...}``.
    """
    if train_tokens.dim() != 3 or test_tokens.dim() != 3 or train_tokens.shape[-1] != test_tokens.shape[-1]:
        raise ValueError(
            "train_tokens and test_tokens must be (N, T, D) and (M, T, D), got "
            f"{tuple(train_tokens.shape)} and {tuple(test_tokens.shape)}"
        )
    train_tokens, train_y, k = check_targets(
        train_tokens.float().cpu(), train_y.cpu(), test_tokens, test_y.cpu(), multilabel
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = AttentivePoolingProbe(train_tokens.shape[-1], k, heads=heads)
    train_probe(
        model, train_tokens, train_y, multilabel, epochs, lr, weight_decay, batch_size, seed, progress
    )
    name = metric_name(multilabel)
    with torch.no_grad():
        return {
            name: score(model(test_tokens.float().cpu()), test_y.cpu(), multilabel),
            f"train_{name}": score(model(train_tokens), train_y, multilabel),
        }
