"""Heads on top of an encoder: MLP projector, DINO prototype head, and the AB action decoder.

:class:`ABDecoder` is ``phi_AB(x, a)`` of the method (docs/method.md): the relative box of an
action becomes query tokens (:class:`BoxTokens`) that cross-attend to the spatial tokens of the
current view. Box convention: ``(x0, y0, x1, y1)`` of the next view in the frame of the current
one (``vpt_env.core.boxes.relative_box``), so the current view is ``(0, 0, 1, 1)``.

Example:
    >>> import torch
    >>> dec = ABDecoder(token_dim=32, dim=16, depth=1, heads=2, out_dim=8)
    >>> dec(torch.randn(2, 16, 32), torch.rand(2, 5, 4)).shape
    torch.Size([2, 5, 8])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ABDecoder", "BoxTokens", "DINOHead", "MLPHead"]


def _check_positive(**values: int) -> None:
    for key, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive int, got {value!r}")


def _init_linear(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class MLPHead(nn.Module):
    """``layers`` linear layers with LayerNorm + GELU between them (no BatchNorm).

    Args:
        in_dim: input width.
        hidden_dim: width of the hidden layers.
        out_dim: output width.
        layers: number of linear layers (1 is a single linear map).
        norm: LayerNorm after each hidden linear layer.

    Shape:
        ``(..., in_dim) -> (..., out_dim)``.
    """

    def __init__(
        self, in_dim: int, hidden_dim: int, out_dim: int, layers: int = 2, norm: bool = True
    ) -> None:
        _check_positive(in_dim=in_dim, hidden_dim=hidden_dim, out_dim=out_dim, layers=layers)
        super().__init__()
        mods: list[nn.Module] = []
        width = in_dim
        for _ in range(layers - 1):
            mods.append(nn.Linear(width, hidden_dim))
            mods += [nn.LayerNorm(hidden_dim), nn.GELU()] if norm else [nn.GELU()]
            width = hidden_dim
        mods.append(nn.Linear(width, out_dim))
        self.net = nn.Sequential(*mods)
        _init_linear(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class DINOHead(nn.Module):
    """DINO projection head: MLP -> L2-normalised bottleneck -> weight-normalised prototypes.

    The prototype layer has no bias and unit-norm rows (the weight is normalised in ``forward``,
    DINO's ``norm_last_layer`` with the gain fixed to 1), so logits are cosine similarities in
    ``[-1, 1]``; the losses apply the temperatures.

    Args:
        in_dim: input width.
        num_prototypes: K.
        hidden_dim: width of the MLP's hidden layers.
        bottleneck_dim: width of the normalised embedding the prototypes live in.
        layers: linear layers of the MLP (DINO uses 3, without norms).

    Shape:
        ``(..., in_dim) -> (..., K)``.
    """

    def __init__(
        self,
        in_dim: int,
        num_prototypes: int,
        hidden_dim: int = 512,
        bottleneck_dim: int = 128,
        layers: int = 3,
    ) -> None:
        _check_positive(num_prototypes=num_prototypes, bottleneck_dim=bottleneck_dim)
        super().__init__()
        self.mlp = MLPHead(in_dim, hidden_dim, bottleneck_dim, layers=layers, norm=False)
        self.prototype_weight = nn.Parameter(torch.empty(num_prototypes, bottleneck_dim))
        nn.init.trunc_normal_(self.prototype_weight, std=0.02)

    @property
    def prototypes(self) -> Tensor:
        """The unit-norm prototype matrix ``(K, bottleneck_dim)`` (ABDINO's ``psi_AB``)."""
        return F.normalize(self.prototype_weight, dim=-1)

    def embed(self, x: Tensor) -> Tensor:
        """The L2-normalised bottleneck embedding ``(..., bottleneck_dim)``."""
        return F.normalize(self.mlp(x), dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        return self.embed(x) @ self.prototypes.T


class BoxTokens(nn.Module):
    """Embed relative boxes as query tokens.

    Features per box: the 4 coordinates and ``log w``, ``log h``, each with Fourier features
    ``sin/cos(2**k * pi * v)`` for ``k < num_frequencies``; then an MLP to ``num_tokens * dim``.

    Args:
        dim: token width.
        num_tokens: tokens per box.
        num_frequencies: Fourier octaves per scalar.

    Shape:
        ``(..., 4) -> (..., num_tokens, dim)``.
    """

    def __init__(self, dim: int, num_tokens: int = 1, num_frequencies: int = 6) -> None:
        _check_positive(dim=dim, num_tokens=num_tokens, num_frequencies=num_frequencies)
        super().__init__()
        self.dim, self.num_tokens = dim, num_tokens
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(num_frequencies), persistent=False)
        self.mlp = MLPHead(6 * (2 * num_frequencies + 1), dim, num_tokens * dim, layers=2)

    def forward(self, boxes: Tensor) -> Tensor:
        if boxes.shape[-1] != 4:
            raise ValueError(f"boxes must have shape (..., 4), got {tuple(boxes.shape)}")
        # Clamp so a degenerate box gives a finite log size instead of -inf.
        wh = (boxes[..., 2:] - boxes[..., :2]).clamp_min(1e-4).log()
        feats = fourier_features(torch.cat([boxes, wh], dim=-1), self.freqs)
        return self.mlp(feats).unflatten(-1, (self.num_tokens, self.dim))


def fourier_features(values: Tensor, freqs: Tensor) -> Tensor:
    """``(..., n) -> (..., n * (2F + 1))``: the values, then sin and cos of each times each frequency."""
    angles = (values.unsqueeze(-1) * freqs).flatten(-2)
    return torch.cat([values, angles.sin(), angles.cos()], dim=-1)


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, memory: Tensor) -> Tensor:
        """``x (N, Q, d)`` attends to ``memory (N, T, d)``, independently for each of the N rows."""
        n, nq, d = x.shape
        q = self.q(x).view(n, nq, self.heads, -1).transpose(1, 2)
        k, v = self.kv(memory).view(n, memory.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, nq, d))


class _DecoderBlock(nn.Module):
    """Pre-norm: self-attention within one action's queries, cross-attention to the image, MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm_self = nn.LayerNorm(dim)
        self.self_attn = _Attention(dim, heads)
        self.norm_cross = nn.LayerNorm(dim)
        self.norm_memory = nn.LayerNorm(dim)
        self.cross_attn = _Attention(dim, heads)
        self.norm_mlp = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, q: Tensor, memory: Tensor) -> Tensor:
        b, p, n, d = q.shape
        # Self-attention over the n queries of one action: rows (b, p) never see each other.
        x = self.norm_self(q).reshape(b * p, n, d)
        q = q + self.self_attn(x, x).view(b, p, n, d)
        # Cross-attention: all P*n queries of image b share image b's keys/values (no mask needed),
        # and the keys/values are computed once per image, not once per action.
        x = self.norm_cross(q).reshape(b, p * n, d)
        q = q + self.cross_attn(x, self.norm_memory(memory)).view(b, p, n, d)
        return q + self.mlp(self.norm_mlp(q))


class ABDecoder(nn.Module):
    """``phi_AB(x, a)``: box-token queries cross-attend to a view's spatial tokens.

    Each action's relative box becomes ``num_box_tokens`` query tokens; pre-norm blocks let them
    self-attend within their action and cross-attend to the view's tokens (plus a position
    embedding of each token's cell centre in the same frame as the boxes); the output is the mean
    of an action's query tokens, projected to ``out_dim``. Actions and images never interact, so
    the result for ``(b, p)`` equals running the decoder on image ``b`` and action ``p`` alone.

    Args:
        token_dim: width of the encoder tokens.
        dim: decoder width.
        depth: number of blocks.
        heads: attention heads (must divide ``dim``).
        out_dim: output width (default ``dim``).
        num_box_tokens: query tokens per action.
        mlp_ratio: MLP hidden width over ``dim``.

    Shape:
        tokens: ``(B, T, token_dim)`` on a square ``sqrt(T) x sqrt(T)`` grid in row-major order.
        relative: ``(B, P, 4)``, or ``(B, *, 4)`` with any extra leading action dims.
        output: ``(B, P, out_dim)`` (``(B, *, out_dim)``).
    """

    def __init__(
        self,
        token_dim: int,
        dim: int = 128,
        depth: int = 2,
        heads: int = 4,
        out_dim: int | None = None,
        num_box_tokens: int = 1,
        mlp_ratio: float = 4.0,
    ) -> None:
        out_dim = dim if out_dim is None else out_dim
        _check_positive(token_dim=token_dim, dim=dim, depth=depth, heads=heads, out_dim=out_dim)
        if dim % heads:
            raise ValueError(f"heads must divide dim, got dim={dim}, heads={heads}")
        super().__init__()
        self.token_dim = token_dim
        self.box_tokens = BoxTokens(dim, num_box_tokens)
        self.token_proj = nn.Linear(token_dim, dim)
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(4), persistent=False)
        self.token_pos = nn.Linear(2 * (2 * 4 + 1), dim)
        self.blocks = nn.ModuleList(_DecoderBlock(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, out_dim)
        _init_linear(self)

    def _cell_positions(self, t: int, ref: Tensor) -> Tensor:
        side = math.isqrt(t)
        if side * side != t:
            raise ValueError(f"tokens must form a square grid (T = side**2), got T={t}")
        c = (torch.arange(side, device=ref.device, dtype=ref.dtype) + 0.5) / side
        cy, cx = torch.meshgrid(c, c, indexing="ij")  # row-major: y is the slow axis
        return fourier_features(torch.stack([cx.flatten(), cy.flatten()], dim=-1), self.freqs.to(ref.dtype))

    def forward(self, tokens: Tensor, relative: Tensor) -> Tensor:
        if tokens.dim() != 3 or tokens.shape[-1] != self.token_dim:
            raise ValueError(f"tokens must have shape (B, T, {self.token_dim}), got {tuple(tokens.shape)}")
        if relative.dim() < 2 or relative.shape[0] != tokens.shape[0] or relative.shape[-1] != 4:
            raise ValueError(
                f"relative must have shape (B={tokens.shape[0]}, P, 4), got {tuple(relative.shape)}"
            )
        lead = relative.shape[:-1]
        rel = relative.reshape(lead[0], -1, 4)
        memory = self.token_proj(tokens) + self.token_pos(self._cell_positions(tokens.shape[1], tokens))
        q = self.box_tokens(rel)  # (B, P, n, dim)
        for block in self.blocks:
            q = block(q, memory)
        return self.out(self.norm(q).mean(dim=2)).reshape(*lead, -1)
