"""The training options: one list, checked in one place.

:class:`TrainOptions` is what :func:`flowfit.fit` takes (``fit(flow, data, steps=...)`` or
``fit(flow, data, options)``), what :class:`flowfit.FlowDensity` exposes as parameters, what
``flowfit train`` offers as command-line options (generated from the fields, with the same
defaults) and what a run saves in ``run.json`` for ``--resume``. Each field's metadata holds
its help text; :func:`markdown_table` writes the table in README.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from flowfit.errors import InputError

FAMILY_DEFAULT = "the family's"


def _option(default: Any, help: str, choices: tuple[str, ...] = ()) -> Any:
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass(frozen=True, kw_only=True)
class TrainOptions:
    """How :func:`flowfit.fit` trains; fields left at ``None`` take the flow family's
    defaults (:attr:`flowfit.Flow.training_defaults`)."""

    steps: int | None = _option(None, "Optimisation steps.")
    batch_size: int | None = _option(
        None, "Samples per step (the global batch, over all processes) [tables: at most an eighth of their rows]."
    )
    lr: float | None = _option(None, "Peak learning rate of Adam.")
    objective: str = _option(
        "mle", "mle (maximum likelihood) or, for a continuous flow (cnf), fm (flow matching).", ("mle", "fm")
    )
    schedule: str = _option(
        "cosine",
        "Learning-rate schedule: cosine (decay to 0), plateau (halve when validation stalls 3 times) or constant.",
        ("cosine", "plateau", "constant"),
    )
    warmup: int = _option(0, "Steps of linear learning-rate warm-up (cosine and constant schedules).")
    clip_grad: float = _option(10.0, "Clip the gradient norm to this value (0: no clipping).")
    ema: float | None = _option(
        None,
        "Average the weights with this EMA decay (e.g. 0.999) and keep the average; 0: no average "
        "[default: realnvp 0.995, tables 0.99, the others none].",
    )
    patience: int | None = _option(
        None, "Stop after this many validations without improvement [default: tables 10, the others none]."
    )
    val_fraction: float = _option(
        0.1, "Share of the data rows held out for validation (tables; generated data get 10,000 fresh draws)."
    )
    val_every: int | None = _option(None, "Validate every this many steps [default: 40 times in a run].")
    compile: str = _option(
        "auto",
        "Compile the training step with torch.compile: auto (spline flows, and continuous flows by flow "
        "matching, in runs of steps x batch size >= 2.5 million rows), on or off.",
        ("auto", "on", "off"),
    )
    mixed_precision: str = _option(
        "auto",
        "Compute the networks' matrix products in bfloat16 while training; the weights, the transforms' arithmetic "
        "and every evaluation stay in the flow's precision: auto (realnvp, and cnf by flow matching, when float32 "
        "on a CPU with bfloat16 products in hardware), on or off.",
        ("auto", "on", "off"),
    )
    max_retries: int = _option(3, "Rollbacks the divergence guard may make before training stops with an error.")
    checkpoint_every: int = _option(1000, "Checkpoint every this many steps (and on Ctrl-C); 0: only on Ctrl-C.")
    seed: int = _option(
        0, "Random seed of the batches, the validation split and fresh draws (flowfit train: the weights too)."
    )

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):  # numpy's numbers are numbers too
            value = getattr(self, item.name)
            if isinstance(value, numbers.Integral) and not isinstance(value, bool | int):
                object.__setattr__(self, item.name, int(value))
            elif isinstance(value, numbers.Real) and not isinstance(value, bool | int | float):
                object.__setattr__(self, item.name, float(value))
        check_types(self)
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if item.metadata["choices"] and value not in item.metadata["choices"]:
                raise InputError(
                    f"{_name(item.name)} must be one of {', '.join(item.metadata['choices'])}, got {value!r}"
                )
        for name in ("steps", "batch_size", "patience", "val_every"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f"{_name(name)} must be a positive integer, got {value}")
        for name in ("warmup", "max_retries", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise InputError(f"{_name(name)} must be >= 0, got {getattr(self, name)}")
        if self.lr is not None and not 0 < self.lr < float("inf"):
            raise InputError(f"{_name('lr')} must be a positive number, got {self.lr}")
        if not 0 <= self.clip_grad < float("inf"):
            raise InputError(f"{_name('clip_grad')} must be >= 0 (0: no clipping), got {self.clip_grad}")
        if self.ema is not None and not 0 <= self.ema < 1:
            raise InputError(f"{_name('ema')} must be a decay in [0, 1) (0: no average), got {self.ema}")
        if not 0 <= self.seed < 2**63:
            raise InputError(f"{_name('seed')} must lie in [0, 2**63), got {self.seed}")
        if not 0 < self.val_fraction < 1:
            raise InputError(f"{_name('val_fraction')} must lie in (0, 1), got {self.val_fraction}")
        if self.warmup and self.schedule == "plateau":
            raise InputError(f"{_name('warmup')} applies to the cosine and constant schedules, not to plateau")
        if self.steps is not None and self.warmup >= self.steps:
            raise InputError(f"{_name('warmup')} ({self.warmup}) must be shorter than the run ({self.steps} steps)")

    @classmethod
    def from_dict(cls, values: Any) -> TrainOptions:
        """Options from a JSON object (``run.json``): unknown keys and wrong types are
        :class:`~flowfit.errors.InputError`."""
        if not isinstance(values, dict):
            raise InputError(f"training options must be a JSON object, got {values!r}")
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise InputError(f"unknown training option(s): {', '.join(unknown)}")
        return cls(**values)

    def with_defaults(self, defaults: dict[str, Any]) -> TrainOptions:
        """These options with the fields left at ``None`` that ``defaults`` names filled in."""
        filled = {k: v for k, v in defaults.items() if k in _hints() and getattr(self, k) is None}
        return dataclasses.replace(self, **filled)

    def updated(self, **changes: Any) -> TrainOptions:
        """A copy with some fields changed (unknown names are an error, as in a call)."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise TypeError(f"unknown training option(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)


#: What ``FlowDensity`` and ``flowfit train`` use on a table (a file, a bundled table) where
#: the caller leaves a field unset, before the family's own defaults: stop after 10
#: validations without improvement, and average the weights, which on the small tables
#: scores better held out (quakes: 0.19 nats over four seeds; ``benchmarks/real_data.py
#: --seeds``). The batch is also capped at an eighth of the training rows
#: (:func:`table_batch_size`).
TABLE_DEFAULTS: dict[str, Any] = {"patience": 10, "ema": 0.99}


def table_batch_size(options: TrainOptions, family_batch: int, rows: int) -> TrainOptions:
    """``options`` with, when unset, a table's batch size: the family's, at most an eighth
    of the ``rows`` (and at least 32), so that a small table is not one batch."""
    if options.batch_size is not None:
        return options
    return dataclasses.replace(options, batch_size=min(family_batch, max(32, rows // 8)))


def _hints() -> dict[str, Any]:
    return _type_hints(TrainOptions)


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def check_types(instance: Any, skip: tuple[str, ...] = ()) -> None:
    """Check every field of a dataclass instance against its annotation (values that came
    from JSON or a caller); raises :class:`~flowfit.errors.InputError`."""
    hints = _type_hints(type(instance))
    for item in dataclasses.fields(instance):
        value = getattr(instance, item.name)
        if item.name not in skip and not _has_type(value, hints[item.name]):
            raise InputError(f"{_name(item.name)} must be {_describe(hints[item.name])}, got {value!r}")


def _name(field_name: str) -> str:
    return f"{field_name} (--{field_name.replace('_', '-')})"


def _has_type(value: Any, hint: Any) -> bool:
    """Whether ``value`` is of the annotated type (``int`` excludes bools; ``float`` takes ints)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_has_type(value, option) for option in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_has_type(v, item) for v in value)
    return isinstance(value, hint)


def _describe(hint: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "null"}
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(option) for option in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return f"a list of {_describe(typing.get_args(hint)[0]).removeprefix('an ').removeprefix('a ')}s"
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def fields() -> list[dataclasses.Field]:
    """The fields of :class:`TrainOptions`, in order."""
    return list(dataclasses.fields(TrainOptions))


def value_type(item: dataclasses.Field) -> type:
    """A field's value type without ``None`` (what a command-line option parses)."""
    hint = _hints()[item.name]
    options = [t for t in typing.get_args(hint) if t is not type(None)] or [hint]
    return options[0]


def markdown_table() -> str:
    """The options as a Markdown table (README's, kept equal to this by a test)."""
    lines = ["| option | `fit` / `FlowDensity` | default | what it does |", "|---|---|---|---|"]
    for item in fields():
        default = (
            FAMILY_DEFAULT if item.default is None and item.name in ("steps", "batch_size", "lr") else item.default
        )
        lines.append(
            f"| `--{item.name.replace('_', '-')}` | `{item.name}` | {default if default is not None else 'none'} "
            f"| {item.metadata['help']} |"
        )
    return "\n".join(lines)
