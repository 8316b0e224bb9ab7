"""Heads: MLP, DINO prototypes, box tokens and the AB decoder's independence structure."""

from __future__ import annotations

import math

import pytest
import torch

from agents.heads import ABDecoder, BoxTokens, DINOHead, MLPHead


def test_mlp_head_shapes_and_layers(device: torch.device) -> None:
    head = MLPHead(12, 20, 5, layers=3).to(device)
    assert head(torch.randn(4, 7, 12, device=device)).shape == (4, 7, 5)
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    norms = [m for m in head.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert [(m.in_features, m.out_features) for m in linears] == [(12, 20), (20, 20), (20, 5)]
    assert len(norms) == 2
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in head.modules())
    single = MLPHead(12, 20, 5, layers=1)
    assert [type(m) for m in single.net] == [torch.nn.Linear]
    with pytest.raises(ValueError, match="layers"):
        MLPHead(12, 20, 5, layers=0)


def test_dino_head_prototypes_and_logits(device: torch.device) -> None:
    torch.manual_seed(0)
    head = DINOHead(16, num_prototypes=10, hidden_dim=24, bottleneck_dim=8).to(device)
    protos = head.prototypes
    assert protos.shape == (10, 8)
    torch.testing.assert_close(protos.norm(dim=1), torch.ones(10, device=device))
    x = torch.randn(5, 16, device=device)
    logits = head(x)
    assert logits.shape == (5, 10)
    # Hand-computed: cosine between the MLP output and each raw prototype row.
    z = head.mlp(x)
    w = head.prototype_weight
    expected = torch.empty(5, 10, device=device)
    for i in range(5):
        for k in range(10):
            expected[i, k] = (z[i] * w[k]).sum() / (z[i].norm() * w[k].norm())
    torch.testing.assert_close(logits, expected)
    assert logits.abs().max() <= 1 + 1e-5
    # Scaling a raw prototype row does not change anything (the gain is fixed to 1).
    with torch.no_grad():
        head.prototype_weight[3] *= 7.0
    torch.testing.assert_close(head(x), logits)
    head(x).sum().backward()
    assert head.prototype_weight.grad is not None and head.prototype_weight.grad.abs().sum() > 0


def test_box_tokens() -> None:
    torch.manual_seed(0)
    bt = BoxTokens(16, num_tokens=3)
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.2, 0.1, 0.5, 0.9]])
    out = bt(boxes)
    assert out.shape == (2, 3, 16)
    assert not torch.allclose(out[0], out[1])
    assert bt(torch.rand(2, 4, 4, 4)).shape == (2, 4, 4, 3, 16)
    # A degenerate box still gives finite tokens.
    assert torch.isfinite(bt(torch.tensor([0.5, 0.5, 0.5, 0.5]))).all()
    # Features: 6 scalars (4 coordinates + log w, log h), each raw + sin/cos at 6 octaves.
    assert bt.mlp.net[0].in_features == 6 * (2 * 6 + 1)
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        bt(torch.rand(2, 3))


@pytest.fixture
def decoder() -> ABDecoder:
    torch.manual_seed(0)
    return ABDecoder(token_dim=24, dim=16, depth=2, heads=2, out_dim=8, num_box_tokens=2).eval()


def test_ab_decoder_shapes(decoder: ABDecoder, device: torch.device) -> None:
    decoder = decoder.to(device)
    tokens = torch.randn(3, 16, 24, device=device)
    assert decoder(tokens, torch.rand(3, 5, 4, device=device)).shape == (3, 5, 8)
    # Extra action dims (e.g. relative (B, V, V, 4) with view-i tokens) are kept.
    assert decoder(tokens, torch.rand(3, 2, 4, 4, device=device)).shape == (3, 2, 4, 8)
    assert ABDecoder(token_dim=24, dim=16, heads=2).out.out_features == 16  # out_dim defaults to dim


def test_ab_decoder_depends_on_the_box(decoder: ABDecoder) -> None:
    tokens = torch.randn(2, 16, 24)
    boxes = [[0.0, 0.0, 1.0, 1.0], [0.5, 0.5, 1.5, 1.5], [-0.3, 0.2, 0.2, 0.6]]
    rel = torch.tensor([boxes]).expand(2, -1, -1)
    out = decoder(tokens, rel)
    for b in range(2):
        for p in range(3):
            for q in range(p):
                assert (out[b, p] - out[b, q]).abs().max() > 1e-4, (b, p, q)


def test_ab_decoder_images_are_independent(decoder: ABDecoder) -> None:
    tokens = torch.randn(3, 16, 24)
    rel = torch.rand(3, 4, 4)
    out = decoder(tokens, rel)
    perturbed = tokens.clone()
    perturbed[0] += torch.randn(16, 24)
    out2 = decoder(perturbed, rel)
    torch.testing.assert_close(out2[1:], out[1:], rtol=0, atol=1e-6)
    assert (out2[0] - out[0]).abs().max() > 1e-4


def test_ab_decoder_actions_are_independent(decoder: ABDecoder) -> None:
    tokens = torch.randn(2, 16, 24)
    rel = torch.rand(2, 5, 4)
    out = decoder(tokens, rel)
    moved = rel.clone()
    moved[:, 2] = torch.tensor([0.1, 0.2, 0.9, 0.4])
    out2 = decoder(tokens, moved)
    keep = [0, 1, 3, 4]
    torch.testing.assert_close(out2[:, keep], out[:, keep], rtol=0, atol=1e-6)
    assert (out2[:, 2] - out[:, 2]).abs().max() > 1e-4
    # The batched result equals running each (image, action) on its own.
    for b in range(2):
        for p in range(5):
            alone = decoder(tokens[b : b + 1], rel[b : b + 1, p : p + 1])
            torch.testing.assert_close(alone[0, 0], out[b, p], rtol=1e-5, atol=1e-6)


def test_ab_decoder_sees_token_positions(decoder: ABDecoder) -> None:
    # Same token contents in another grid order must change the output: the decoder knows where
    # each token sits, which is what relates a relative box to image content.
    tokens = torch.randn(1, 16, 24)
    rel = torch.tensor([[[0.0, 0.0, 0.5, 0.5]]])
    flipped = tokens.view(1, 4, 4, 24).flip(2).reshape(1, 16, 24)
    assert (decoder(tokens, rel) - decoder(flipped, rel)).abs().max() > 1e-4
    # Hand-computed cell centres of a 2x2 grid, row-major (y slow).
    pos = decoder._cell_positions(4, tokens)
    centres = [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)]
    for t, (cx, cy) in enumerate(centres):
        assert pos[t, :2].tolist() == [cx, cy]
        assert math.isclose(pos[t, 2].item(), math.sin(math.pi * cx), abs_tol=1e-6)


def test_ab_decoder_gradients(decoder: ABDecoder) -> None:
    tokens = torch.randn(2, 9, 24, requires_grad=True)
    out = decoder.train()(tokens, torch.rand(2, 3, 4))
    out.square().sum().backward()
    assert tokens.grad is not None and tokens.grad.abs().sum() > 0
    for name, p in decoder.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_ab_decoder_bad_arguments(decoder: ABDecoder) -> None:
    with pytest.raises(ValueError, match="heads must divide dim"):
        ABDecoder(token_dim=8, dim=10, heads=4)
    with pytest.raises(ValueError, match="token_dim"):
        ABDecoder(token_dim=0)
    with pytest.raises(ValueError, match="square grid"):
        decoder(torch.randn(2, 15, 24), torch.rand(2, 3, 4))
    with pytest.raises(ValueError, match=r"\(B, T, 24\)"):
        decoder(torch.randn(2, 16, 12), torch.rand(2, 3, 4))
    with pytest.raises(ValueError, match="relative"):
        decoder(torch.randn(2, 16, 24), torch.rand(3, 3, 4))
