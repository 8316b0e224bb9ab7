"""Multi-view NT-Xent (SimCLR's InfoNCE): the base loss of ABSimCLR.

With ``V`` views of each of ``B`` images, each of the ``B * V`` views is an
anchor; its positives are the ``V - 1`` other views of the same image and the
denominator runs over every other view in the batch (positives included), as in
SupCon's "L_out" with image identity as the label. With ``V = 2`` this is
SimCLR's NT-Xent exactly.

Example:
    >>> import torch
    >>> from agents.losses import nt_xent, simclr_probs
    >>> z = torch.eye(4).reshape(2, 2, 4)  # views of one image orthogonal: a poor embedding
    >>> round(nt_xent(z, temperature=1.0).item(), 4)
    1.0986
    >>> simclr_probs(torch.eye(2), torch.eye(2), temperature=0.1).argmax(dim=1).tolist()
    [0, 1]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["instance_probs", "nt_xent", "simclr_probs"]


def _check_temperature(temperature: float) -> None:
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool):
        raise TypeError(f"temperature must be a positive float, got {type(temperature).__name__}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def nt_xent(z: Tensor, temperature: float = 0.1) -> Tensor:
    """Multi-positive NT-Xent over ``V`` views of ``B`` images.

    For anchor ``a`` (a view of image ``b``) and positive ``p`` (another view of
    ``b``): ``-log(exp(s_ap / t) / sum_{n != a} exp(s_an / t))`` with ``s`` the
    cosine similarity; the loss is the mean over all anchors and their positives.
    Under DDP the caller gathers ``z`` first (:func:`agents.distributed.all_gather_with_grad`);
    the loss is invariant to the order of the images.

    Args:
        z: embeddings (normalised here).
        temperature: softmax temperature ``t``.

    Returns:
        Scalar loss.

    Shape:
        z: ``(B, V, E)`` with ``V >= 2``; returns ``()``.
    """
    if z.ndim != 3:
        raise ValueError(f"z must be (B, V, E), got shape {tuple(z.shape)}")
    b, v, _ = z.shape
    if v < 2:
        raise ValueError(f"z must hold V >= 2 views per image (dim 1), got V = {v}")
    if b < 1:
        raise ValueError("z must hold at least one image, got B = 0")
    _check_temperature(temperature)
    flat = F.normalize(z.reshape(b * v, -1), dim=-1)
    sim = flat @ flat.T / temperature
    eye = torch.eye(b * v, dtype=torch.bool, device=z.device)
    # An anchor is never its own negative; -inf drops it from the denominator.
    log_prob = sim.masked_fill(eye, float("-inf")).log_softmax(dim=-1)
    image = torch.arange(b, device=z.device).repeat_interleave(v)
    positive = (image[:, None] == image[None, :]) & ~eye
    # Boolean indexing keeps only finite entries, so the -inf diagonal never reaches the gradient.
    return -log_prob[positive].mean()


def simclr_probs(z_query: Tensor, z_keys: Tensor, temperature: float) -> Tensor:
    """SimCLR's distribution over keys for each query: ``softmax_l(cos(q, k_l) / t)``.

    ABSimCLR's base annotation model: the annotation space is the batch's views
    (instance identities), so ``p(l | x)`` says which other view ``x`` matches.

    Args:
        z_query: query embeddings.
        z_keys: key embeddings (the annotation space).
        temperature: softmax temperature.

    Returns:
        Rows summing to one.

    Shape:
        z_query: ``(M, E)``; z_keys: ``(L, E)``; returns ``(M, L)``.
    """
    if z_query.ndim != 2:
        raise ValueError(f"z_query must be (M, E), got shape {tuple(z_query.shape)}")
    if z_keys.ndim != 2 or z_keys.shape[0] == 0:
        raise ValueError(f"z_keys must be (L, E) with L >= 1, got shape {tuple(z_keys.shape)}")
    if z_query.shape[1] != z_keys.shape[1]:
        raise ValueError(
            f"z_query and z_keys must share the embedding size E, got z_query {tuple(z_query.shape)} "
            f"and z_keys {tuple(z_keys.shape)}"
        )
    _check_temperature(temperature)
    return _cosine_logits(z_query, z_keys, temperature).softmax(dim=-1)


def _cosine_logits(z_query: Tensor, z_keys: Tensor, temperature: float) -> Tensor:
    return F.normalize(z_query, dim=-1) @ F.normalize(z_keys, dim=-1).T / temperature


def instance_probs(query: Tensor, keys: Tensor, alt: Tensor, temperature: float) -> Tensor:
    """ABSimCLR's ``p(l | x_j)`` over instance annotations, never scoring a view against itself.

    Image ``l``'s annotation is its view 0 (embedding ``keys[l]``), and the first ``own``
    query images are annotation images too, so view 0 of such an image would meet *itself*
    (cosine 1 when AB shares the base's views; the same box when AB's views are crop-only
    copies) and pile its mass on its own image. For those ``own`` pairs ``alt[b]`` (the image's
    view 1) stands in for the key: every view meets its own image through *another* view::

        logit[b, j, l] = cos(query[b, j], keys[l]) / t
        logit[b, 0, b] = cos(query[b, 0], alt[b]) / t          for b < own
        p[b, j]        = softmax_l(logit[b, j])

    Args:
        query: embeddings of the views whose annotations are predicted.
        keys: embeddings of the annotation views (view 0 of each annotation image).
        alt: view-1 embeddings of the first ``own`` images (both query and annotation images).
        temperature: softmax temperature (> 0).

    Returns:
        Rows summing to one.

    Shape:
        query: ``(B, V, E)``; keys: ``(L, E)``; alt: ``(own, E)`` with ``own <= min(B, L)``;
        returns ``(B, V, L)``.

    Example:
        >>> q = torch.eye(2)[:, None].expand(2, 2, 2)     # both views of image b point along e_b
        >>> keys = torch.eye(2)                           # image b's annotation (its view 0): e_b
        >>> alt = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # view 1 of each image, orthogonal to it
        >>> p = instance_probs(q, keys, alt, temperature=1.0)
        >>> [round(x, 3) for x in p[0, 1].tolist()]   # view 1 meets its image's view 0: softmax([1, 0])
        [0.731, 0.269]
        >>> [round(x, 3) for x in p[0, 0].tolist()]   # view 0 meets view 1, not itself: softmax([0, 0])
        [0.5, 0.5]
    """
    if query.ndim != 3 or keys.ndim != 2 or alt.ndim != 2:
        raise ValueError(
            f"query must be (B, V, E), keys (L, E) and alt (own, E), got {tuple(query.shape)}, "
            f"{tuple(keys.shape)}, {tuple(alt.shape)}"
        )
    own = alt.shape[0]
    if own > min(query.shape[0], keys.shape[0]):
        raise ValueError(f"alt holds {own} rows, more than min(B, L) = {min(query.shape[0], keys.shape[0])}")
    _check_temperature(temperature)
    logits = _cosine_logits(query, keys, temperature)  # (B, V, L)
    if own:
        idx = torch.arange(own, device=logits.device)
        own_logit = (F.normalize(query[:own, 0], dim=-1) * F.normalize(alt, dim=-1)).sum(-1) / temperature
        logits = logits.index_put((idx, torch.zeros_like(idx), idx), own_logit)
    return logits.softmax(dim=-1)
