"""Base losses (CLIP, SimCLR, DINO, supervised) against hand-written formulas, gradients and properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import agents.losses.dino as dino_module
from agents.losses import (
    clip_loss,
    clip_probs,
    dino_loss,
    multilabel_loss,
    nt_xent,
    simclr_probs,
    supervised_loss,
    teacher_probs,
    update_center,
)


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().double().numpy()


def _unit(v: np.ndarray) -> np.ndarray:
    return v / math.sqrt(sum(float(c) ** 2 for c in v))


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(sum(float(x) * float(y) for x, y in zip(_unit(a), _unit(b), strict=True)))


def _logsumexp(values: list[float]) -> float:
    m = max(values)
    return m + math.log(sum(math.exp(v - m) for v in values))


def _log_softmax(row: list[float]) -> list[float]:
    lse = _logsumexp(row)
    return [v - lse for v in row]


def _sgd_decreases(loss_fn, param: torch.Tensor, lr: float = 0.1) -> tuple[float, float]:
    before = loss_fn(param)
    before.backward()
    with torch.no_grad():
        param -= lr * param.grad
    return before.item(), loss_fn(param).item()


# ---------------------------------------------------------------- CLIP


def test_clip_loss_matches_hand_computation(device: torch.device) -> None:
    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    scale = 2.5
    a, b = _np(img), _np(txt)
    logits = [[scale * _cos(a[i], b[j]) for j in range(3)] for i in range(3)]
    i2t = -sum(_log_softmax(logits[i])[i] for i in range(3)) / 3
    t2i = -sum(_log_softmax([logits[i][j] for i in range(3)])[j] for j in range(3)) / 3
    got = clip_loss(img.to(device), txt.to(device), scale).item()
    assert got == pytest.approx(0.5 * (i2t + t2i), abs=1e-5)


def test_clip_loss_symmetric_and_scale_forms(device: torch.device) -> None:
    g = torch.Generator().manual_seed(1)
    img, txt = torch.randn(5, 8, generator=g).to(device), torch.randn(5, 8, generator=g).to(device)
    assert clip_loss(img, txt, 10.0).item() == pytest.approx(clip_loss(txt, img, 10.0).item(), abs=1e-6)
    log_scale = torch.tensor(math.log(10.0), device=device, requires_grad=True)
    loss = clip_loss(img, txt, log_scale.exp())
    assert loss.item() == pytest.approx(clip_loss(img, txt, 10.0).item(), abs=1e-5)
    loss.backward()
    assert log_scale.grad is not None and torch.isfinite(log_scale.grad)
    # Embeddings are normalised inside: rescaling rows changes nothing.
    rescaled = clip_loss(3 * img, 0.5 * txt, 10.0).item()
    assert rescaled == pytest.approx(clip_loss(img, txt, 10.0).item(), abs=1e-5)


def test_clip_loss_sgd_step_decreases() -> None:
    g = torch.Generator().manual_seed(2)
    img = torch.randn(6, 8, generator=g, requires_grad=True)
    txt = torch.randn(6, 8, generator=g)
    before, after = _sgd_decreases(lambda p: clip_loss(p, txt, 10.0), img)
    assert after < before


def test_clip_probs_matches_hand_computation(device: torch.device) -> None:
    g = torch.Generator().manual_seed(3)
    img, txt = torch.randn(2, 4, generator=g), torch.randn(3, 4, generator=g)
    got = _np(clip_probs(img.to(device), txt.to(device), torch.tensor(4.0, device=device)))
    a, b = _np(img), _np(txt)
    for i in range(2):
        row = [4.0 * _cos(a[i], b[j]) for j in range(3)]
        expected = [math.exp(v) for v in _log_softmax(row)]
        np.testing.assert_allclose(got[i], expected, atol=1e-6)


def test_clip_bad_arguments() -> None:
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match="text_emb"):
        clip_loss(x, torch.randn(2, 4), 1.0)
    with pytest.raises(ValueError, match="text_emb"):
        clip_loss(x, torch.randn(3, 5), 1.0)
    with pytest.raises(ValueError, match="image_emb"):
        clip_loss(torch.randn(3), x, 1.0)
    with pytest.raises(ValueError, match="logit_scale"):
        clip_loss(x, x, -1.0)
    with pytest.raises(ValueError, match="logit_scale"):
        clip_loss(x, x, torch.ones(2))
    with pytest.raises(TypeError, match="logit_scale"):
        clip_loss(x, x, "10")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="text_emb"):
        clip_probs(x, torch.randn(3, 5), 1.0)


# ---------------------------------------------------------------- SimCLR


def _nt_xent_loops(z: np.ndarray, t: float) -> float:
    b, v, _ = z.shape
    anchors = [(i, k) for i in range(b) for k in range(v)]
    total, count = 0.0, 0
    for ai, ak in anchors:
        others = [(i, k) for i, k in anchors if (i, k) != (ai, ak)]
        denom = _logsumexp([_cos(z[ai, ak], z[i, k]) / t for i, k in others])
        for pk in range(v):
            if pk != ak:
                total += -(_cos(z[ai, ak], z[ai, pk]) / t - denom)
                count += 1
    return total / count


def test_nt_xent_two_views_two_images_by_hand(device: torch.device) -> None:
    z = torch.tensor([[[1.0, 0.0], [0.8, 0.6]], [[0.0, 1.0], [-0.6, 0.8]]])
    t = 0.5
    # SimCLR's NT-Xent written out: anchor a has one positive and 2B - 2 = 2 negatives.
    zn = _np(z).reshape(4, 2)
    expected = 0.0
    for a in range(4):
        pos = a ^ 1  # views 2b and 2b + 1 belong to image b
        num = math.exp(_cos(zn[a], zn[pos]) / t)
        den = sum(math.exp(_cos(zn[a], zn[n]) / t) for n in range(4) if n != a)
        expected += -math.log(num / den) / 4
    assert nt_xent(z.to(device), temperature=t).item() == pytest.approx(expected, abs=1e-5)


def test_nt_xent_many_views_by_hand(device: torch.device) -> None:
    g = torch.Generator().manual_seed(4)
    z = torch.randn(3, 3, 5, generator=g)
    assert nt_xent(z.to(device), 0.2).item() == pytest.approx(_nt_xent_loops(_np(z), 0.2), abs=1e-5)


def test_nt_xent_invariances() -> None:
    g = torch.Generator().manual_seed(5)
    z = torch.randn(4, 3, 6, generator=g)
    base = nt_xent(z, 0.1).item()
    assert nt_xent(z[torch.tensor([2, 0, 3, 1])], 0.1).item() == pytest.approx(base, abs=1e-5)
    assert nt_xent(z[:, torch.tensor([1, 2, 0])], 0.1).item() == pytest.approx(base, abs=1e-5)
    assert nt_xent(7 * z, 0.1).item() == pytest.approx(base, abs=1e-5)


def test_nt_xent_sgd_step_decreases_and_is_finite() -> None:
    g = torch.Generator().manual_seed(6)
    z = torch.randn(4, 2, 8, generator=g, requires_grad=True)
    before, after = _sgd_decreases(lambda p: nt_xent(p, 0.5), z, lr=0.5)
    assert after < before
    assert torch.isfinite(z.grad).all()


def test_simclr_probs_by_hand() -> None:
    g = torch.Generator().manual_seed(7)
    q, k = torch.randn(2, 3, generator=g), torch.randn(4, 3, generator=g)
    got = _np(simclr_probs(q, k, 0.3))
    for i in range(2):
        row = [_cos(_np(q)[i], _np(k)[j]) / 0.3 for j in range(4)]
        np.testing.assert_allclose(got[i], [math.exp(v) for v in _log_softmax(row)], atol=1e-6)


def test_simclr_bad_arguments() -> None:
    with pytest.raises(ValueError, match="z must be"):
        nt_xent(torch.randn(4, 8))
    with pytest.raises(ValueError, match="V >= 2"):
        nt_xent(torch.randn(4, 1, 8))
    with pytest.raises(ValueError, match="temperature"):
        nt_xent(torch.randn(4, 2, 8), temperature=0.0)
    with pytest.raises(ValueError, match="z_keys"):
        simclr_probs(torch.randn(2, 3), torch.randn(4, 5), 0.1)
    with pytest.raises(ValueError, match="z_query"):
        simclr_probs(torch.randn(3), torch.randn(4, 3), 0.1)


# ---------------------------------------------------------------- DINO


def test_dino_loss_by_hand(device: torch.device) -> None:
    g = torch.Generator().manual_seed(8)
    b, vs, vt, k = 2, 3, 2, 4
    student, teacher = torch.randn(b, vs, k, generator=g), torch.randn(b, vt, k, generator=g)
    center = torch.randn(k, generator=g)
    st, tt = 0.1, 0.04
    s, t, c = _np(student), _np(teacher), _np(center)
    total, count = 0.0, 0
    for bi in range(b):
        for ti in range(vt):
            p = [math.exp(v) for v in _log_softmax([(t[bi, ti, j] - c[j]) / tt for j in range(k)])]
            for si in range(vs):
                if si == ti:
                    continue
                log_q = _log_softmax([s[bi, si, j] / st for j in range(k)])
                total += -sum(p[j] * log_q[j] for j in range(k))
                count += 1
    got = dino_loss(student.to(device), teacher.to(device), center.to(device), st, tt).item()
    assert count == b * (vt * vs - vt)
    assert got == pytest.approx(total / count, abs=1e-4)


def test_dino_loss_minimal_when_student_matches_teacher() -> None:
    g = torch.Generator().manual_seed(9)
    st, tt = 0.1, 0.04
    teacher_one = torch.randn(2, 1, 5, generator=g)
    teacher = teacher_one.expand(2, 2, 5).clone()  # every teacher view agrees
    center = torch.randn(5, generator=g)
    # Student logits whose softmax at student_temp equals the teacher's distribution.
    matched = ((teacher_one - center) / tt * st).expand(2, 3, 5).clone().requires_grad_(True)
    best = dino_loss(matched, teacher, center, st, tt)
    best.backward()
    assert matched.grad.abs().max().item() < 1e-5
    for seed in range(5):
        noise = torch.randn(matched.shape, generator=torch.Generator().manual_seed(seed))
        assert dino_loss(matched.detach() + 0.1 * noise, teacher, center, st, tt).item() > best.item()


def test_dino_teacher_gets_no_gradient_and_sgd_step_decreases() -> None:
    g = torch.Generator().manual_seed(10)
    teacher = torch.randn(3, 2, 6, generator=g, requires_grad=True)
    student = torch.randn(3, 4, 6, generator=g, requires_grad=True)
    center = torch.zeros(6)
    before, after = _sgd_decreases(lambda p: dino_loss(p, teacher, center), student, lr=0.05)
    assert after < before
    assert teacher.grad is None


def test_teacher_probs_and_update_center(monkeypatch: pytest.MonkeyPatch) -> None:
    teacher = torch.tensor([[[1.0, 3.0], [2.0, 0.0]], [[0.0, 1.0], [1.0, 0.0]]])
    center = torch.tensor([0.5, -0.5])
    p = _np(teacher_probs(teacher, center, 0.5))
    e = math.exp((1.0 - 0.5) / 0.5), math.exp((3.0 + 0.5) / 0.5)
    np.testing.assert_allclose(p[0, 0], [e[0] / sum(e), e[1] / sum(e)], atol=1e-6)
    # Batch mean over the four rows: (4/4, 4/4) = (1, 1).
    new = update_center(center, teacher, momentum=0.75)
    np.testing.assert_allclose(_np(new), [0.75 * 0.5 + 0.25 * 1.0, 0.75 * -0.5 + 0.25 * 1.0], atol=1e-6)
    assert torch.equal(update_center(center, teacher, momentum=1.0), center)
    # The batch mean goes through agents.distributed.all_reduce_mean (here: pretend the other rank saw 3s).
    seen = []

    def fake_reduce(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.clone())
        return (x + 3.0) / 2

    monkeypatch.setattr(dino_module, "all_reduce_mean", fake_reduce)
    new = update_center(torch.zeros(2), teacher, momentum=0.0)
    np.testing.assert_allclose(_np(seen[0]), [1.0, 1.0])
    np.testing.assert_allclose(_np(new), [2.0, 2.0])


def test_dino_bad_arguments() -> None:
    s, t, c = torch.randn(2, 3, 4), torch.randn(2, 2, 4), torch.zeros(4)
    with pytest.raises(ValueError, match="center"):
        dino_loss(s, t, torch.zeros(5))
    with pytest.raises(ValueError, match="teacher"):
        dino_loss(s, torch.randn(2, 2, 5), c)
    with pytest.raises(ValueError, match="teacher"):
        dino_loss(s, torch.randn(2, 4, 4), c)
    with pytest.raises(ValueError, match="student"):
        dino_loss(torch.randn(2, 1, 4), torch.randn(2, 1, 4), c)
    with pytest.raises(ValueError, match="student"):
        dino_loss(torch.randn(3, 4), t, c)
    with pytest.raises(ValueError, match="student_temp"):
        dino_loss(s, t, c, student_temp=0.0)
    with pytest.raises(ValueError, match="teacher_temp"):
        dino_loss(s, t, c, teacher_temp=-1.0)
    with pytest.raises(ValueError, match="momentum"):
        update_center(c, t, momentum=1.5)
    with pytest.raises(ValueError, match="center"):
        update_center(torch.zeros(3), t)


# ---------------------------------------------------------------- supervised


def test_supervised_loss_by_hand(device: torch.device) -> None:
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [2.0, 2.0, 2.0]])
    labels = torch.tensor([1, -1, 0])
    rows = logits.tolist()
    expected = -(_log_softmax(rows[0])[1] + _log_softmax(rows[2])[0]) / 2
    assert supervised_loss(logits.to(device), labels.to(device)).item() == pytest.approx(expected, abs=1e-6)


def test_supervised_loss_all_ignored_is_zero_with_gradient() -> None:
    logits = torch.randn(4, 3, requires_grad=True)
    loss = supervised_loss(logits, torch.full((4,), -1))
    assert loss.item() == 0.0 and not torch.isnan(loss)
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros(4, 3))


def test_supervised_sgd_step_decreases() -> None:
    logits = torch.randn(5, 4, generator=torch.Generator().manual_seed(11), requires_grad=True)
    labels = torch.tensor([0, 3, -1, 2, 1])
    before, after = _sgd_decreases(lambda p: supervised_loss(p, labels), logits, lr=1.0)
    assert after < before


def test_multilabel_loss_by_hand() -> None:
    logits = torch.tensor([[0.5, -2.0], [1.5, 0.0]])
    targets = torch.tensor([[1.0, 0.0], [0.25, 1.0]])
    total = 0.0
    for x, y in zip(logits.flatten().tolist(), targets.flatten().tolist(), strict=True):
        s = 1 / (1 + math.exp(-x))
        total += -(y * math.log(s) + (1 - y) * math.log(1 - s))
    assert multilabel_loss(logits, targets).item() == pytest.approx(total / 4, abs=1e-6)


def test_supervised_bad_arguments() -> None:
    logits = torch.randn(3, 4)
    with pytest.raises(ValueError, match="labels"):
        supervised_loss(logits, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="labels"):
        supervised_loss(logits, torch.tensor([0, 4, -1]))
    with pytest.raises(ValueError, match="labels"):
        supervised_loss(logits, torch.tensor([0, -2, 1]))
    with pytest.raises(TypeError, match="labels"):
        supervised_loss(logits, torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="logits"):
        supervised_loss(torch.randn(3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="targets"):
        multilabel_loss(logits, torch.zeros(3, 5))
