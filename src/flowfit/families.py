"""Builders for the flow families. Each returns a :class:`~flowfit.flow.Flow` whose
``config`` records the builder's name and arguments, so :func:`flowfit.load` can rebuild it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from flowfit.flow import Flow
from flowfit.transforms import AffineCoupling, Standardize

#: Builders by the name used in ``config.json`` and on the command line.
FLOWS: dict[str, Callable[..., Flow]] = {}


def _register(name: str) -> Callable[[Callable[..., Flow]], Callable[..., Flow]]:
    def decorate(builder: Callable[..., Flow]) -> Callable[..., Flow]:
        FLOWS[name] = builder
        return builder

    return decorate


def _config(name: str, **kwargs: Any) -> dict[str, Any]:
    return {"builder": name, "kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}}


@_register("realnvp")
def RealNVP(  # noqa: N802 (a builder named after the model, as users expect)
    dim: int,
    layers: int = 6,
    hidden: Sequence[int] = (256, 256),
    context_dim: int = 0,
    activation: str = "relu",
    scale_bound: float = 3.0,
) -> Flow:
    """RealNVP (Dinh et al. 2017): ``layers`` affine couplings, alternating which half moves.

    Layer ``i`` transforms the second half given the first for even ``i`` and the first half
    given the second for odd ``i``. A fixed :class:`~flowfit.transforms.Standardize` at the
    data end carries the data's units; it is fitted by :meth:`Flow.initialize` (``fit``
    calls it).
    """
    if dim < 2:
        raise ValueError(f"RealNVP needs dim >= 2, got {dim}")
    transforms = [
        AffineCoupling(
            dim,
            swap=bool(i % 2),
            hidden=hidden,
            context_dim=context_dim,
            activation=activation,
            scale_bound=scale_bound,
        )
        for i in range(layers)
    ]
    transforms.append(Standardize(dim))
    config = _config(
        "realnvp",
        dim=dim,
        layers=layers,
        hidden=tuple(hidden),
        context_dim=context_dim,
        activation=activation,
        scale_bound=scale_bound,
    )
    return Flow(transforms, dim, context_dim=context_dim, config=config)


def build(config: dict[str, Any]) -> Flow:
    """Rebuild an (untrained) flow from its ``config``."""
    name = config["builder"]
    if name not in FLOWS:
        raise KeyError(name)
    return FLOWS[name](**config["kwargs"])
