"""Export a pre-trained encoder and load it back in one call.

Two formats, both holding the weights *and* the encoder's config (the
keyword arguments of :func:`agents.encoders.make_encoder`):

* ``.safetensors`` (default): the tensors, with the config as JSON in the
  file's metadata; loading runs no code.
* ``.pt``: ``{"format", "config", "state_dict"}`` saved by ``torch.save``,
  loaded with ``weights_only=True``.

Example:
    >>> import tempfile, torch
    >>> from agents.encoders import make_encoder
    >>> enc = make_encoder("cnn", width=8)
    >>> path = save_encoder(enc, tempfile.mkdtemp() + "/encoder.safetensors")
    >>> back = load_encoder(path)
    >>> x = torch.rand(2, 3, 32, 32)
    >>> torch.equal(enc.eval()(x).pooled, back(x).pooled)
    True
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from agents.checkpoint import LATEST, load_checkpoint
from agents.encoders import Encoder, make_encoder

__all__ = ["FORMAT", "load_encoder", "load_system", "save_encoder"]

#: Format tag written into exported files.
FORMAT = "vpt-encoder-v1"


def save_encoder(encoder: Encoder, path: str | Path) -> Path:
    """Write ``encoder``'s weights and config to ``path`` (``.safetensors`` or ``.pt``).

    The file is written to a temporary name and renamed, so a crash never
    leaves a half-written export.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix not in (".safetensors", ".pt"):
        raise ValueError(f"path must end in .safetensors or .pt, got {str(path)!r}")
    config = getattr(encoder, "config", None)
    if not isinstance(config, dict):
        raise TypeError(
            f"encoder must be an agents.encoders.Encoder with a config, got {type(encoder).__name__}"
        )
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".safetensors":
        save_file(state, str(tmp), metadata={"format": FORMAT, "config": json.dumps(config)})
    else:
        torch.save({"format": FORMAT, "config": json.dumps(config), "state_dict": state}, tmp)
    tmp.replace(path)
    return path


def load_encoder(path: str | Path, device: str | torch.device = "cpu") -> Encoder:
    """Load an encoder written by :func:`save_encoder` (or take it from a run's checkpoint).

    Args:
        path: an exported ``.safetensors`` / ``.pt`` file, or a ``vpt pretrain``
            run directory / checkpoint (the online encoder is taken from it).
        device: where to put it.

    Returns:
        The encoder, in eval mode.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no encoder, run directory or checkpoint at {path}")
    in_run = path.suffix == ".pt" and (path.parent / "run.json").is_file()
    if path.is_dir() or path.name == LATEST or in_run:
        return load_system(path, device).encoder.eval()
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as err:  # safetensors raises its own error type for a corrupt header
            raise ValueError(f"{path} is not a readable safetensors file ({err})") from err
    elif path.suffix == ".pt":
        blob: dict[str, Any] = load_checkpoint(path)
        meta, state = blob, blob.get("state_dict", {})
    else:
        raise ValueError(f"path must be a run directory or end in .safetensors or .pt, got {str(path)!r}")
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not an encoder exported by vpt (format {meta.get('format')!r})")
    encoder = make_encoder(**json.loads(meta["config"]))
    encoder.load_state_dict(state)
    return encoder.to(device).eval()


def load_system(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the system of a ``vpt pretrain`` run and load its checkpoint (weights only).

    Args:
        path: the run directory or its checkpoint file.
        device: where to put it.
    """
    from agents.pretrain import read_run
    from agents.systems import make_system

    path = Path(path)
    ckpt = path / LATEST if path.is_dir() else path
    if not ckpt.is_file():
        raise FileNotFoundError(f"no checkpoint at {ckpt}")
    _, system_cfg, _ = read_run(path)
    system = make_system(system_cfg)
    system.load_state_dict(load_checkpoint(ckpt)["system"])
    return system.to(device)
