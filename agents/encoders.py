"""Image encoders: one interface for a small CNN, a ResNet-18 and a ViT (SB3 adapter: :mod:`agents.sb3`).

Every encoder maps views ``(B, 3, S, S)`` float in ``[0, 1]`` to an :class:`EncoderOutput`: a pooled
vector ``(B, D)`` and spatial tokens ``(B, T, D)`` (feature-map cells of a CNN, patch tokens of a
ViT; the AB decoder cross-attends to them). Encoders normalise with the ImageNet mean/std
themselves, so callers never do, and carry a JSON-able ``config`` that rebuilds them with
:func:`make_encoder`.

Example:
    >>> import torch
    >>> enc = make_encoder("cnn", width=8)
    >>> out = enc(torch.rand(2, 3, 32, 32))
    >>> tuple(out.pooled.shape), tuple(out.tokens.shape)
    ((2, 32), (2, 16, 32))
    >>> make_encoder(**enc.config).config == enc.config
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ENCODER_NAMES",
    "Encoder",
    "EncoderOutput",
    "ResNet18",
    "SmallCNN",
    "ViT",
    "make_encoder",
]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class EncoderOutput(NamedTuple):
    """What every encoder returns.

    Attributes:
        pooled: ``(B, D)`` one vector per view (CLS token, or mean of the feature-map cells).
        tokens: ``(B, T, D)`` spatial tokens in row-major grid order (``T = h * w``).
    """

    pooled: Tensor
    tokens: Tensor


class Encoder(nn.Module):
    """Base class: ImageNet normalisation, input checks, ``dim`` and ``config``.

    Subclasses implement :meth:`encode` on normalised inputs.

    Attributes:
        dim: D, the width of both the pooled vector and the tokens.
        config: JSON-able kwargs (with ``"name"``) such that ``make_encoder(**config)`` rebuilds
            the same architecture.
    """

    dim: int

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.config = dict(config)
        # Non-persistent: constants, so they stay out of checkpoints and EMA copies them anyway.
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> EncoderOutput:
        """Encode views.

        Args:
            x: views, float in ``[0, 1]``.

        Returns:
            :class:`EncoderOutput` with ``pooled (B, D)`` and ``tokens (B, T, D)``.

        Shape:
            x: ``(B, 3, H, W)``.
        """
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"x must have shape (B, 3, H, W), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"x must be float in [0, 1] (divide uint8 pixels by 255), got {x.dtype}")
        return self.encode((x - self.mean) / self.std)

    def encode(self, x: Tensor) -> EncoderOutput:  # pragma: no cover - abstract
        """Encode ImageNet-normalised views ``(B, 3, H, W)``."""
        raise NotImplementedError


def _group_norm(channels: int, groups: int) -> nn.GroupNorm:
    # gcd keeps any width legal (tiny test widths included) without a divisibility rule.
    return nn.GroupNorm(math.gcd(groups, channels), channels)


def _cells_to_tokens(fmap: Tensor) -> Tensor:
    return fmap.flatten(2).transpose(1, 2)  # (B, C, h, w) -> (B, h*w, C), row-major


def _check_positive(**values: int) -> None:
    for key, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive int, got {value!r}")


class _ConvStage(nn.Module):
    """Strided conv (the downsampling) then one residual conv, both GroupNorm + GELU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.down = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), _group_norm(cout, 8), nn.GELU()
        )
        self.res = nn.Sequential(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), _group_norm(cout, 8), nn.GELU())

    def forward(self, x: Tensor) -> Tensor:
        x = self.down(x)
        return x + self.res(x)


class SmallCNN(Encoder):
    """A small GroupNorm CNN that is fast on CPU (~0.6M parameters at width 32).

    Stage ``i`` has ``width * min(2**i, 4)`` channels. The stem and then the first stages have stride
    2 until the total stride is ``downsample``, so by default 32x32 views give 4x4 tokens and 64x64
    views 8x8. Striding in the stem keeps the wide layers on small maps: about 30-60 ms for 256
    views of 32 px on a 2-core CPU at width 32, several times faster than a stride-1 stem.

    Args:
        width: channels of the stem and first stage; ``D = width * min(2**(depth-1), 4)``.
        depth: number of stages.
        downsample: total stride, a power of two at most ``2**(depth+1)`` (16: 4x4 tokens at 64 px).
        token_grid: if set, average-pool the feature map to ``token_grid x token_grid`` cells so the
            token count is fixed whatever the input size.
    """

    def __init__(
        self, width: int = 32, depth: int = 4, downsample: int = 8, token_grid: int | None = None
    ) -> None:
        _check_positive(width=width, depth=depth, downsample=downsample)
        n_down = int(math.log2(downsample))
        if 2**n_down != downsample or n_down > depth + 1:
            raise ValueError(
                f"downsample must be a power of two in [1, {2 ** (depth + 1)}], got {downsample}"
            )
        if token_grid is not None:
            _check_positive(token_grid=token_grid)
        super().__init__(
            dict(name="cnn", width=width, depth=depth, downsample=downsample, token_grid=token_grid)
        )
        chans = [width * min(2**i, 4) for i in range(depth)]
        strides = [2 if i < n_down else 1 for i in range(depth + 1)]  # stem first
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, strides[0], 1, bias=False), _group_norm(width, 8), nn.GELU()
        )
        self.stages = nn.Sequential(
            *(_ConvStage(chans[i - 1] if i else width, chans[i], strides[i + 1]) for i in range(depth))
        )
        self.pool = nn.AdaptiveAvgPool2d(token_grid) if token_grid is not None else nn.Identity()
        self.dim = chans[-1]
        self.norm = nn.LayerNorm(self.dim)

    def encode(self, x: Tensor) -> EncoderOutput:
        tokens = _cells_to_tokens(self.pool(self.stages(self.stem(x))))
        return EncoderOutput(self.norm(tokens.mean(1)), tokens)


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, norm: Callable[[int], nn.Module]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = norm(cout)
        self.shortcut = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), norm(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(Encoder):
    """ResNet-18 (BasicBlock, [2, 2, 2, 2]); tokens are the last feature-map cells.

    Args:
        norm: ``"batch"`` (standard; breaks bit-exact DDP equivalence) or ``"group"`` (GroupNorm, 32 groups).
        small_input: 3x3 stride-1 stem without max-pool (CIFAR style, total stride 8: 32 px -> 4x4
            tokens) instead of the 7x7 stride-2 stem + max-pool (total stride 32).
        width: channels of the first stage (64 in the standard net); D = ``8 * width``.
    """

    def __init__(self, norm: str = "batch", small_input: bool = True, width: int = 64) -> None:
        if norm not in ("batch", "group"):
            raise ValueError(f"norm must be one of 'batch', 'group', got {norm!r}")
        _check_positive(width=width)
        super().__init__({"name": "resnet18", "norm": norm, "small_input": bool(small_input), "width": width})

        def make_norm(c: int) -> nn.Module:
            return nn.BatchNorm2d(c) if norm == "batch" else _group_norm(c, 32)

        if small_input:
            self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), make_norm(width), nn.ReLU())
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(3, width, 7, 2, 3, bias=False), make_norm(width), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
            )
        blocks, cin = [], width
        for i in range(4):
            cout = width * 2**i
            blocks.append(_BasicBlock(cin, cout, 1 if i == 0 else 2, make_norm))
            blocks.append(_BasicBlock(cout, cout, 1, make_norm))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.dim = cin
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def encode(self, x: Tensor) -> EncoderOutput:
        tokens = _cells_to_tokens(self.blocks(self.stem(x)))
        return EncoderOutput(tokens.mean(1), tokens)


class _Block(nn.Module):
    """Pre-norm transformer block with fused scaled-dot-product attention."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        x = x + self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x))


class ViT(Encoder):
    """Vision transformer: patch embedding, CLS token, learned position embedding, pre-norm blocks.

    The position embedding is learned for an ``img_size`` grid and bicubic-interpolated to the grid
    of any other input size. ``pooled`` is the CLS token, ``tokens`` the patch tokens (both after
    the final LayerNorm).

    Args:
        patch_size: side of the square patches; inputs must be multiples of it.
        dim: token width D.
        depth: number of transformer blocks.
        heads: attention heads (must divide ``dim``).
        mlp_ratio: MLP hidden width over ``dim``.
        img_size: input side the position embedding is learned for.
        name: the ``config`` name (``"vit"``, or the preset that built it).
    """

    def __init__(
        self,
        patch_size: int = 8,
        dim: int = 192,
        depth: int = 12,
        heads: int = 3,
        mlp_ratio: float = 4.0,
        img_size: int = 64,
        name: str = "vit",
    ) -> None:
        _check_positive(patch_size=patch_size, dim=dim, depth=depth, heads=heads, img_size=img_size)
        if dim % heads:
            raise ValueError(f"heads must divide dim, got dim={dim}, heads={heads}")
        if img_size % patch_size:
            raise ValueError(f"img_size must be a multiple of patch_size={patch_size}, got {img_size}")
        if mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be > 0, got {mlp_ratio}")
        super().__init__(
            {
                "name": name,
                "patch_size": patch_size,
                "dim": dim,
                "depth": depth,
                "heads": heads,
                "mlp_ratio": float(mlp_ratio),
                "img_size": img_size,
            }
        )
        self.dim, self.patch_size, self.grid = dim, patch_size, img_size // patch_size
        self.patch_embed = nn.Conv2d(3, dim, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.cls_pos = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid * self.grid, dim))
        self.blocks = nn.Sequential(*(_Block(dim, heads, mlp_ratio) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        for p in (self.cls_token, self.cls_pos, self.pos_embed):
            nn.init.trunc_normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def position_embedding(self, h: int, w: int) -> Tensor:
        """The patch position embedding ``(1, h * w, D)`` for an ``h x w`` patch grid."""
        if (h, w) == (self.grid, self.grid):
            return self.pos_embed
        pos = self.pos_embed.reshape(1, self.grid, self.grid, self.dim).permute(0, 3, 1, 2)
        pos = F.interpolate(pos, size=(h, w), mode="bicubic", align_corners=False)
        return pos.permute(0, 2, 3, 1).reshape(1, h * w, self.dim)

    def encode(self, x: Tensor) -> EncoderOutput:
        if x.shape[2] % self.patch_size or x.shape[3] % self.patch_size:
            raise ValueError(
                f"input size must be a multiple of patch_size={self.patch_size}, got {tuple(x.shape)}"
            )
        patches = self.patch_embed(x)
        h, w = patches.shape[2:]
        patches = _cells_to_tokens(patches) + self.position_embedding(h, w)
        cls = (self.cls_token + self.cls_pos).expand(x.shape[0], -1, -1)
        out = self.norm(self.blocks(torch.cat([cls, patches], dim=1)))
        return EncoderOutput(out[:, 0], out[:, 1:])


def _vit_preset(name: str, dim: int, heads: int) -> Callable[..., ViT]:
    def build(**kwargs: Any) -> ViT:
        kwargs = {"patch_size": 8, "dim": dim, "depth": 12, "heads": heads, **kwargs, "name": name}
        return ViT(**kwargs)

    return build


_REGISTRY: dict[str, Callable[..., Encoder]] = {
    "cnn": SmallCNN,
    "resnet18": ResNet18,
    "vit": ViT,
    "vit_tiny": _vit_preset("vit_tiny", 192, 3),
    "vit_small": _vit_preset("vit_small", 384, 6),
}
#: The names :func:`make_encoder` accepts.
ENCODER_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def make_encoder(name: str, **kwargs: Any) -> Encoder:
    """Build an encoder by name: ``"cnn"``, ``"resnet18"``, ``"vit"``, ``"vit_tiny"``, ``"vit_small"``.

    Args:
        name: the architecture; presets (``vit_tiny``: dim 192, 12 blocks, 3 heads; ``vit_small``:
            dim 384, 12 blocks, 6 heads; patch 8) accept overrides such as ``depth=2``.
        **kwargs: constructor arguments of the class.

    Returns:
        The encoder; ``make_encoder(**enc.config)`` rebuilds it.
    """
    if name not in _REGISTRY:
        raise ValueError(f"name must be one of {list(ENCODER_NAMES)}, got {name!r}")
    return _REGISTRY[name](**kwargs)

