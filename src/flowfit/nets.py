"""Small neural networks used as conditioners inside transforms, the buffers their inference
reuses from one chunk of rows to the next, and the size checks that keep a config from asking
for a network that cannot be built."""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from flowfit.config import Configurable

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
    "leaky_relu": nn.LeakyReLU,
}
#: Activations whose gradient needs only their output, so that they may overwrite their input:
#: one buffer less per layer (memory, and on CPU the page faults of a fresh buffer whenever the
#: allocator has handed freed memory back to the system; see :func:`reusing_activations`).
IN_PLACE = ("relu", "leaky_relu")


def activation_layer(name: str) -> nn.Module:
    """The activation ``name`` as a layer, in place where that is safe (:data:`IN_PLACE`)."""
    return ACTIVATIONS[name](inplace=True) if name in IN_PLACE else ACTIVATIONS[name]()


Method = TypeVar("Method", bound=Callable[..., Any])


def full_precision(method: Method) -> Method:
    """``method`` run outside any ``torch.autocast`` region: a transform's own products stay in
    the flow's precision under the trainer's mixed precision, which rounds only the networks'.
    Outside autocast (every evaluation) it costs one check."""

    @functools.wraps(method)
    def exact(*args: Any, **kwargs: Any) -> Any:
        if not (torch.is_autocast_enabled("cpu") or torch.is_autocast_enabled("cuda")):
            return method(*args, **kwargs)
        with torch.autocast("cpu", enabled=False), torch.autocast("cuda", enabled=False):
            return method(*args, **kwargs)

    return exact  # type: ignore[return-value]


#: The most parameters a flowfit model may have (2 GB of float32): a config asking for more
#: (``hidden: [1000000, 1000000]``) is refused before anything is allocated.
MAX_PARAMETERS = 500_000_000
#: The most transforms a flow may stack (``layers: 1e9`` would build until killed).
MAX_LAYERS = 1000


def positive_int(value: Any, name: str, limit: int | None = None) -> int:
    """``value`` if it is a positive integer (not a bool, not a float) at most ``limit``;
    raises ``ValueError`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if limit is not None and value > limit:
        raise ValueError(f"{name} = {value:,} is more than the {limit:,} flowfit allows")
    return value


def positive_number(value: Any, name: str) -> float:
    """``value`` as a float if it is a finite positive number (not a bool, not a string);
    raises ``ValueError`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def sizes(values: Any, name: str) -> tuple[int, ...]:
    """A sequence of positive integer layer widths as a tuple (empty allowed)."""
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise ValueError(f"{name} must be a list of positive integers, got {values!r}")
    return tuple(positive_int(v, f"each of {name}") for v in values)


def mlp_parameters(in_features: int, out_features: int, hidden: Sequence[int]) -> int:
    """How many parameters an :class:`MLP` with these sizes has."""
    widths = [in_features, *hidden, out_features]
    return sum((a + 1) * b for a, b in itertools.pairwise(widths))


def check_parameters(count: int, what: str) -> None:
    """Refuse (``ValueError``) a model of more than :data:`MAX_PARAMETERS` parameters."""
    if count > MAX_PARAMETERS:
        raise ValueError(f"{what} would have {count:,} parameters, more than the {MAX_PARAMETERS:,} flowfit allows")


#: Under ``torch.compile``, a product with at most this many inputs (a coupling's first layer on
#: two columns) or outputs (its last) is written as broadcast multiplies and a sum, which
#: Inductor fuses with the bias and the activation next to it: a BLAS call on so skinny a shape
#: costs more than its arithmetic (RealNVP's compiled step on two columns 0.89x;
#: ``benchmarks/compile.py --compare skinny``). Eagerly the BLAS call is faster; at 4 inputs or
#: outputs it is a tie.
SKINNY = 2


class Linear(nn.Linear):
    """:class:`torch.nn.Linear` (the same parameters and result), with products of at most
    :data:`SKINNY` inputs or outputs written element-wise when compiled (in the inputs' and
    weights' precision, also under ``torch.autocast``)."""

    def product_weight(self) -> Tensor:
        """The matrix ``W`` of ``y = x W^T + b`` (a subclass may derive it from its parameters)."""
        return self.weight

    def forward_into(self, inputs: Tensor, out: Tensor) -> Tensor:
        """``inputs W^T + b`` written into ``out`` (a matrix of the result's shape and dtype;
        without gradients: a product into a given tensor has no backward)."""
        if self.bias is None:
            return torch.mm(inputs, self.product_weight().t(), out=out)
        return torch.addmm(self.bias, inputs, self.product_weight().t(), out=out)

    def forward(self, inputs: Tensor) -> Tensor:
        if not torch.compiler.is_compiling() or min(self.in_features, self.out_features) > SKINNY:
            return super().forward(inputs)
        if self.in_features <= SKINNY:  # a sum of outer products: bias + sum_j x_j w_:j
            terms = (inputs[..., j, None] * self.weight[:, j] for j in range(self.in_features))
            return sum(terms, self.bias)
        return (inputs.unsqueeze(-2) * self.weight).sum(dim=-1) + self.bias  # a dot product per output


_workspace = threading.local()


@contextlib.contextmanager
def reusing_activations() -> Iterator[None]:
    """Within this block, on this thread, :func:`run_layers` writes the hidden activations of
    networks evaluated without gradients on the CPU into buffers kept for the block, instead of
    new tensors: inference in chunks of rows (:meth:`flowfit.Flow.log_prob`, ``sample``) reuses
    the same memory at every chunk. Each new tensor of a few megabytes would otherwise be
    faulted in page by page whenever glibc has handed its memory back to the system: in a fresh
    Python process NSF's log_prob ran 1.95 times as fast with it, RealNVP's 1.55 times
    (``benchmarks/allocator.py``). A block inside another keeps the outer one's buffers."""
    if getattr(_workspace, "buffers", None) is not None:
        yield
        return
    _workspace.buffers = {}
    try:
        yield
    finally:
        _workspace.buffers = None


def _buffer(buffers: dict[tuple[Any, ...], Tensor], slot: int, like: Tensor, width: int) -> Tensor:
    """Buffer ``slot`` of ``buffers`` for a ``(rows, width)`` activation of ``like``'s kind."""
    key = (slot, like.shape[0], width, like.dtype, like.device)
    if key not in buffers:
        buffers[key] = like.new_empty(like.shape[0], width)
    return buffers[key]


def run_layers(layers: nn.Sequential, inputs: Tensor) -> Tensor:
    """``inputs`` through ``layers`` in turn. Inside :func:`reusing_activations`, without
    gradients, on the CPU and outside autocast and compilation, each :class:`Linear` but the
    last writes into one of two buffers in turn (an activation after it works in place where it
    can): a hidden activation lives only until the next layer has read it, and the network's
    output is always a new tensor, so nothing the caller keeps is ever overwritten."""
    # a training step (gradients on, or compiled) decides here, before looking at the thread
    buffers = None if torch.is_grad_enabled() or torch.compiler.is_compiling() else getattr(_workspace, "buffers", None)
    if buffers is None or inputs.device.type != "cpu" or inputs.dim() != 2 or torch.is_autocast_enabled("cpu"):
        for layer in layers:
            inputs = layer(inputs)
        return inputs
    last, hidden = len(layers) - 1, 0
    for i, layer in enumerate(layers):
        if isinstance(layer, Linear) and i < last:
            inputs = layer.forward_into(inputs, _buffer(buffers, hidden % 2, inputs, layer.out_features))
            hidden += 1
        else:
            inputs = layer(inputs)
    return inputs


class MLP(Configurable, nn.Sequential):
    """A fully connected network ``in_features -> hidden... -> out_features``.

    With ``zero_last`` (the default) the last layer starts at zero, so a transform whose
    parameters it predicts starts as the identity map: training begins from the base
    distribution pushed through the fixed preprocessing, a stable starting point.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (256, 256),
        activation: str = "relu",
        zero_last: bool = True,
    ) -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
        hidden = sizes(hidden, "hidden")
        check_parameters(mlp_parameters(in_features, out_features, hidden), "a conditioner network")
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden:
            layers += [Linear(width, size), activation_layer(activation)]
            width = size
        last = Linear(width, out_features)
        if zero_last:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        layers.append(last)
        super().__init__(*layers)

    def forward(self, inputs: Tensor) -> Tensor:
        # under the trainer's mixed precision the products run in bfloat16; the transform
        # gets its parameters back in the inputs' precision
        return run_layers(self, inputs).to(inputs.dtype)
