"""Rebuilding modules from JSON: how a saved model says what it is, without pickle.

Every flowfit module that can be saved (transforms, base distributions, conditioner
networks, flows and flow families) derives from :class:`Configurable`, which records the
arguments its constructor was called with. :func:`to_config` turns such a module into plain
JSON (``{"class": "AffineCoupling", "args": {...}}``, nested for modules passed as
arguments) and :func:`from_config` calls the constructors again. Only classes defined in
flowfit itself can be named, and only JSON values reach them, so loading a model never runs
code from the file; the constructors validate their arguments as for any other call.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch

from flowfit.errors import CheckpointError

#: Every configurable class defined in flowfit, by name: what :func:`from_config` may build.
CLASSES: dict[str, type[Configurable]] = {}


class Configurable:
    """Mixin that records ``self.init_arguments``: the constructor's arguments, by name.

    Only the outermost constructor records (a subclass that calls ``super().__init__``
    is rebuilt from its own arguments). Subclasses defined inside flowfit are registered
    under their class name.
    """

    init_arguments: dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__module__.startswith("flowfit."):
            CLASSES[cls.__name__] = cls
        if "__init__" in cls.__dict__:
            cls.__init__ = _recording(cls.__init__)  # type: ignore[method-assign]


def _recording(init: Any) -> Any:
    signature = inspect.signature(init)

    @functools.wraps(init)
    def recording_init(self: Any, *args: Any, **kwargs: Any) -> None:
        outermost = "init_arguments" not in self.__dict__
        if outermost:
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            arguments = dict(bound.arguments)
            del arguments[next(iter(signature.parameters))]  # self
            self.__dict__["init_arguments"] = arguments
        init(self, *args, **kwargs)

    return recording_init


def to_config(value: Any) -> Any:
    """``value`` as JSON: configurable modules as ``{"class", "args"}``, tensors as
    ``{"tensor": [...], "dtype": ...}``, tuples as lists; raises
    :class:`~flowfit.errors.CheckpointError` for anything else."""
    if isinstance(value, Configurable):
        name = type(value).__name__
        if CLASSES.get(name) is not type(value):
            raise CheckpointError(f"{name} is not a flowfit class: a model containing it cannot be saved")
        return {"class": name, "args": {k: to_config(v) for k, v in value.init_arguments.items()}}
    if isinstance(value, torch.Tensor):
        return {"tensor": value.tolist(), "dtype": str(value.dtype).removeprefix("torch.")}
    if isinstance(value, list | tuple):
        return [to_config(v) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise CheckpointError("only dictionaries with string keys can be saved")
        return {k: to_config(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise CheckpointError(
        f"a {type(value).__name__} cannot be saved in a model config: only flowfit modules and JSON values can"
    )


def from_config(config: Any) -> Any:
    """Rebuild what :func:`to_config` wrote; raises
    :class:`~flowfit.errors.CheckpointError` for unknown classes or malformed entries."""
    if isinstance(config, list):
        return [from_config(v) for v in config]
    if not isinstance(config, dict):
        return config
    if "tensor" in config:
        dtype = getattr(torch, str(config.get("dtype")), None)
        if not isinstance(dtype, torch.dtype):
            raise CheckpointError(f"unknown tensor dtype {config.get('dtype')!r}")
        try:
            return torch.tensor(config["tensor"], dtype=dtype)
        except (TypeError, ValueError, RuntimeError) as error:
            raise CheckpointError(f"malformed tensor in the config ({error})") from None
    if "class" not in config:
        return {k: from_config(v) for k, v in config.items()}
    name, args = config["class"], config.get("args", {})
    cls = CLASSES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise CheckpointError(f"the config names {name!r}, which is not a flowfit class")
    if not isinstance(args, dict):
        raise CheckpointError(f"the arguments of {name} must be a JSON object")
    try:
        return cls(**{k: from_config(v) for k, v in args.items()})
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"cannot build {name} from the config ({error})") from None
