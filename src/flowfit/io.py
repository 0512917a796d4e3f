"""Saving and loading flows: ``model.safetensors`` (tensors) + ``config.json`` (how to
rebuild the flow). No pickle: loading a model never runs code from the file.

Every write is atomic: the bytes go to a temporary file in the same folder, which is then
renamed over the target, so a crash never leaves a half-written file.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from flowfit._version import __version__
from flowfit.errors import CheckpointError, InputError
from flowfit.families import FLOWS, build
from flowfit.flow import Flow

FORMAT_VERSION = 1


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


WEIGHTS = "model.safetensors"
CONFIG = "config.json"


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(handle)
    try:
        yield Path(temporary)
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(text)


def write_json(path: str | Path, value: Any) -> None:
    """Write ``value`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(value, indent=2) + "\n")


@contextlib.contextmanager
def atomic_directory(path: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory; on success it replaces ``path``.

    Without ``force`` an existing ``path`` is an error (raised before any work). With it,
    the old directory is swapped out only once the new one is complete.
    """
    path = Path(path)
    if path.exists() and not force:
        raise InputError(f"{path} already exists; pass --force to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    os.chmod(temporary, 0o777 & ~_umask())
    try:
        yield temporary
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old-"))
            os.replace(path, old / path.name)
            os.replace(temporary, path)
            shutil.rmtree(old)
        else:
            os.replace(temporary, path)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary)


def save(flow: Flow, directory: str | Path) -> Path:
    """Save ``flow`` to ``directory`` (created if missing) as ``model.safetensors`` +
    ``config.json``. Refuses a flow whose parameters are not all finite."""
    if flow.config is None:
        raise CheckpointError("this flow was not made by a flowfit builder, so it cannot be rebuilt from a config")
    state = {name: value.detach().cpu().contiguous() for name, value in flow.state_dict().items()}
    broken = [name for name, value in state.items() if value.is_floating_point() and not torch.isfinite(value).all()]
    if broken:
        raise CheckpointError(f"refusing to save a flow with non-finite values in {', '.join(broken)}")
    directory = Path(directory)
    config = {
        "format": "flowfit",
        "format_version": FORMAT_VERSION,
        "flowfit_version": __version__,
        "torch_version": torch.__version__,
        "dtype": str(flow._anchor.dtype).removeprefix("torch."),
        "flow": flow.config,
        "metadata": flow.metadata,
    }
    with atomic_path(directory / WEIGHTS) as temporary:
        save_file(state, str(temporary), metadata={"format": "flowfit"})
    write_json(directory / CONFIG, config)
    return directory


def read_config(directory: str | Path) -> dict[str, Any]:
    """Read and check ``config.json`` of a saved model."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"no model at {directory}: the directory does not exist")
    config_path = directory / CONFIG
    if not config_path.is_file():
        raise CheckpointError(f"no model at {directory}: {CONFIG} is missing")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{config_path} is not valid JSON ({error})") from None
    if not isinstance(config, dict) or config.get("format") != "flowfit":
        raise CheckpointError(f"{config_path} is not a flowfit model config")
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{directory} was saved by flowfit {config.get('flowfit_version')} in format "
            f"{config['format_version']}; this flowfit ({__version__}) reads format {FORMAT_VERSION} at most"
        )
    flow = config.get("flow")
    if not isinstance(flow, dict) or flow.get("builder") not in FLOWS or not isinstance(flow.get("kwargs"), dict):
        raise CheckpointError(f"{config_path} names no flow family this flowfit knows ({sorted(FLOWS)})")
    return config


def load(directory: str | Path, device: str | torch.device = "cpu") -> Flow:
    """Rebuild a flow saved by :func:`save` (in eval mode, on ``device``)."""
    directory = Path(directory)
    config = read_config(directory)
    dtype = getattr(torch, str(config.get("dtype", "float32")), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise CheckpointError(f"{directory / CONFIG}: unknown dtype {config.get('dtype')!r}")
    try:
        flow = build(config["flow"]).to(dtype)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{directory / CONFIG}: cannot build the flow ({error})") from None
    weights = directory / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"no model at {directory}: {WEIGHTS} is missing")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{weights} is corrupt or truncated ({error})") from None
    try:
        flow.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
        raise CheckpointError(f"{weights} does not match its {CONFIG}: {first}") from None
    flow.metadata = dict(config.get("metadata") or {})
    return flow.to(device=device).eval()
