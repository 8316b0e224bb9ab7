"""Frozen-encoder evaluation: probe views, features, linear / kNN / attentive probes, metrics.

See docs/method.md: probes on the frozen encoder (linear on the pooled
vector, kNN, attention pooling over the spatial tokens), whole-image and
object-region tasks, a held-out split by image.
"""

from agents.eval.attentive import AttentivePoolingProbe, fit_attentive_probe
from agents.eval.evaluate import (
    PROBES,
    chance_level,
    check_split,
    compare_to_baseline,
    evaluate_encoder,
    format_table,
)
from agents.eval.features import (
    Features,
    ProbeData,
    extract_features,
    probe_views,
    split_indices,
)
from agents.eval.geometry import pca_whiten, spectrum_stats
from agents.eval.knn import knn_eval, knn_predict, knn_predict_multilabel
from agents.eval.linear import fit_linear_probe, standardise
from agents.eval.metrics import average_precision, mean_average_precision, top1_accuracy

__all__ = [
    "PROBES",
    "AttentivePoolingProbe",
    "Features",
    "ProbeData",
    "average_precision",
    "chance_level",
    "check_split",
    "compare_to_baseline",
    "evaluate_encoder",
    "extract_features",
    "fit_attentive_probe",
    "fit_linear_probe",
    "format_table",
    "knn_eval",
    "knn_predict",
    "knn_predict_multilabel",
    "mean_average_precision",
    "pca_whiten",
    "probe_views",
    "spectrum_stats",
    "split_indices",
    "standardise",
    "top1_accuracy",
]
