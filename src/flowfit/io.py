"""Saving and loading flows: ``model.safetensors`` (tensors) + ``config.json`` (how to
rebuild the flow: its class and constructor arguments, see :mod:`flowfit.config`). No pickle:
loading a model never runs code from the file. Both files are written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from flowfit._version import __version__
from flowfit.config import from_config, to_config
from flowfit.errors import CheckpointError
from flowfit.files import atomic_path, write_json
from flowfit.flow import Flow

#: 2: the flow's class and arguments (``"model"``); 1 (flowfit 0.1 before it): a builder's name
FORMAT_VERSION = 2
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def save(flow: Flow, directory: str | Path) -> Path:
    """Save ``flow`` to ``directory`` (created if missing) as ``model.safetensors`` +
    ``config.json``. Any flow made of flowfit modules can be saved, a family's or one you
    composed; a flow whose parameters are not all finite is refused."""
    config = {
        "format": "flowfit",
        "format_version": FORMAT_VERSION,
        "flowfit_version": __version__,
        "torch_version": torch.__version__,
        "dtype": str(flow.dtype).removeprefix("torch."),
        "model": to_config(flow),
        "metadata": flow.metadata,
    }
    state = {name: value.detach().cpu().contiguous() for name, value in flow.state_dict().items()}
    broken = [name for name, value in state.items() if value.is_floating_point() and not torch.isfinite(value).all()]
    if broken:
        raise CheckpointError(f"refusing to save a flow with non-finite values in {', '.join(broken)}")
    directory = Path(directory)
    with atomic_path(directory / WEIGHTS) as temporary:
        save_file(state, str(temporary), metadata={"format": "flowfit"})
    write_json(directory / CONFIG, config)
    return directory


def read_config(directory: str | Path) -> dict[str, Any]:
    """Read and check ``config.json`` of a saved model."""
    directory = Path(directory)
    if not directory.is_dir():
        what = "is a file, not a model directory" if directory.exists() else "the directory does not exist"
        raise CheckpointError(f"no model at {directory}: {what}")
    config_path = directory / CONFIG
    if not config_path.is_file():
        raise CheckpointError(f"no model at {directory}: {CONFIG} is missing")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{config_path} is not valid JSON ({error})") from None
    if not isinstance(config, dict) or config.get("format") != "flowfit":
        raise CheckpointError(f"{config_path} is not a flowfit model config")
    version = config.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{config_path}: format_version must be an integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{directory} was saved by flowfit {config.get('flowfit_version')} in format {version}; "
            f"this flowfit ({__version__}) reads format {FORMAT_VERSION}"
        )
    if version < FORMAT_VERSION:
        raise CheckpointError(
            f"{directory} was saved by an earlier flowfit (format {version}), whose coupling flows mixed columns "
            "differently; train it again with this version"
        )
    if not isinstance(config.get("model"), dict):
        raise CheckpointError(f"{config_path} does not say which flow it holds")
    return config


def load(directory: str | Path, device: str | torch.device = "cpu") -> Flow:
    """Rebuild a flow saved by :func:`save` (in eval mode, on ``device``)."""
    directory = Path(directory)
    config = read_config(directory)
    dtype = {"float32": torch.float32, "float64": torch.float64}.get(str(config.get("dtype", "float32")))
    if dtype is None:
        raise CheckpointError(f"{directory / CONFIG}: unknown dtype {config.get('dtype')!r}")
    flow = from_config(config["model"])
    if not isinstance(flow, Flow):
        raise CheckpointError(f"{directory / CONFIG} describes a {type(flow).__name__}, not a flow")
    weights = directory / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"no model at {directory}: {WEIGHTS} is missing")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{weights} is corrupt or truncated ({error})") from None
    try:
        flow.to(dtype).load_state_dict(state)
    except RuntimeError as error:
        first = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
        raise CheckpointError(f"{weights} does not match its {CONFIG}: {first}") from None
    metadata = config.get("metadata")
    flow.metadata = dict(metadata) if isinstance(metadata, dict) else {}
    return flow.to(device=device).eval()
