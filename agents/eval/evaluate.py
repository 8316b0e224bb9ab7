"""One call per encoder: frozen features once, then the linear, kNN and attentive probes.

Example:
    >>> format_table({"random": {"metric": "top1", "linear": {"top1": 0.5}, "chance": 0.25}})
    '| encoder (top1, %) | linear | chance |\\n| --- | --- | --- |\\n| random | 50.0 | 25.0 |'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from agents.eval.attentive import fit_attentive_probe
from agents.eval.features import ProbeData, extract_features, probe_views, split_indices
from agents.eval.knn import knn_eval
from agents.eval.linear import fit_linear_probe, metric_name
from agents.eval.metrics import mean_average_precision

__all__ = ["PROBES", "chance_level", "evaluate_encoder", "format_table"]

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
) -> dict[str, Any]:
    """Probe a frozen encoder on a held-out split of a source (METHOD.md section 6).

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

    Returns:
        ``{"metric": "top1" | "map", "task", "linear": {...}, "knn": {...},
        "attentive": {...}, "n_train", "n_test", "chance"}`` (probes not run are absent).
    """
    unknown = [p for p in probes if p not in PROBES]
    if isinstance(probes, str) or unknown or not probes:
        raise ValueError(f"probes must be a non-empty sequence of names from {PROBES}, got {probes!r}")
    if isinstance(source, ProbeData):
        data = source
    else:
        data = probe_views(
            source, "all", view_size=view_size, max_images=max_images, seed=seed, task=task,
            test_fraction=test_fraction, device=device,
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
    f_tr = extract_features(encoder, v_tr, batch_size=batch_size, device=device)
    f_te = extract_features(encoder, v_te, batch_size=batch_size, device=device)
    out: dict[str, Any] = {"metric": metric_name(multilabel), "task": task}
    if "linear" in probes:
        out["linear"] = fit_linear_probe(
            f_tr.pooled, y_tr, f_te.pooled, y_te, multilabel, epochs=linear_epochs,
            batch_size=batch_size, seed=seed,
        )
    if "knn" in probes:
        out["knn"] = knn_eval(
            f_tr.pooled, y_tr, f_te.pooled, y_te, multilabel, k=knn_k, temperature=knn_temperature
        )
    if "attentive" in probes:
        out["attentive"] = fit_attentive_probe(
            f_tr.tokens, y_tr, f_te.tokens, y_te, multilabel, epochs=attentive_epochs,
            batch_size=batch_size, seed=seed,
        )
    out.update(n_train=len(y_tr), n_test=len(y_te), chance=chance_level(y_tr, y_te, multilabel))
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
        Rows = encoders, columns = the probes present, then chance.
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
    cols = [p for p in PROBES if any(p in r for rs in runs.values() for r in rs)]
    lines = [
        "| " + " | ".join([f"encoder ({metric}, %)", *cols, "chance"]) + " |",
        "| " + " | ".join(["---"] * (len(cols) + 2)) + " |",
    ]
    for name, rs in runs.items():
        cells = [_cell([r[p][metric] for r in rs]) if all(p in r for r in rs) else "-" for p in cols]
        chance = _cell([r["chance"] for r in rs]) if all("chance" in r for r in rs) else "-"
        lines.append("| " + " | ".join([name, *cells, chance]) + " |")
    return "\n".join(lines)
