"""Checkpoints: every part of a run's state in one file, written atomically.

The trainer hands over its parts (model, optimizer, schedule, EMA, guard, validation, data
source, random-number generators, progress), each with ``state_dict``/``load_state_dict``;
the checkpoint holds exactly what they return, so a field a part adds is saved without
anyone listing it here. Tensors go into a safetensors file and everything else (nested
dicts, lists, tuples, numbers, strings) into its metadata as strict JSON, so the two can
never get out of step. A checkpoint with a non-finite tensor is refused: a rollback target
must be a good state.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import Tensor

from flowfit.errors import CheckpointError
from flowfit.files import atomic_path

CHECKPOINT = "checkpoint.safetensors"


class Checkpointer:
    """Saves and restores the parts of a run in ``directory``, every ``every`` steps."""

    def __init__(self, directory: str | Path, every: int) -> None:
        self.directory, self.every = Path(directory), every

    @property
    def path(self) -> Path:
        return self.directory / CHECKPOINT

    def exists(self) -> bool:
        return self.path.is_file()

    def due(self, step: int) -> bool:
        return bool(self.every) and step % self.every == 0

    def save(self, parts: dict[str, Any]) -> None:
        tensors: dict[str, Tensor] = {}
        state = _encode({name: part.state_dict() for name, part in parts.items()}, tensors)
        broken = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if broken:
            raise CheckpointError(f"refusing to write a checkpoint with non-finite values in {', '.join(broken[:3])}")
        self.directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as temporary:
            tensors = {k: v.detach().cpu().clone() for k, v in tensors.items()}  # clones share no memory
            save_file(tensors, str(temporary), metadata={"state": json.dumps(state, allow_nan=False)})

    def load(self, parts: dict[str, Any]) -> None:
        try:
            tensors = load_file(str(self.path))
            with safe_open(str(self.path), "pt") as handle:
                state = json.loads((handle.metadata() or {})["state"])
        except (OSError, SafetensorError, KeyError, json.JSONDecodeError) as error:
            raise CheckpointError(f"cannot read the checkpoint {self.path} ({error})") from None
        state = _decode(state, tensors)
        missing = sorted(set(parts) - set(state))
        if missing:
            raise CheckpointError(f"the checkpoint {self.path} has no state for {', '.join(missing)}")
        for name, part in parts.items():
            try:
                part.load_state_dict(state[name])
            except (RuntimeError, KeyError, ValueError, TypeError) as error:
                first = str(error).strip().splitlines()[0]
                raise CheckpointError(f"the checkpoint {self.path} does not fit this run ({name}: {first})") from None


def _encode(value: Any, tensors: dict[str, Tensor], path: str = "") -> Any:
    """JSON with tensors replaced by ``{"tensor": key}`` (stored in ``tensors``); tuples,
    dicts with non-string keys and non-finite floats are marked so they come back as they were."""
    if isinstance(value, Tensor):
        tensors[path] = value
        return {"tensor": path}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {"dict": {k: _encode(v, tensors, f"{path}.{k}") for k, v in value.items()}}
        return {"items": [[k, _encode(v, tensors, f"{path}.{k}")] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"tuple": [_encode(v, tensors, f"{path}.{i}") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, tensors, f"{path}.{i}") for i, v in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        return {"float": str(value)}
    return value


def _decode(value: Any, tensors: dict[str, Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    (kind, content), *_ = value.items()
    if kind == "tensor":
        return tensors[content]
    if kind == "dict":
        return {k: _decode(v, tensors) for k, v in content.items()}
    if kind == "items":
        return {k: _decode(v, tensors) for k, v in content}
    if kind == "tuple":
        return tuple(_decode(v, tensors) for v in content)
    return float(content)
