"""The known-answer MDP (agents.known_answer): exact GVFs by hand, the TD equation, and training to them."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from agents.known_answer import (
    COLOURS,
    FitConfig,
    action_information,
    exact_gvf,
    fit_gvf,
    gvf_errors,
    make_mdp,
    max_temperature,
    move_mask,
    td_operator,
)
from agents.losses import ab_target

pytestmark = pytest.mark.usefixtures("one_thread")

#: The learned Q's mean total-variation error must fall below this (max TV below 3x it).
TV_THRESHOLD = 0.01


def _p(*rows: tuple[float, ...]) -> torch.Tensor:
    return torch.tensor([rows], dtype=torch.float64)  # (1, N, L)


def _assert_moves(q: torch.Tensor, expected: dict[tuple[int, int], tuple[float, ...]]) -> None:
    for (i, j), values in expected.items():
        torch.testing.assert_close(q[0, i, j], torch.tensor(values, dtype=torch.float64), rtol=0, atol=1e-9)


# ---------------------------------------------------------------- exact values, by hand


def test_exact_gvf_two_boxes_by_hand() -> None:
    # p_0 = (1, 0), p_1 = (0, 1), V = N = 2. The target of i -> j is T_j, and the max from j runs
    # over the one other box, so T_0 = (1 - g) p_0 + g T_1 and T_1 = (1 - g) p_1 + g T_0 (each a
    # distribution already; no renormalisation). By symmetry T_0 = (a, 1 - a), T_1 = (1 - a, a)
    # with a = (1 - g) + g (1 - a), i.e. a = 1 / (1 + g): 2/3 at g = 0.5.
    q = exact_gvf(_p((1.0, 0.0), (0.0, 1.0)), gamma=0.5)
    _assert_moves(q, {(0, 1): (1 / 3, 2 / 3), (1, 0): (2 / 3, 1 / 3)})


def test_exact_gvf_three_boxes_max_and_renormalisation_by_hand() -> None:
    # p_0 = (1, 0), p_1 = p_2 = (0, 1), V = N = 3, g = 0.5. By symmetry T_1 = T_2 = (b, 1 - b) and
    # T_0 = (a, 1 - a), with a >= b.
    #   j = 0: max over k in {1, 2} is (b, 1 - b); the mix sums to 1: a = (1 - g) + g b.
    #   j = 1: max over k in {0, 2} is (max(a, b), max(1 - a, 1 - b)) = (a, 1 - b); the mix
    #          (g a, (1 - g) + g (1 - b)) sums to 1 + g (a - b), so b = g a / (1 + g (a - b)).
    # With g = 1/2: a = (1 + b) / 2 and b (5 - b) / 4 = (1 + b) / 4, so b^2 - 4 b + 1 = 0:
    # b = 2 - sqrt(3) ~ 0.268 and a = (3 - sqrt(3)) / 2 ~ 0.634.
    a, b = (3 - math.sqrt(3)) / 2, 2 - math.sqrt(3)
    q = exact_gvf(_p((1.0, 0.0), (0.0, 1.0), (0.0, 1.0)), gamma=0.5)
    t0, t12 = (a, 1 - a), (b, 1 - b)
    _assert_moves(q, {(1, 0): t0, (2, 0): t0, (0, 1): t12, (2, 1): t12, (0, 2): t12, (1, 2): t12})
    assert torch.isnan(q[0].diagonal(dim1=0, dim2=1)).all()  # no move i -> i


def test_exact_gvf_with_two_of_three_views_by_hand() -> None:
    # Same p, V = 2 of N = 3: a draw is one pair {i, j}, so the max from j runs over i alone and
    # Q(i -> j) = (1 - g) p_j + g Q(j -> i); solving the pair, Q(i -> j) = (p_j + g p_i) / (1 + g).
    p = _p((1.0, 0.0), (0.0, 1.0), (0.0, 1.0))
    g = 0.5
    q = exact_gvf(p, gamma=g, views_per_image=2)
    expected = {
        (i, j): tuple(((p[0, j] + g * p[0, i]) / (1 + g)).tolist()) for i in range(3) for j in range(3)
    }
    _assert_moves(q, {ij: v for ij, v in expected.items() if ij[0] != ij[1]})
    # With all 3 views the answer differs: the behaviour policy is part of the fixed point.
    assert not torch.allclose(q[0, 0, 1], exact_gvf(p, gamma=g)[0, 0, 1])


def test_exact_gvf_at_gamma_zero_is_the_cumulant() -> None:
    mdp = make_mdp(num_images=2, num_boxes=3)
    q = exact_gvf(mdp.cumulants, gamma=0.0)
    moves = move_mask(3)
    torch.testing.assert_close(q[:, moves], mdp.cumulants[:, None].expand_as(q)[:, moves])


# ---------------------------------------------------------------- the TD equation


@pytest.mark.parametrize("gamma", [0.5, 0.9])
def test_exact_gvf_satisfies_ab_target(gamma: float) -> None:
    mdp = make_mdp()
    q = exact_gvf(mdp.cumulants, gamma)
    moves = move_mask(mdp.num_boxes)
    valid = moves.expand(mdp.num_images, -1, -1)
    again = ab_target(mdp.cumulants, q, valid, gamma)  # the library's operator, applied once more
    assert float((again - q)[:, moves].abs().max()) < 1e-6
    # and the equation has content: Q* is not the local term alone
    assert float((q - mdp.cumulants[:, None])[:, moves].abs().max()) > 0.05


def test_exact_gvf_with_subsets_satisfies_its_expected_operator() -> None:
    mdp = make_mdp()
    q = exact_gvf(mdp.cumulants, 0.5, views_per_image=3)
    again = td_operator(mdp.cumulants, q, 0.5, views_per_image=3)
    moves = move_mask(mdp.num_boxes)
    assert float((again - q)[:, moves].abs().max()) < 1e-6
    # the expected operator with V = N is ab_target itself
    valid = moves.expand(mdp.num_images, -1, -1)
    full = td_operator(mdp.cumulants, q, 0.5)
    torch.testing.assert_close(full[:, moves], ab_target(mdp.cumulants, q, valid, 0.5)[:, moves])


def test_exact_gvf_reports_non_convergence() -> None:
    mdp = make_mdp(num_images=1, num_boxes=3)
    with pytest.raises(RuntimeError, match="did not converge in 2 iterations"):
        exact_gvf(mdp.cumulants, 0.9, max_iter=2)
    with pytest.raises(ValueError, match="views_per_image"):
        exact_gvf(mdp.cumulants, 0.5, views_per_image=4)


# ---------------------------------------------------------------- the MDP


def test_cumulants_are_the_rendered_colour_shares() -> None:
    """p(l | box) equals the area-weighted share of each colour's pixels inside the box."""
    mdp = make_mdp(num_images=2, num_boxes=5, seed=3)
    size = mdp.images.shape[1]
    colours = torch.tensor(COLOURS) * 255
    edges = torch.arange(size + 1, dtype=torch.float64) / size

    def coverage(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:  # of each pixel by [lo, hi]
        return (torch.minimum(edges[1:], hi) - torch.maximum(edges[:-1], lo)).clamp_min(0)

    for k in range(2):
        img = mdp.images[k].double()
        masks = [(img - c.round().double()).abs().sum(-1).lt(0.5).double() for c in colours]
        for n, (x0, y0, x1, y1) in enumerate(mdp.boxes[k]):
            w = coverage(y0, y1)[:, None] * coverage(x0, x1)[None, :]
            shares = torch.stack([(w * m).sum() for m in masks]) / w.sum()
            torch.testing.assert_close(mdp.cumulants[k, n, :3], shares, rtol=0, atol=1e-9)
    torch.testing.assert_close(
        mdp.cumulants.sum(-1), torch.ones(mdp.cumulants.shape[:2], dtype=torch.float64)
    )


def test_moves_carry_information() -> None:
    mdp = make_mdp()
    assert action_information(mdp.cumulants) > 0.1  # nats (docs/method.md)
    same = mdp.cumulants[:, :1].expand_as(mdp.cumulants)
    assert action_information(same) == pytest.approx(0.0, abs=1e-12)


def test_max_temperature_and_errors_by_hand() -> None:
    q = torch.full((1, 2, 2, 2), float("nan"), dtype=torch.float64)
    q[0, 0, 1] = torch.tensor([0.5, 0.5], dtype=torch.float64)
    q[0, 1, 0] = torch.tensor([0.8, 0.2], dtype=torch.float64)  # log-ratio log 4: 2 / log 4
    assert max_temperature(q) == pytest.approx(2 / math.log(4))
    p = torch.tensor([[[0.8, 0.2], [0.5, 0.5]]], dtype=torch.float64)  # p_0, p_1
    learned = q.clone()
    learned[0, 0, 1] = torch.tensor([0.6, 0.4], dtype=torch.float64)  # TV 0.1 on one move of two
    err = gvf_errors(learned, q, p)
    assert (err.tv_mean, err.tv_max) == pytest.approx((0.05, 0.1))
    # one move per start: the action-blind predictor is exact; gamma 0 gives p_j: (0.5, 0.5), (0.8, 0.2)
    assert (err.blind_tv_mean, err.gamma0_tv_mean) == pytest.approx((0.0, 0.0))


# ---------------------------------------------------------------- training converges to Q*


def test_fit_gvf_converges_to_the_exact_values() -> None:
    mdp = make_mdp()  # 3 images x 4 boxes, L = 4
    fit = fit_gvf(mdp, FitConfig(gamma=0.5, steps=300, batch_size=4, seed=0))
    err = fit.errors
    # The task is not trivial: ignoring the move, or bootstrapping nothing, is far off.
    assert err.blind_tv_mean > 5 * TV_THRESHOLD
    assert err.gamma0_tv_mean > 5 * TV_THRESHOLD
    assert err.tv_mean < TV_THRESHOLD, err
    assert err.tv_max < 3 * TV_THRESHOLD, err
    assert fit.history[-1][0] == 300 and len(fit.losses) == 300


def test_fit_gvf_with_subsets_finds_its_own_fixed_point() -> None:
    # V = 3 of N = 4: the expected TD target averages over draws, and training lands on that
    # operator's fixed point, not on the all-views one (0.03 TV away). The sampled targets are
    # noisy (the max runs over a random subset), so this run is longer than the one above; a
    # temperature of 0.3 (the exact values need <= max_temperature ~ 0.7) converges faster than 0.1.
    mdp = make_mdp()
    cfg = FitConfig(gamma=0.5, steps=300, batch_size=8, views_per_image=3, temperature=0.3, seed=0)
    fit = fit_gvf(mdp, cfg)
    other = gvf_errors(fit.q, exact_gvf(mdp.cumulants, 0.5), mdp.cumulants)
    assert fit.errors.tv_mean < TV_THRESHOLD, fit.errors
    assert other.tv_mean > 2 * fit.errors.tv_mean, other


def test_fit_gvf_is_deterministic_and_leaves_the_global_rng() -> None:
    mdp = make_mdp(num_images=2, num_boxes=3)
    cfg = FitConfig(gamma=0.5, steps=4, batch_size=2, seed=1)
    state = torch.get_rng_state()
    a, b = fit_gvf(mdp, cfg, checkpoints=(2,)), fit_gvf(mdp, cfg)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.q, b.q) and a.losses == b.losses
    assert [s for s, _ in a.history] == [2, 4]
    c = fit_gvf(mdp, FitConfig(gamma=0.5, steps=4, batch_size=2, seed=2))
    assert not torch.equal(a.q, c.q)
    with pytest.raises(ValueError, match="checkpoints"):
        fit_gvf(mdp, cfg, checkpoints=(5,))


# ---------------------------------------------------------------- the benchmark script


def test_benchmark_runs_and_writes_its_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "known_answer.py"
    spec = importlib.util.spec_from_file_location("bench_known_answer", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.checkpoints(1600) == (100, 200, 400, 800, 1600) and bench.checkpoints(3) == (3,)
    out = tmp_path / "ka.json"
    argv = ["--steps", "3", "--gammas", "0,0.5", "--seeds", "0,1", "--images", "2", "--boxes", "3"]
    assert bench.main([*argv, "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert set(record["gammas"]) == {"0.0", "0.5"} and record["mdp"]["views_per_image"] == 3
    assert [r["seed"] for r in record["gammas"]["0.5"]["runs"]] == [0, 1]
    assert record["machine"]["torch_threads"] >= 1 and record["seconds"] > 0
    printed = capsys.readouterr().out
    assert "| 0.5 | 3 |" in printed and "machine:" in printed
