"""Tests of agents.eval: metrics, probe views, features, linear / kNN / attentive probes, report."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from agents.eval import (
    PROBES,
    AttentivePoolingProbe,
    check_split,
    compare_to_baseline,
    evaluate_encoder,
    extract_features,
    fit_attentive_probe,
    fit_linear_probe,
    format_table,
    knn_eval,
    knn_predict,
    knn_predict_multilabel,
    mean_average_precision,
    pca_whiten,
    probe_views,
    spectrum_stats,
    split_indices,
    top1_accuracy,
)
from vpt_env.data.scenes import SceneSource


class _Out(NamedTuple):
    pooled: Tensor
    tokens: Tensor


class TinyEncoder(nn.Module):
    """Stand-in encoder: a strided conv to a 4x4 grid of tokens, mean-pooled."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.dim = dim
        self.conv = nn.Conv2d(3, dim, kernel_size=8, stride=8)
        self.drop = nn.Dropout(0.5)
        self.seen_training: list[bool] = []

    def forward(self, x: Tensor) -> _Out:
        self.seen_training.append(self.training)
        t = self.drop(self.conv(x - 0.5)).flatten(2).transpose(1, 2)  # (B, T, D)
        return _Out(t.mean(1), t)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def scenes() -> SceneSource:
    return SceneSource(n_images=30)


# -- metrics ------------------------------------------------------------------------------------------


def test_top1_accuracy_logits_preds_and_unknown() -> None:
    logits = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    labels = torch.tensor([1, 1, -1, 0])
    assert top1_accuracy(logits, labels) == pytest.approx(2 / 3)
    assert top1_accuracy(torch.tensor([1, 0, 1, 0]), labels) == pytest.approx(2 / 3)


@pytest.mark.parametrize("ties", [False, True])
def test_mean_average_precision_matches_sklearn(ties: bool) -> None:
    sk = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(60, 7, generator=g)
    if ties:  # tied scores enter the precision-recall curve together
        scores = (scores * 2).round() / 2
    targets = (torch.rand(60, 7, generator=g) < 0.3).float()
    targets[:, 3] = 0  # a class with no positive is left out of the mean
    aps = [
        sk.average_precision_score(targets[:, c].numpy(), scores[:, c].numpy())
        for c in range(7)
        if targets[:, c].sum() > 0
    ]
    assert mean_average_precision(scores, targets) == pytest.approx(float(np.mean(aps)), abs=1e-9)


def test_map_of_constant_scores_is_the_mean_positive_rate() -> None:
    targets = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    assert mean_average_precision(torch.zeros(4, 2), targets) == pytest.approx((2 / 4 + 1 / 4) / 2)


# -- kNN ----------------------------------------------------------------------------------------------


def _cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.hypot(*a) / math.hypot(*b)


def test_knn_hand_case() -> None:
    train = [[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
    query = [2.0, 1.0]
    t = 0.5
    # Cosines 0.894, 0.949, 0.447: the two nearest are train 1 (class 1) and train 0 (class 0).
    expected = [math.exp(_cos(query, train[0]) / t), math.exp(_cos(query, train[1]) / t), 0.0]
    scores = knn_predict(
        torch.tensor(train), torch.tensor([0, 1, 0]), torch.tensor([query]), k=2, temperature=t, num_classes=3
    )
    assert scores.shape == (1, 3)
    assert scores[0].tolist() == pytest.approx(expected, rel=1e-5)

    targets = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    w0, w1 = expected[0], expected[1]
    ml = knn_predict_multilabel(torch.tensor(train), targets, torch.tensor([query]), k=2, temperature=t)
    assert ml[0].tolist() == pytest.approx([(w0 + w1) / (w0 + w1), w1 / (w0 + w1)], rel=1e-5)


def test_knn_eval_on_blobs() -> None:
    x, y = _blobs(200, 3, 8, seed=0)
    res = knn_eval(x[:150], y[:150], x[150:], y[150:], k=5)
    assert res["top1"] > 0.9


# -- linear probe -------------------------------------------------------------------------------------


def _blobs(n: int, k: int, d: int, seed: int, spread: float = 3.0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=g) * spread
    y = torch.randint(0, k, (n,), generator=g)
    return centres[y] + torch.randn(n, d, generator=g), y


def test_spectrum_stats_hand_cases() -> None:
    # Four unit vectors along +-x and +-y: equal variance in 2 directions; each vector has one
    # opposite (cosine -1) and two orthogonal (0) partners, so the mean cosine is -1/3.
    cross = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    stats = spectrum_stats(cross)
    assert stats["participation_ratio"] == pytest.approx(2.0)
    assert stats["effective_rank"] == pytest.approx(2.0)
    assert stats["top_share"] == pytest.approx(0.5)
    assert stats["mean_cosine"] == pytest.approx(-1 / 3)
    # Points on one line through (1, 1) shifted away from the origin: one direction, and all
    # samples nearly parallel.
    line = torch.tensor([[10.0, 10.0], [11.0, 11.0], [12.0, 12.0]])
    stats = spectrum_stats(line)
    assert stats["participation_ratio"] == pytest.approx(1.0)
    assert stats["effective_rank"] == pytest.approx(1.0, abs=1e-6)
    assert stats["top_share"] == pytest.approx(1.0)
    assert stats["mean_cosine"] == pytest.approx(1.0)
    for bad in (torch.zeros(3), torch.zeros(1, 4), torch.ones(5, 2), torch.tensor([[1.0], [float("nan")]])):
        with pytest.raises(ValueError, match="x"):
            spectrum_stats(bad)
    with pytest.raises(TypeError, match=r"x must be a torch\.Tensor"):
        spectrum_stats([[1.0, 2.0], [3.0, 4.0]])


def test_pca_whiten_hand_case() -> None:
    # Variance 8/3 along x and 2/3 along y (sample std sqrt(8/3), sqrt(2/3)); principal axes are the
    # coordinate axes, so whitening divides x by sqrt(8/3) * (1 + eps) and y by
    # sqrt(2/3) + eps * sqrt(8/3) (up to each axis' sign).
    train = torch.tensor([[2.0, 0.0], [-2.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    eps = 0.01
    w_train, w_other = pca_whiten(train, torch.tensor([[4.0, 3.0]]), eps=eps)
    sx, sy = (8 / 3) ** 0.5, (2 / 3) ** 0.5
    expected = torch.tensor([[2 / (sx * (1 + eps)), 0.0], [0.0, 1 / (sy + eps * sx)]])
    assert torch.allclose(w_train[[0, 2]].abs(), expected, atol=1e-5)
    assert torch.allclose(w_other.abs(), torch.tensor([[4 / (sx * (1 + eps)), 3 / (sy + eps * sx)]]))
    assert w_train.dtype == torch.float32
    with pytest.raises(ValueError, match="eps"):
        pca_whiten(train, eps=0.0)
    with pytest.raises(ValueError, match="others"):
        pca_whiten(train, torch.zeros(2, 3))
    with pytest.raises(TypeError, match="others"):
        pca_whiten(train, [[1.0, 2.0]])
    with pytest.raises(ValueError, match="train holds NaN"):
        pca_whiten(torch.tensor([[1.0, 2.0], [float("inf"), 0.0]]))
    assert pca_whiten(train, torch.zeros(0, 2))[1].shape == (0, 2)  # an empty query set is fine


def test_linear_probe_separable_and_shuffled() -> None:
    x, y = _blobs(400, 4, 16, seed=0)
    res = fit_linear_probe(x[:300], y[:300], x[300:], y[300:], epochs=50)
    assert res["top1"] > 0.9
    assert res == fit_linear_probe(x[:300], y[:300], x[300:], y[300:], epochs=50)  # deterministic
    shuffled = y[torch.randperm(400, generator=torch.Generator().manual_seed(5))]
    chance = fit_linear_probe(x[:300], shuffled[:300], x[300:], shuffled[300:], epochs=50)
    assert chance["top1"] < 0.45  # 4 classes: chance 0.25


def test_linear_probe_multilabel() -> None:
    g = torch.Generator().manual_seed(0)
    targets = (torch.rand(300, 5, generator=g) < 0.4).float()
    x = torch.cat((targets * 2 + 0.3 * torch.randn(300, 5, generator=g), torch.randn(300, 3, generator=g)), 1)
    res = fit_linear_probe(x[:200], targets[:200], x[200:], targets[200:], multilabel=True)
    assert res["map"] > 0.9


# -- attentive probe ----------------------------------------------------------------------------------


def _one_token_task(n: int, seed: int, t: int = 8, d: int = 16, k: int = 4) -> tuple[Tensor, Tensor]:
    """The class sits in one marked token at a random position; the others carry random classes."""
    g = torch.Generator().manual_seed(seed)
    codes = torch.randn(k, d, generator=g) * 2
    codes[:, 0] = 0
    y = torch.randint(0, k, (n,), generator=g)
    distract = torch.randint(0, k, (n, t), generator=g)
    tokens = codes[distract] + 0.3 * torch.randn(n, t, d, generator=g)
    pos = torch.randint(0, t, (n,), generator=g)
    rows = torch.arange(n)
    tokens[rows, pos] = codes[y] + 0.3 * torch.randn(n, d, generator=g)
    tokens[rows, pos, 0] = 4.0  # the marker that tells the informative token
    return tokens, y


def test_attentive_probe_reads_one_token() -> None:
    tokens, y = _one_token_task(600, seed=0)
    tr, te = slice(0, 450), slice(450, None)
    att = fit_attentive_probe(tokens[tr], y[tr], tokens[te], y[te], epochs=30, batch_size=64)
    mean = fit_linear_probe(tokens[tr].mean(1), y[tr], tokens[te].mean(1), y[te], epochs=50)
    assert att["top1"] > 0.9
    assert mean["top1"] < att["top1"] - 0.2


def test_attentive_probe_shapes_and_args() -> None:
    probe = AttentivePoolingProbe(dim=8, num_classes=3, heads=2)
    assert probe(torch.randn(5, 7, 8)).shape == (5, 3)
    with pytest.raises(ValueError, match="heads"):
        AttentivePoolingProbe(dim=8, num_classes=3, heads=3)
    with pytest.raises(ValueError, match="tokens"):
        probe(torch.randn(5, 8))


# -- probe views and features -------------------------------------------------------------------------


def test_split_indices_partition() -> None:
    train, test = split_indices(20, test_fraction=0.25, seed=3)
    assert len(test) == 5 and len(train) == 15
    assert sorted(torch.cat((train, test)).tolist()) == list(range(20))
    assert torch.equal(test, split_indices(20, test_fraction=0.25, seed=3)[1])
    assert not torch.equal(test, split_indices(20, test_fraction=0.25, seed=4)[1])


def test_probe_views_image_task(scenes: SceneSource) -> None:
    data = probe_views(scenes, "all", view_size=32)
    k = len(scenes.classes)
    assert data.views.shape == (30, 3, 32, 32) and data.views.dtype == torch.float32
    assert 0.0 <= float(data.views.min()) and float(data.views.max()) <= 1.0
    assert data.labels.tolist() == [-1] * 30  # scenes carry no image label
    assert data.targets is not None and data.targets.shape == (30, k)
    for i in range(30):
        present = {int(c) for c in scenes.box_labels[i] if c >= 0}
        assert set(data.targets[i].nonzero()[:, 0].tolist()) == present
    assert data.class_names == list(scenes.classes)
    train = probe_views(scenes, "train", view_size=32)
    test = probe_views(scenes, "test", view_size=32)
    assert sorted(train.image.tolist() + test.image.tolist()) == list(range(30))
    assert torch.equal(test.views, data.views[test.image])
    small = probe_views(scenes, "all", view_size=32, max_images=10, seed=1)
    assert small.views.shape == (10, 3, 32, 32) and small.num_images == 10


def test_probe_views_objects_task(scenes: SceneSource) -> None:
    data = probe_views(scenes, "all", view_size=16, task="objects")
    valid = scenes.box_labels >= 0
    n = int(valid.sum())
    assert data.views.shape == (n, 3, 16, 16)
    assert data.labels.tolist() == scenes.box_labels[valid].tolist()
    assert data.image.tolist() == np.nonzero(valid)[0].tolist()
    obj = torch.from_numpy(scenes.boxes[valid])
    assert bool((data.boxes[:, :2] <= obj[:, :2] + 1e-6).all())
    assert bool((data.boxes[:, 2:] >= obj[:, 2:] - 1e-6).all())
    assert bool((data.boxes >= 0).all() and (data.boxes <= 1).all())
    # Away from the image edges the region is the box grown by 10% about its centre.
    w = obj[:, 2] - obj[:, 0]
    inside = (obj[:, 0] - 0.05 * w > 0) & (obj[:, 2] + 0.05 * w < 1)
    assert bool(inside.any())
    grown = (data.boxes[inside, 2] - data.boxes[inside, 0]).tolist()
    assert grown == pytest.approx((1.1 * w[inside]).tolist())
    # The view shows that region: compare with PIL's bilinear resize of the same box.
    j = int(inside.nonzero()[0, 0])
    img = scenes.image(int(data.image[j]))
    h, wd = img.shape[:2]
    x0, y0, x1, y1 = data.boxes[j].tolist()
    ref = Image.fromarray(img).resize((16, 16), Image.BILINEAR, box=(x0 * wd, y0 * h, x1 * wd, y1 * h))
    ref_t = torch.from_numpy(np.array(ref)).permute(2, 0, 1).float() / 255
    assert float((data.views[j] - ref_t).abs().mean()) < 0.03


def test_extract_features_restores_training_flag() -> None:
    enc = TinyEncoder()
    views = torch.rand(10, 3, 32, 32)
    enc.train()
    feats = extract_features(enc, views, batch_size=4)
    assert enc.training and enc.drop.training
    assert enc.seen_training == [False, False, False]
    assert feats.pooled.shape == (10, 8) and feats.tokens.shape == (10, 16, 8)
    assert not feats.pooled.requires_grad
    enc.eval()
    again = extract_features(enc, iter([views[:6], views[6:]]))
    assert not enc.training
    torch.testing.assert_close(again.tokens, feats.tokens)


def test_extract_features_accepts_tuple_output() -> None:
    class TupleEnc(nn.Module):
        def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
            t = x.flatten(2).transpose(1, 2)
            return t.mean(1), t

    feats = extract_features(TupleEnc(), torch.rand(3, 3, 8, 8))
    assert feats.tokens.shape == (3, 64, 3)


# -- report -------------------------------------------------------------------------------------------


def test_evaluate_encoder_end_to_end(scenes: SceneSource) -> None:
    torch.manual_seed(0)
    enc = TinyEncoder()
    res = evaluate_encoder(enc, scenes, view_size=32, linear_epochs=5, attentive_epochs=2)
    assert res["metric"] == "map"  # scenes: boxes, no image labels
    assert res["n_train"] + res["n_test"] == 30
    for p in ("linear", "knn", "attentive"):
        assert 0.0 < res[p]["map"] <= 1.0
    assert 0.0 < res["chance"] < 1.0
    objs = evaluate_encoder(enc, scenes, task="objects", probes=("linear", "knn"), linear_epochs=5)
    assert objs["metric"] == "top1" and "attentive" not in objs
    assert objs["n_train"] + objs["n_test"] == int((scenes.box_labels >= 0).sum())
    table = format_table({"tiny": objs, "tiny x2": [objs, objs]})
    lines = table.splitlines()
    assert lines[0] == "| encoder (top1, %) | linear | knn | chance |"
    assert lines[3].startswith("| tiny x2 | ") and "± 0.0" in lines[3]


def test_evaluate_encoder_with_a_separate_test_set(scenes: SceneSource) -> None:
    """test=: every example of the first set trains the probes, the second set tests them."""
    enc = TinyEncoder()
    train = probe_views(scenes, view_size=16, task="objects")
    test = probe_views(SceneSource(n_images=8, split="test"), view_size=16, task="objects")
    res = evaluate_encoder(enc, train, test=test, task="objects", probes=("knn",))
    assert res["n_train"] == int((train.labels >= 0).sum()) and res["n_test"] == int((test.labels >= 0).sum())
    assert 0.0 <= res["knn"]["top1"] <= 1.0


def test_bad_arguments_name_the_parameter(scenes: SceneSource) -> None:
    x, y = _blobs(20, 2, 4, seed=0)
    cases = [
        ("task", lambda: probe_views(scenes, task="regions")),
        ("split", lambda: probe_views(scenes, split="val")),
        ("view_size", lambda: probe_views(scenes, view_size=4)),
        ("test_fraction", lambda: split_indices(10, test_fraction=1.0)),
        ("k", lambda: knn_predict(x, y, x, k=0)),
        ("temperature", lambda: knn_predict(x, y, x, temperature=0.0)),
        ("num_classes", lambda: knn_predict(x, y, x, num_classes=1)),
        ("epochs", lambda: fit_linear_probe(x, y, x, y, epochs=0)),
        ("multilabel", lambda: fit_linear_probe(x, y, x, y, multilabel=True)),
        ("batch_size", lambda: extract_features(TinyEncoder(), torch.rand(2, 3, 32, 32), batch_size=0)),
        ("probes", lambda: evaluate_encoder(TinyEncoder(), scenes, probes=("linear", "svm"))),
    ]
    for name, call in cases:
        with pytest.raises(ValueError, match=name):
            call()


# -- small splits, the baseline sentence, progress ---------------------------------------------------


def test_check_split_names_counts_and_refuses_what_cannot_run() -> None:
    # Every test class absent from training: no probe can score above 0, so none runs.
    warns, not_run = check_split(torch.tensor([0, 1, 2]), torch.tensor([3, 4]), False, ("linear", "knn"))
    assert set(not_run) == {"linear", "knn"}
    assert "3 train and 2 test examples of 5 classes (3 in train, 2 in test)" in warns[0]
    assert "no test example has a class seen in training" in not_run["knn"]
    # One train class: nothing to tell apart.
    _, not_run = check_split(torch.zeros(30, dtype=torch.long), torch.tensor([0, 1]), False)
    assert set(not_run) == set(PROBES) and "at least 2 classes" in not_run["linear"]
    # Some test classes unseen, few examples per class, few test examples, k > train set: warned, run.
    train, test = torch.arange(12) % 3, torch.tensor([0, 1, 2, 3])
    warns, not_run = check_split(train, test, False, PROBES, 20, ["a", "b", "c", "d"])
    assert not_run == {} and len(warns) == 1
    text = warns[0]
    assert "1 of 4 test examples have a class absent from the train split (d)" in text
    assert "no score exceeds 75.0%" in text
    assert "at least 5 train examples per class (20); with 3.0 per class" in text
    assert "each test example moves a score by 25.0 points" in text
    assert "kNN asks for 20 neighbours but the train split has 12 examples" in text
    # A big balanced split: nothing to say.
    assert check_split(torch.arange(400) % 4, torch.arange(100) % 4, False) == ([], {})


def test_check_split_multilabel() -> None:
    # One test image: every class in it scores an AP of 100 whatever the scores.
    train = torch.tensor([[1.0, 0.0, 1.0]] * 10 + [[0.0, 1.0, 0.0]] * 10)
    _, not_run = check_split(train, torch.tensor([[1.0, 1.0, 0.0]]), True, ("linear",))
    assert "present in every test image" in not_run["linear"]
    # A class present in every test image is warned about; a class unseen in training too.
    test = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 0.0, 0.0]] * 15)
    warns, not_run = check_split(
        torch.cat((train, torch.zeros(20, 1)), 1), test, True, ("linear",), 20, "wxyz"
    )
    assert not_run == {}
    assert "1 classes (w) are present in every test image" in warns[0]
    assert "1 classes present in test (z) are in no train image" in warns[0]


def test_a_source_too_small_for_its_probes_is_reported_not_scored() -> None:
    """The embedded photos: 10 images of 10 classes; the 2 held out have classes never trained on."""
    with pytest.warns(RuntimeWarning, match="8 train and 2 test examples of 10 classes"):
        res = evaluate_encoder(TinyEncoder(), "photos", view_size=16, linear_epochs=2, attentive_epochs=1)
    assert set(res["not_run"]) == set(PROBES)
    assert not any(p in res for p in PROBES)  # no 0 in their place
    assert res["n_train"] == 8 and res["n_test"] == 2 and len(res["warnings"]) == 1
    table = format_table({"tiny": res})
    assert table.splitlines()[2] == "| tiny | not run | not run | not run | 0.0 |"


def test_compare_to_baseline_states_only_computed_differences() -> None:
    def result(linear: float, knn: float | None, attentive: float) -> dict:
        r = {
            "metric": "top1",
            "task": "objects",
            "linear": {"top1": linear},
            "attentive": {"top1": attentive},
        }
        if knn is None:
            r["not_run"] = {"knn": "too few"}
        else:
            r["knn"] = {"top1": knn}
        return r

    results = {"run": result(0.318, 0.20, 0.335), "random init": result(0.140, 0.208, 0.221)}
    assert compare_to_baseline(results, seed=0) == (
        "run against random init (same architecture, seed 0), object-region top-1: linear +17.8 points, "
        "kNN -0.8, attention pooling +11.4; one seed, differences of a few points are within "
        "seed-to-seed noise."
    )
    results["run"] = result(0.5, None, 0.25)
    text = compare_to_baseline(results, seed=3)
    assert "seed 3" in text and "linear +36.0 points, kNN not run, attention pooling +2.9;" in text
    nothing = {"metric": "map", "task": "image", "not_run": dict.fromkeys(PROBES, "too few")}
    text = compare_to_baseline({"run": nothing, "random init": nothing})
    assert text.endswith("whole-image mAP: no probe ran on both, nothing to compare.")
    with pytest.raises(ValueError, match="random init"):
        compare_to_baseline({"run": results["run"]})


def test_evaluate_encoder_progress_lines_name_the_encoder(scenes: SceneSource, monkeypatch, capsys) -> None:
    import vpt_env.progress

    monkeypatch.setattr(vpt_env.progress, "INTERVAL_S", 1e-9)  # a line at every update
    data = probe_views(scenes, view_size=16, task="objects", progress=True)
    evaluate_encoder(
        TinyEncoder(), data, task="objects", linear_epochs=3, attentive_epochs=2, progress="tiny"
    )
    out, err = capsys.readouterr()
    assert out == ""
    for start in ("rendering probe views: ", "tiny: features: ", "tiny: linear probe: 3/3 epochs (100%)"):
        assert any(line.startswith(start) for line in err.splitlines()), start
    assert "tiny: attention-pooling probe: done, 2/2 epochs in" in err
    evaluate_encoder(TinyEncoder(), data, task="objects", probes=("knn",))
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("train_y", "test_y", "multilabel", "message"),
    [
        (torch.tensor([], dtype=torch.long), torch.tensor([0]), False, "train_y must be a non-empty"),
        (torch.tensor([0, 1]), torch.tensor([-1, 0]), False, "test_y must be a non-empty .* >= 0"),
        (torch.tensor([0.0, 1.0]), torch.tensor([0]), False, "train_y must be .* class indices"),
        (torch.zeros(3, 4), torch.zeros(2, 5), True, "same number of classes, got 4 and 5"),
        (torch.zeros(3), torch.zeros(2, 5), True, "train_y must be a non-empty \\(N, K\\)"),
    ],
)
def test_check_split_refuses_labels_it_cannot_read(train_y, test_y, multilabel, message) -> None:
    with pytest.raises(ValueError, match=message):
        check_split(train_y, test_y, multilabel)
