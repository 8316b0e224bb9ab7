"""One call per encoder: frozen features once, then the linear, kNN and attentive probes.

Example:
    >>> format_table({"random": {"metric": "top1", "linear": {"top1": 0.5}, "chance": 0.25}})
    '| encoder (top1, %) | linear | chance |\\n| --- | --- | --- |\\n| random | 50.0 | 25.0 |'
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from agents.eval.attentive import fit_attentive_probe
from agents.eval.features import ProbeData, extract_features, probe_views, split_indices
from agents.eval.knn import knn_eval
from agents.eval.linear import fit_linear_probe, metric_name
from agents.eval.metrics import mean_average_precision
from vpt_env.progress import Progress

__all__ = ["PROBES", "chance_level", "check_split", "compare_to_baseline", "evaluate_encoder", "format_table"]

PROBES = ("linear", "knn", "attentive")


def chance_level(train_y: Tensor, test_y: Tensor, multilabel: bool) -> float:
    """The score of a classifier that ignores its input.

    Single-label: the test accuracy of always predicting the train majority
    class. Multi-label: the mAP of constant scores, i.e. the mean over classes
    of their positive rate in the test set.
    """
    if multilabel:
        return mean_average_precision(torch.zeros_like(test_y, dtype=torch.float32), test_y)
    known_train, known_test = train_y[train_y >= 0], test_y[test_y >= 0]
    majority = int(torch.bincount(known_train).argmax())
    return float((known_test == majority).float().mean())


#: Fewer train examples per class than this, and the probes' scores are mostly noise.
MIN_TRAIN_PER_CLASS = 5
#: Fewer test examples than this (or than classes), and a score is coarse.
MIN_TEST = 20


def _names(mask: Tensor, class_names: Sequence[str], most: int = 5) -> str:
    idx = mask.nonzero()[:, 0].tolist()
    named = [class_names[i] if i < len(class_names) else str(i) for i in idx[:most]]
    return ", ".join(named) + (", ..." if len(idx) > most else "")


def _check_labels(train_y: Tensor, test_y: Tensor, multilabel: bool) -> None:
    """Refuse labels :func:`check_split` cannot read, naming the argument and what it accepts."""
    for name, y in (("train_y", train_y), ("test_y", test_y)):
        if not isinstance(y, Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(y).__name__}")
        if multilabel:
            if y.ndim != 2 or y.shape[0] == 0:
                raise ValueError(
                    f"{name} must be a non-empty (N, K) multi-hot tensor, got shape {tuple(y.shape)}"
                )
        elif y.ndim != 1 or y.shape[0] == 0 or y.is_floating_point() or bool((y < 0).any()):
            raise ValueError(
                f"{name} must be a non-empty (N,) tensor of class indices >= 0, got "
                f"{y.dtype} of shape {tuple(y.shape)}"
            )
    if multilabel and train_y.shape[1] != test_y.shape[1]:
        raise ValueError(
            "train_y and test_y must have the same number of classes, got "
            f"{train_y.shape[1]} and {test_y.shape[1]}"
        )


def check_split(
    train_y: Tensor,
    test_y: Tensor,
    multilabel: bool,
    probes: Sequence[str] = PROBES,
    knn_k: int = 20,
    class_names: Sequence[str] = (),
) -> tuple[list[str], dict[str, str]]:
    """Whether a train/test split is big enough for the probes, and which cannot run at all.

    A probe cannot run (single-label) when the train split has fewer than 2 classes, or no test
    example has a class seen in training (every probe would score 0); (multi-label) when no train
    or no test image has an object, or every class present in the test split is present in every
    test image (any scores give an AP of 100). The split is too small, with a warning, when some
    test classes are absent from training, there are fewer than :data:`MIN_TRAIN_PER_CLASS` train
    examples per class, fewer test examples than classes or than :data:`MIN_TEST`, or (kNN) fewer
    train examples than ``knn_k``.

    Args:
        train_y, test_y: the labels the probes see: ``(N,)`` known class indices, or ``(N, K)``
            multi-hot targets when ``multilabel``.
        multilabel: the task is multi-label (mAP).
        probes: the probes asked for.
        knn_k: neighbours of the kNN probe.
        class_names: names of the classes, for the messages.

    Returns:
        ``(warnings, not_run)``: none or one warning naming the train and test counts, the classes
        and what the probes need; probe -> why it cannot run.

    Example:
        >>> import torch
        >>> warns, not_run = check_split(torch.tensor([0, 1, 2]), torch.tensor([3]), False, ("knn",))
        >>> sorted(not_run), "no test example has a class seen in training" in not_run["knn"]
        (['knn'], True)
    """
    _check_labels(train_y, test_y, multilabel)
    what = "images" if multilabel else "examples"
    n_tr, n_te = len(train_y), len(test_y)
    if multilabel:
        in_tr, in_te = (train_y > 0.5).any(0), (test_y > 0.5).any(0)
    else:
        k_all = max(int(train_y.max()), int(test_y.max())) + 1
        in_tr = torch.bincount(train_y, minlength=k_all) > 0
        in_te = torch.bincount(test_y, minlength=k_all) > 0
    k = int((in_tr | in_te).sum())
    head = (
        f"the split has {n_tr} train and {n_te} test {what} of {k} classes "
        f"({int(in_tr.sum())} in train, {int(in_te.sum())} in test)"
    )
    stop, notes = None, []
    unseen = in_te & ~in_tr
    if multilabel:
        always = in_te & (test_y > 0.5).all(0)
        if not bool(in_tr.any()) or not bool(in_te.any()):
            stop = f"no {'train' if not bool(in_tr.any()) else 'test'} image has an object"
        elif bool(always[in_te].all()):
            stop = (
                "every class present in the test split is present in every test image, so any "
                "scores give an AP of 100"
            )
        elif bool(always.any()):
            notes.append(
                f"{int(always.sum())} classes ({_names(always, class_names)}) are present in every "
                "test image and score an AP of 100 whatever the encoder"
            )
        if stop is None and bool(unseen.any()):
            notes.append(
                f"{int(unseen.sum())} classes present in test ({_names(unseen, class_names)}) are in no "
                "train image: no probe can learn them"
            )
    elif int(in_tr.sum()) < 2:
        stop = "a probe needs at least 2 classes in the train split"
    else:
        missed = int(unseen[test_y].sum())
        if missed == n_te:
            stop = "no test example has a class seen in training, so every probe would score 0"
        elif missed:
            notes.append(
                f"{missed} of {n_te} test examples have a class absent from the train split "
                f"({_names(unseen, class_names)}): no probe can get them right, so no score exceeds "
                f"{100 * (n_te - missed) / n_te:.1f}%"
            )
    if stop is not None:
        notes.insert(0, stop + "; no probe runs")
    else:
        if n_tr < MIN_TRAIN_PER_CLASS * k:
            notes.append(
                f"the probes want at least {MIN_TRAIN_PER_CLASS} train {what} per class "
                f"({MIN_TRAIN_PER_CLASS * k}); with {n_tr / k:.1f} per class the scores are mostly noise"
            )
        if n_te < max(k, MIN_TEST):
            each = "" if multilabel else f": each test example moves a score by {100 / n_te:.1f} points"
            notes.append(
                f"a score wants at least {max(k, MIN_TEST)} test {what} (one per class, and "
                f"{MIN_TEST} at the least){each}"
            )
        if "knn" in probes and n_tr < knn_k:
            notes.append(
                f"kNN asks for {knn_k} neighbours but the train split has {n_tr} {what}, so every "
                f"train {what[:-1]} votes on every test {what[:-1]}"
            )
    not_run = {p: f"{head}: {stop}" for p in probes} if stop is not None else {}
    return ([f"{head}: " + "; ".join(notes)] if notes else []), not_run


def evaluate_encoder(
    encoder: nn.Module,
    source: Any,
    view_size: int = 32,
    task: str = "image",
    multilabel: bool | None = None,
    probes: Sequence[str] = PROBES,
    seed: int = 0,
    max_images: int | None = None,
    device: torch.device | str = "cpu",
    test_fraction: float = 0.25,
    linear_epochs: int = 100,
    attentive_epochs: int = 30,
    knn_k: int = 20,
    knn_temperature: float = 0.07,
    batch_size: int = 256,
    test: ProbeData | None = None,
    progress: bool | str = False,
) -> dict[str, Any]:
    """Probe a frozen encoder on a held-out split of a source (docs/method.md).

    Args:
        encoder: maps ``(B, 3, S, S)`` views in ``[0, 1]`` to ``(pooled, tokens)``.
        source: anything :func:`probe_views` takes, or a ready :class:`ProbeData`
            (render once, probe many encoders).
        view_size: side of the views.
        task: ``"image"`` or ``"objects"`` (see :mod:`agents.eval.features`).
        multilabel: None: multi-label (mAP on the multi-hot object targets)
            when the data has targets and no image labels, else single-label top-1.
        probes: a subset of :data:`PROBES`.
        seed: the image subset, the train/test split (by image) and the probes' seeds.
        max_images: a random subset of the source's images; None for all.
        device: where the encoder runs (and views are rendered).
        test_fraction: fraction of images held out.
        linear_epochs, attentive_epochs: probe training epochs.
        knn_k, knn_temperature: kNN parameters.
        batch_size: encoder and probe minibatch size.
        test: a separate held-out :class:`ProbeData` (e.g. scenes of unseen object
            instances); then every example of ``source`` trains the probes and
            ``test_fraction`` is unused.
        progress: show rendering, features and each probe's epochs on stderr
            (:class:`~vpt_env.progress.Progress`); a string also names the encoder on each line.

    Returns:
        ``{"metric": "top1" | "map", "task", "linear": {...}, "knn": {...},
        "attentive": {...}, "n_train", "n_test", "chance"}`` (probes not asked for are absent),
        plus ``"warnings"`` (a list: the split is too small for the probes, see
        :func:`check_split`; each is also issued as a ``RuntimeWarning``) and ``"not_run"``
        (probe -> why it could not run) when there are any.
    """
    unknown = [p for p in probes if p not in PROBES]
    if isinstance(probes, str) or unknown or not probes:
        raise ValueError(f"probes must be a non-empty sequence of names from {PROBES}, got {probes!r}")
    if isinstance(source, ProbeData):
        data = source
    else:
        data = probe_views(
            source,
            "all",
            view_size=view_size,
            max_images=max_images,
            seed=seed,
            task=task,
            test_fraction=test_fraction,
            device=device,
            progress=bool(progress),
        )
    if multilabel is None:
        multilabel = data.targets is not None and not bool((data.labels >= 0).any())
    if multilabel and data.targets is None:
        raise ValueError(
            "multilabel=True needs multi-hot targets: use a source with object boxes and task='image'"
        )
    if test is None:
        _, test_img = split_indices(data.num_images, test_fraction, seed)
        is_test = torch.isin(data.image, test_img)
        train_data, test_data = data.subset((~is_test).nonzero()[:, 0]), data.subset(is_test.nonzero()[:, 0])
    else:
        if multilabel and test.targets is None:
            raise ValueError("multilabel=True needs multi-hot targets in test too")
        train_data, test_data = data, test

    def labelled(part: ProbeData) -> tuple[Tensor, Tensor]:
        y = part.targets if multilabel else part.labels
        assert y is not None
        keep = torch.ones(len(y), dtype=torch.bool) if multilabel else part.labels >= 0
        return part.views[keep], y[keep]

    (v_tr, y_tr), (v_te, y_te) = labelled(train_data), labelled(test_data)
    if len(y_tr) == 0 or len(y_te) == 0:
        raise ValueError(
            f"the split left {len(y_tr)} train and {len(y_te)} test examples with labels; "
            "use more images (max_images) or another test_fraction"
        )
    out: dict[str, Any] = {"metric": metric_name(multilabel), "task": task}
    problems, not_run = check_split(y_tr, y_te, multilabel, probes, knn_k, data.class_names)
    for text in problems:
        warnings.warn(text, RuntimeWarning, stacklevel=2)
    run = [p for p in probes if p not in not_run]
    prefix = f"{progress}: " if isinstance(progress, str) else ""

    def bar(total: int, what: str, unit: str) -> Progress:
        return Progress(total, prefix + what, unit=unit, enabled=bool(progress))

    if run:
        with bar(len(v_tr) + len(v_te), "features", "views") as b:
            f_tr = extract_features(encoder, v_tr, batch_size=batch_size, device=device, progress=b)
            f_te = extract_features(encoder, v_te, batch_size=batch_size, device=device, progress=b)
    fit = {"multilabel": multilabel, "batch_size": batch_size, "seed": seed}
    if "linear" in run:
        with bar(linear_epochs, "linear probe", "epochs") as b:
            out["linear"] = fit_linear_probe(
                f_tr.pooled, y_tr, f_te.pooled, y_te, epochs=linear_epochs, progress=b, **fit
            )
    if "knn" in run:
        out["knn"] = knn_eval(
            f_tr.pooled, y_tr, f_te.pooled, y_te, multilabel, k=knn_k, temperature=knn_temperature
        )
    if "attentive" in run:
        with bar(attentive_epochs, "attention-pooling probe", "epochs") as b:
            out["attentive"] = fit_attentive_probe(
                f_tr.tokens, y_tr, f_te.tokens, y_te, epochs=attentive_epochs, progress=b, **fit
            )
    out.update(n_train=len(y_tr), n_test=len(y_te))
    if not (multilabel and not_run):  # no test positive: no constant-score mAP either
        out["chance"] = chance_level(y_tr, y_te, multilabel)
    if problems:
        out["warnings"] = problems
    if not_run:
        out["not_run"] = not_run
    return out


def _cell(values: list[float]) -> str:
    pct = [100.0 * v for v in values]
    if len(pct) == 1:
        return f"{pct[0]:.1f}"
    mean = sum(pct) / len(pct)
    std = math.sqrt(sum((v - mean) ** 2 for v in pct) / (len(pct) - 1))
    return f"{mean:.1f} ± {std:.1f}"


def format_table(results: dict[str, dict[str, Any] | Sequence[dict[str, Any]]]) -> str:
    """A markdown table of :func:`evaluate_encoder` results, in percent.

    Args:
        results: encoder name -> one result, or a list of results (one per
            seed: cells show mean ± sample standard deviation).

    Returns:
        Rows = encoders, columns = the probes present, then chance; a probe that could not run
        (``"not_run"``) reads ``not run``.
    """
    if not results:
        raise ValueError("results must name at least one encoder")
    runs = {name: [r] if isinstance(r, dict) else list(r) for name, r in results.items()}
    if any(not rs for rs in runs.values()):
        raise ValueError("results must hold at least one result per encoder")
    metrics = {r.get("metric", "top1") for rs in runs.values() for r in rs}
    if len(metrics) != 1:
        raise ValueError(f"results must share one metric, got {sorted(metrics)}")
    metric = metrics.pop()
    cols = [p for p in PROBES if any(p in r or p in r.get("not_run", {}) for rs in runs.values() for r in rs)]
    lines = [
        "| " + " | ".join([f"encoder ({metric}, %)", *cols, "chance"]) + " |",
        "| " + " | ".join(["---"] * (len(cols) + 2)) + " |",
    ]
    for name, rs in runs.items():
        cells = [
            _cell([r[p][metric] for r in rs])
            if all(p in r for r in rs)
            else "not run"
            if any(p in r.get("not_run", {}) for r in rs)
            else "-"
            for p in cols
        ]
        chance = _cell([r["chance"] for r in rs]) if all("chance" in r for r in rs) else "-"
        lines.append("| " + " | ".join([name, *cells, chance]) + " |")
    return "\n".join(lines)


#: How the sentence of :func:`compare_to_baseline` names each probe.
PROBE_LABELS = {"linear": "linear", "knn": "kNN", "attentive": "attention pooling"}


def _score_name(result: dict[str, Any]) -> str:
    metric = "mAP" if result.get("metric") == "map" else "top-1"
    region = {"objects": "object-region ", "image": "whole-image "}.get(result.get("task", ""), "")
    return region + metric


def compare_to_baseline(
    results: dict[str, dict[str, Any]], baseline: str = "random init", seed: int = 0
) -> str:
    """One plain sentence per encoder: its score minus the baseline's, per probe, in points.

    Only differences computed from ``results`` are stated; a probe that did not run for either
    encoder reads ``not run``, and when none ran on both the sentence says so.

    Args:
        results: encoder name -> one :func:`evaluate_encoder` result; ``baseline`` among them.
        baseline: the name of the randomly initialised encoder of the same architecture.
        seed: the seed of its initialisation (and of the split and the probes).

    Returns:
        The sentences, one line each.

    Example:
        >>> run = {"metric": "top1", "task": "objects", "linear": {"top1": 0.318}}
        >>> base = {"metric": "top1", "task": "objects", "linear": {"top1": 0.14}}
        >>> print(compare_to_baseline({"run": run, "random init": base}).replace("; ", ";\\n"))
        run against random init (same architecture, seed 0), object-region top-1: linear +17.8 points;
        one seed, differences of a few points are within seed-to-seed noise.
    """
    if baseline not in results or len(results) < 2:
        raise ValueError(f"results must hold {baseline!r} and another encoder, got {list(results)}")
    base = results[baseline]
    lines = []
    for name, r in results.items():
        if name == baseline:
            continue
        metric = r.get("metric", "top1")
        if base.get("metric", "top1") != metric:
            raise ValueError(f"{name!r} and {baseline!r} must share one metric")
        parts, unit = [], " points"  # after the first difference only
        for p in PROBES:
            if p in r and p in base:
                diff = 100.0 * (r[p][metric] - base[p][metric])
                parts.append(f"{PROBE_LABELS[p]} {diff:+.1f}{unit}")
                unit = ""
            elif p in r.get("not_run", {}) or p in base.get("not_run", {}):
                parts.append(f"{PROBE_LABELS[p]} not run")
        head = f"{name} against {baseline} (same architecture, seed {seed}), {_score_name(r)}: "
        if unit:  # no difference computed
            lines.append(head + "no probe ran on both, nothing to compare.")
            continue
        lines.append(
            head + ", ".join(parts) + "; one seed, differences of a few points are within seed-to-seed noise."
        )
    return "\n".join(lines)
