"""Text towers for caption annotations (ABCLIP): a byte tokenizer and a small transformer.

No vocabulary file and no download: text is UTF-8 bytes plus three special
ids. :class:`SentenceEncoder` optionally wraps a frozen pre-trained
``sentence-transformers`` model instead.

Example:
    >>> import torch
    >>> from agents.text import ByteTokenizer, TextTower
    >>> tok = ByteTokenizer(max_len=8)
    >>> ids, mask = tok(["hi", "a cat on a mat"])
    >>> ids[0].tolist(), mask[0].tolist()
    ([1, 107, 108, 2, 0, 0, 0, 0], [True, True, True, True, False, False, False, False])
    >>> tok.decode(ids)
    ['hi', 'a cat ']
    >>> _ = torch.manual_seed(0)
    >>> tower = TextTower(out_dim=16, dim=32, depth=1, heads=2, max_len=8)
    >>> tower(["hi", "a cat on a mat"]).shape
    torch.Size([2, 16])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["ByteTokenizer", "SentenceEncoder", "TextTower", "TextTransformer"]


def _check_texts(texts: Sequence[str]) -> None:
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, got a single str (wrap it: [text])")
    for t in texts:
        if not isinstance(t, str):
            raise TypeError(f"texts must be a list of strings, got an item of type {type(t).__name__}")


class ByteTokenizer:
    """UTF-8 bytes as tokens: ``[BOS] + bytes + [EOS]``, padded with ``PAD`` to ``max_len``.

    Byte ``b`` has id ``b + 3``; ``PAD = 0``, ``BOS = 1``, ``EOS = 2``, so the
    vocabulary has ``256 + 3`` ids. Text longer than ``max_len - 2`` bytes is cut
    at a character boundary (never inside a multi-byte character) and still ends
    with ``EOS``.

    Args:
        max_len: tokens per text, ``BOS`` and ``EOS`` included (at least 3).
    """

    PAD = 0
    BOS = 1
    EOS = 2
    OFFSET = 3
    vocab_size = 256 + 3

    def __init__(self, max_len: int = 32) -> None:
        if not isinstance(max_len, int) or max_len < 3:
            raise ValueError(f"max_len must be an int >= 3 (BOS, one byte, EOS), got {max_len!r}")
        self.max_len = max_len

    def encode(self, text: str) -> list[int]:
        """The ids of one text, ``BOS`` and ``EOS`` included, without padding."""
        data = text.encode("utf-8")[: self.max_len - 2]
        # Re-encode after dropping a trailing partial character, so decode(encode(t)) is a prefix of t.
        data = data.decode("utf-8", errors="ignore").encode("utf-8")
        return [self.BOS, *(b + self.OFFSET for b in data), self.EOS]

    def __call__(
        self, texts: Sequence[str], device: torch.device | str | None = None
    ) -> tuple[Tensor, Tensor]:
        """Tokenise a batch of texts.

        Args:
            texts: the strings.
            device: where the tensors are made (default CPU).

        Returns:
            ``(ids, mask)``: int64 ids padded with ``PAD``, and a bool mask that is
            True on real tokens (``BOS`` through ``EOS``).

        Shape:
            ids: ``(N, max_len)``; mask: ``(N, max_len)``.
        """
        _check_texts(texts)
        ids = torch.full((len(texts), self.max_len), self.PAD, dtype=torch.int64)
        for row, text in enumerate(texts):
            tokens = self.encode(text)
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.int64)
        ids = ids.to(device) if device is not None else ids
        return ids, ids != self.PAD

    def decode(self, ids: Tensor) -> list[str]:
        """The texts of a batch of ids (special ids dropped).

        Shape:
            ids: ``(N, L)``; returns ``N`` strings.
        """
        if ids.ndim != 2:
            raise ValueError(f"ids must be (N, L), got shape {tuple(ids.shape)}")
        out = []
        for row in ids.tolist():
            data = bytes(i - self.OFFSET for i in row if self.OFFSET <= i < self.vocab_size)
            out.append(data.decode("utf-8", errors="replace"))
        return out


class TextTransformer(nn.Module):
    """A small pre-norm transformer encoder over token ids, pooled to one vector per text.

    Token embedding plus learned positions, ``depth`` pre-norm encoder layers
    that never attend to padding, a final LayerNorm, then pooling (the ``EOS``
    token, i.e. the last real token, by default; or the mean of the real tokens)
    and a linear map to ``out_dim``. The output of a text does not depend on how
    much padding follows it.

    Args:
        dim: model width.
        depth: number of encoder layers.
        heads: attention heads (must divide ``dim``).
        max_len: the longest sequence accepted (the size of the position table).
        out_dim: output size (default ``dim``).
        vocab_size: number of token ids (default: :class:`ByteTokenizer`'s).
        pool: ``"eos"`` or ``"mean"``.
        dropout: dropout inside the encoder layers.
    """

    def __init__(
        self,
        dim: int = 128,
        depth: int = 2,
        heads: int = 4,
        max_len: int = 32,
        out_dim: int | None = None,
        vocab_size: int = ByteTokenizer.vocab_size,
        pool: str = "eos",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"heads must divide dim, got dim={dim}, heads={heads}")
        if pool not in ("eos", "mean"):
            raise ValueError(f"pool must be 'eos' or 'mean', got {pool!r}")
        if depth < 1 or max_len < 1:
            raise ValueError(f"depth and max_len must be >= 1, got depth={depth}, max_len={max_len}")
        self.dim, self.max_len, self.pool = dim, max_len, pool
        self.out_dim = dim if out_dim is None else out_dim
        self.token = nn.Embedding(vocab_size, dim)
        self.position = nn.Parameter(torch.zeros(max_len, dim))
        layer = nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=4 * dim, dropout=dropout, activation="gelu",
            batch_first=True, norm_first=True,
        )  # fmt: skip
        # Nested tensors are unsupported with norm_first (and would warn); padding is masked instead.
        self.encoder = nn.TransformerEncoder(layer, depth, norm=nn.LayerNorm(dim), enable_nested_tensor=False)
        self.proj = nn.Linear(dim, self.out_dim)
        nn.init.normal_(self.token.weight, std=0.02)
        nn.init.normal_(self.position, std=0.02)

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        """Embed token ids.

        Args:
            ids: int64 token ids; rows are left-aligned (real tokens first, then padding).
            mask: True on real tokens; every row needs at least one.

        Returns:
            One vector per text.

        Shape:
            ids: ``(N, L)`` with ``L <= max_len``; mask: ``(N, L)``; returns ``(N, out_dim)``.
        """
        if ids.ndim != 2:
            raise ValueError(f"ids must be (N, L), got shape {tuple(ids.shape)}")
        if ids.shape[1] > self.max_len:
            raise ValueError(f"ids must have L <= max_len = {self.max_len} tokens, got {ids.shape[1]}")
        if mask.shape != ids.shape or mask.dtype != torch.bool:
            raise ValueError(
                f"mask must be a bool tensor of the shape of ids {tuple(ids.shape)}, "
                f"got {mask.dtype} {tuple(mask.shape)}"
            )
        x = self.token(ids) + self.position[: ids.shape[1]]
        x = self.encoder(x, src_key_padding_mask=~mask)
        if self.pool == "eos":
            last = (mask.sum(dim=1) - 1).clamp(min=0)
            pooled = x[torch.arange(x.shape[0], device=x.device), last]
        else:
            weights = mask.to(x.dtype).unsqueeze(-1)
            pooled = (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        return self.proj(pooled)


class TextTower(nn.Module):
    """A :class:`ByteTokenizer` and a :class:`TextTransformer`: strings in, embeddings out.

    Tokenises on every call (no cache); the tokenizer's ``max_len`` is the transformer's.

    Args:
        out_dim: output size.
        dim, depth, heads, max_len, pool, dropout: as in :class:`TextTransformer`.
    """

    def __init__(
        self,
        out_dim: int = 128,
        dim: int = 128,
        depth: int = 2,
        heads: int = 4,
        max_len: int = 32,
        pool: str = "eos",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.tokenizer = ByteTokenizer(max_len)
        self.transformer = TextTransformer(dim, depth, heads, max_len, out_dim, pool=pool, dropout=dropout)
        self.out_dim = out_dim

    def forward(self, texts: Sequence[str], device: torch.device | str | None = None) -> Tensor:
        """Embed strings.

        Args:
            texts: the strings.
            device: where the ids go (default: the device of this module's parameters).

        Shape:
            returns ``(N, out_dim)``.
        """
        device = self.transformer.position.device if device is None else device
        ids, mask = self.tokenizer(texts, device=device)
        return self.transformer(ids, mask)


class SentenceEncoder(nn.Module):
    """A frozen pre-trained ``sentence-transformers`` model as a text tower.

    The wrapped model is not registered as a submodule, so it stays out of
    ``state_dict``, ``parameters()`` and EMA copies (it never trains); put a
    trainable head after it. Needs ``pip install sentence-transformers`` and
    the model weights (downloaded by that package on first use, or cached).

    Args:
        model_name: a ``sentence-transformers`` model name or local path.
        device: where the model runs (default: its own choice).

    Raises:
        ImportError: ``sentence-transformers`` is not installed.
    """

    def __init__(
        self, model_name: str = "all-MiniLM-L6-v2", device: torch.device | str | None = None
    ) -> None:
        super().__init__()
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ImportError(
                "SentenceEncoder needs the optional package sentence-transformers: "
                "pip install sentence-transformers (or use TextTower, which needs nothing extra)"
            ) from exc
        model: Any = SentenceTransformer(model_name, device=None if device is None else str(device))
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        object.__setattr__(self, "_model", model)  # bypass nn.Module registration (see class docstring)
        self.model_name = model_name
        self.out_dim = int(model.get_sentence_embedding_dimension())

    @torch.no_grad()
    def forward(self, texts: Sequence[str], device: torch.device | str | None = None) -> Tensor:
        """Embed strings (no gradient).

        Shape:
            returns ``(N, out_dim)`` float32 on ``device`` (default: the model's device).
        """
        _check_texts(texts)
        emb = self._model.encode(list(texts), convert_to_tensor=True, show_progress_bar=False)
        emb = emb.detach().float()
        return emb.to(device) if device is not None else emb
