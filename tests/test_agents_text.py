"""Byte tokenizer, text transformer and the optional sentence-transformers wrapper."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from agents.text import ByteTokenizer, SentenceEncoder, TextTower, TextTransformer


def test_tokenizer_ids_and_mask_by_hand() -> None:
    ids, mask = ByteTokenizer(max_len=6)(["ab", ""])
    a, b = ord("a") + 3, ord("b") + 3
    assert ids.tolist() == [[1, a, b, 2, 0, 0], [1, 2, 0, 0, 0, 0]]
    assert mask.tolist() == [[True] * 4 + [False] * 2, [True] * 2 + [False] * 4]
    assert ids.dtype == torch.int64 and mask.dtype == torch.bool
    assert ByteTokenizer.vocab_size == 259


@pytest.mark.parametrize("text", ["a red kite", "", "Zürich – 東京 🐈", "x" * 30])
def test_tokenizer_round_trip(text: str) -> None:
    tok = ByteTokenizer(max_len=max(3, len(text.encode()) + 2))
    ids, mask = tok([text])
    assert tok.decode(ids) == [text]
    assert int(mask.sum()) == len(text.encode()) + 2


def test_tokenizer_truncation_keeps_eos_and_whole_characters() -> None:
    tok = ByteTokenizer(max_len=6)
    ids, mask = tok(["abcdefgh"])
    assert tok.decode(ids) == ["abcd"]
    assert ids[0, -1].item() == ByteTokenizer.EOS and bool(mask.all())
    # "é" is two bytes: four byte slots hold "a", "é", and half an "é", which is dropped.
    ids, mask = tok(["aééé"])
    assert tok.decode(ids) == ["aé"]
    assert ids[0, int(mask.sum()) - 1].item() == ByteTokenizer.EOS
    assert ids[0].tolist()[:4] == [1, ord("a") + 3, *(b + 3 for b in "é".encode())]


def test_tokenizer_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_len"):
        ByteTokenizer(max_len=2)
    with pytest.raises(TypeError, match="texts"):
        ByteTokenizer()("a single string")
    with pytest.raises(TypeError, match="texts"):
        ByteTokenizer()(["ok", 3])  # type: ignore[list-item]


def _model(pool: str = "eos", max_len: int = 32) -> TextTransformer:
    torch.manual_seed(0)
    return TextTransformer(dim=32, depth=2, heads=4, max_len=max_len, out_dim=12, pool=pool).eval()


@pytest.mark.parametrize("pool", ["eos", "mean"])
def test_text_transformer_padding_invariance(pool: str, device: torch.device) -> None:
    model = _model(pool).to(device)
    texts = ["a dog", "two cats and a kite"]
    with torch.no_grad():
        short = model(*ByteTokenizer(max_len=24)(texts, device=device))
        long = model(*ByteTokenizer(max_len=32)(texts, device=device))
        alone = model(*ByteTokenizer(max_len=32)(texts[:1], device=device))
    assert short.shape == (2, 12)
    torch.testing.assert_close(short, long, atol=1e-5, rtol=0)
    # A row does not depend on the other rows of its batch either.
    torch.testing.assert_close(alone[0], long[0], atol=1e-5, rtol=0)
    assert not torch.allclose(long[0], long[1], atol=1e-3)


def test_text_transformer_pools_at_eos() -> None:
    model = _model()
    ids, mask = ByteTokenizer(max_len=16)(["kite"])
    with torch.no_grad():
        out = model(ids, mask)
        # Change a token after EOS but mark it as real: the EOS row is no longer the last, output moves.
        moved = model(ids, mask | torch.arange(16).lt(7))
    assert not torch.allclose(out, moved)


def test_text_transformer_trains() -> None:
    model = _model()
    ids, mask = ByteTokenizer(max_len=16)(["red", "blue"])
    target = torch.randn(2, 12, generator=torch.Generator().manual_seed(1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for _ in range(3):
        loss = (model(ids, mask) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert model.token.weight.grad is not None and model.position.grad is not None


def test_text_transformer_bad_arguments() -> None:
    model = _model(max_len=8)
    ids, mask = ByteTokenizer(max_len=8)(["a"])
    with pytest.raises(ValueError, match="max_len"):
        model(*ByteTokenizer(max_len=9)(["a"]))
    with pytest.raises(ValueError, match="mask"):
        model(ids, mask.long())
    with pytest.raises(ValueError, match="ids"):
        model(ids[0], mask[0])
    with pytest.raises(ValueError, match="heads"):
        TextTransformer(dim=30, heads=4)
    with pytest.raises(ValueError, match="pool"):
        TextTransformer(dim=32, pool="cls")


def test_text_tower(device: torch.device) -> None:
    torch.manual_seed(0)
    tower = TextTower(out_dim=8, dim=16, depth=1, heads=2, max_len=16).to(device)
    out = tower(["a", "bb", "ccc"])
    assert out.shape == (3, 8) and out.device.type == device.type
    assert tower.out_dim == 8 and tower.tokenizer.max_len == tower.transformer.max_len == 16
    rebuilt = TextTower(out_dim=8, dim=16, depth=1, heads=2, max_len=16).to(device)
    rebuilt.load_state_dict(tower.state_dict())
    torch.testing.assert_close(rebuilt.eval()(["bb"]), tower.eval()(["bb"]))


def test_sentence_encoder_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # makes the import fail
    with pytest.raises(ImportError, match="pip install sentence-transformers"):
        SentenceEncoder()


def test_sentence_encoder_with_a_fake_package(monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeModel(torch.nn.Module):
        def __init__(self, name: str, device: str | None = None) -> None:
            super().__init__()
            self.name = name
            self.linear = torch.nn.Linear(3, 5)

        def get_sentence_embedding_dimension(self) -> int:
            return 5

        def encode(self, texts: list[str], convert_to_tensor: bool, show_progress_bar: bool) -> torch.Tensor:
            assert convert_to_tensor
            return self.linear(torch.ones(len(texts), 3))

    fake = types.ModuleType("sentence_transformers")
    fake.SentenceTransformer = FakeModel  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sentence_transformers", fake)
    enc = SentenceEncoder("fake-model")
    out = enc(["a", "b"])
    assert out.shape == (2, 5) and enc.out_dim == 5 and not out.requires_grad
    assert list(enc.parameters()) == [] and enc.state_dict() == {}
    assert all(not p.requires_grad for p in enc._model.parameters())
    with pytest.raises(TypeError, match="texts"):
        enc("a")
