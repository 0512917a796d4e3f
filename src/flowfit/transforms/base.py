"""The transform interface shared by every flow family.

Direction convention (the same everywhere in flowfit): a transform ``f`` maps the base side
to the data side, ``z_i = f(z_(i-1))``.

- ``forward(z)`` returns ``(f(z), log|det df/dz|)``;
- ``inverse(x)`` returns ``(f^-1(x), log|det df^-1/dx|)``, which equals
  ``-log|det df/dz|`` at ``z = f^-1(x)``.

Inputs are batches of shape ``(n, dim)``; the log-determinants have shape ``(n,)``. A
transform may read an optional ``context`` of shape ``(n, context_dim)`` (conditional
flows); unconditional transforms ignore it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

import torch
from torch import Tensor, nn

from flowfit.config import Configurable


class Transform(Configurable, nn.Module):
    """A bijection ``f`` with a tractable log-Jacobian-determinant.

    Its constructor's arguments are recorded (:class:`~flowfit.config.Configurable`), so a
    flow built from flowfit transforms can be saved and rebuilt."""

    #: Whether output column ``j`` depends on input columns ``<= j`` only, in both directions
    #: (the Jacobian is lower triangular in the column order). A flow made of such layers
    #: gives exact densities of its leading columns (:meth:`flowfit.Flow.observed_log_prob`).
    triangular: ClassVar[bool] = False

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map base side to data side: return ``f(z)`` and ``log|det df/dz|``."""
        raise NotImplementedError

    def inverse(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map data side to base side: return ``f^-1(x)`` and ``log|det df^-1/dx|``."""
        raise NotImplementedError

    def inverse_by_column(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """For a :attr:`triangular` transform: ``f^-1(x)`` and the log-derivative of each
        column, ``log|dz_j/dx_j|``, shape ``(n, dim)``: the diagonal of the Jacobian, which
        sums to :meth:`inverse`'s log-determinant."""
        raise NotImplementedError(f"{type(self).__name__} mixes the columns: it has no log-derivative per column")

    def push_forward(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """``f(z)`` alone, for samples: transforms whose log-determinant costs extra (a
        continuous flow's trace) skip it here."""
        return self.forward(z, context)[0]

    def initialize_from_data(self, x: Tensor, context: Tensor | None = None) -> None:
        """Data-dependent initialisation, given a batch ``x`` on this transform's data side
        (and the context, already embedded).

        Most transforms need none. Those that do (standardization, ActNorm) set their
        parameters here; :meth:`flowfit.Flow.initialize` calls the hook once, before
        training.
        """


class Compose(Transform):
    """The composition ``f_T o ... o f_1`` of transforms listed base side first.

    forward:  ``z_T = f_T(...f_1(z_0))``,  log|det| = sum_i log|det df_i/dz_(i-1)|
    inverse:  applies ``f_T^-1`` first; log|det| = sum_i log|det df_i^-1/dz_i|
    """

    def __init__(self, transforms: Iterable[Transform]) -> None:
        super().__init__()
        self.transforms = nn.ModuleList(transforms)

    @property
    def triangular(self) -> bool:  # type: ignore[override]
        """A composition of triangular maps is triangular."""
        return all(transform.triangular for transform in self.transforms)

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        total = z.new_zeros(z.shape[0])
        for transform in self.transforms:
            z, log_abs_det = transform(z, context)
            total = total + log_abs_det
        return z, total

    def push_forward(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        for transform in self.transforms:
            z = transform.push_forward(z, context)
        return z

    def inverse(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        total = x.new_zeros(x.shape[0])
        for transform in reversed(self.transforms):
            x, log_abs_det = transform.inverse(x, context)
            total = total + log_abs_det
        return x, total

    def inverse_by_column(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The diagonal of a product of triangular Jacobians is the product of their diagonals."""
        total = torch.zeros_like(x)
        for transform in reversed(self.transforms):
            x, log_derivative = transform.inverse_by_column(x, context)
            total = total + log_derivative
        return x, total

    def initialize_from_data(self, x: Tensor, context: Tensor | None = None) -> None:
        for transform in reversed(self.transforms):
            transform.initialize_from_data(x, context)
            x, _ = transform.inverse(x, context)


def sum_except_batch(values: Tensor) -> Tensor:
    """Sum a ``(n, ...)`` tensor over every axis but the first."""
    return values.reshape(values.shape[0], -1).sum(dim=1)


__all__ = ["Compose", "Transform", "sum_except_batch"]
