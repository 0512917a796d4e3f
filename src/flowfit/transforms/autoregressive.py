"""Masked autoregressive transforms (MAF, Papamakarios et al. 2017; IAF, Kingma et al. 2016)
on MADE conditioners (Germain et al. 2015).

Coordinate ``i`` is mapped elementwise with parameters that depend only on coordinates
``< i`` (and the context), so the Jacobian is triangular and
``log|det| = sum_i log|tau'_i|``. One MADE pass gives every ``theta_i`` at once from a known
vector; recovering the vector on the other side takes ``dim`` passes, one coordinate each.

- MAF (``fast="inverse"``): ``theta = MADE(x)`` from the data side. ``inverse`` (data to base,
  i.e. ``log_prob``) is one pass; ``forward`` (sampling) takes ``dim`` passes.
- IAF (``fast="forward"``): ``theta = MADE(z)`` from the base side. ``forward`` (sampling) is
  one pass; ``inverse`` (``log_prob``) takes ``dim`` passes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from flowfit.nets import Linear, activation_layer, run_layers
from flowfit.transforms.base import Transform
from flowfit.transforms.elementwise import AffineMap, ElementwiseMap, SplineMap


class MaskedLinear(Linear):
    """``y = (W * mask) x + b``: a linear layer with some connections cut."""

    def __init__(self, mask: Tensor) -> None:
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask.float())

    def product_weight(self) -> Tensor:
        return self.weight * self.mask

    def forward(self, inputs: Tensor) -> Tensor:
        return F.linear(inputs, self.product_weight(), self.bias)


class MADE(nn.Sequential):
    """Masked autoencoder: ``params_per_dim`` outputs per coordinate ``i`` that depend only
    on inputs ``< i`` (in the given order) and on all ``context_dim`` context inputs.

    Degrees: input ``i`` has degree ``i + 1``; context inputs have degree 0; hidden units
    cycle through ``1..dim-1`` (``0..dim-1`` with a context, so that the context reaches the
    first coordinate too). A connection exists from degree ``a`` to hidden degree
    ``b`` when ``b >= a`` and to an output of coordinate ``i`` when ``i + 1 > a``. The last
    layer starts at zero (the transform starts as the identity).
    """

    def __init__(
        self,
        dim: int,
        params_per_dim: int,
        hidden: Sequence[int] = (128, 128),
        context_dim: int = 0,
        activation: str = "relu",
    ) -> None:
        in_degrees = torch.cat((torch.arange(1, dim + 1), torch.zeros(context_dim, dtype=torch.long)))
        layers: list[nn.Module] = []
        degrees = in_degrees
        low = 0 if context_dim else 1
        for size in hidden:
            hidden_degrees = low + torch.arange(size) % max(1, dim - low)
            layers += [MaskedLinear(hidden_degrees[:, None] >= degrees[None, :]), activation_layer(activation)]
            degrees = hidden_degrees
        out_degrees = torch.arange(1, dim + 1).repeat_interleave(params_per_dim)
        last = MaskedLinear(out_degrees[:, None] > degrees[None, :])
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        layers.append(last)
        super().__init__(*layers)
        self.dim, self.params_per_dim, self.context_dim = dim, params_per_dim, context_dim

    def forward(self, inputs: Tensor, context: Tensor | None = None) -> Tensor:
        """Return the parameters, shape ``(n, dim, params_per_dim)``."""
        if self.context_dim:
            if context is None:
                raise ValueError("this transform is conditional: pass a context")
            inputs = torch.cat((inputs, context), dim=1)
        return run_layers(self, inputs).to(inputs.dtype).view(-1, self.dim, self.params_per_dim)


class MaskedAutoregressive(Transform):
    """An autoregressive transform ``x_i = tau(z_i; theta_i)``, ``theta = MADE(.)``.

    forward:  ``x_i = tau(z_i; theta_i)``,       log|det| = ``sum_i log|tau'(z_i)|``
    inverse:  ``z_i = tau^-1(x_i; theta_i)``,    log|det| = ``-sum_i log|tau'(z_i)|``

    ``fast="inverse"`` (MAF): ``theta_i`` from ``x_<i``, so density evaluation is one MADE
    pass and sampling ``dim`` passes. ``fast="forward"`` (IAF): ``theta_i`` from ``z_<i``,
    the other way round.
    """

    def __init__(
        self,
        dim: int,
        elementwise: ElementwiseMap,
        hidden: Sequence[int] = (128, 128),
        context_dim: int = 0,
        activation: str = "relu",
        fast: str = "inverse",
    ) -> None:
        super().__init__()
        if fast not in ("inverse", "forward"):
            raise ValueError(f"fast must be 'inverse' (MAF) or 'forward' (IAF), got {fast!r}")
        self.dim = dim
        self.fast = fast
        self.elementwise = elementwise
        self.made = MADE(dim, elementwise.params_per_dim, hidden, context_dim, activation)

    #: output coordinate ``i`` depends on input coordinates ``<= i`` only, both ways
    triangular = True

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x, log_derivative = self._map(z, context, inverse=False)
        return x, log_derivative.sum(dim=1)

    def inverse(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z, log_derivative = self._map(x, context, inverse=True)
        return z, log_derivative.sum(dim=1)

    def inverse_by_column(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._map(x, context, inverse=True)

    def _map(self, values: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        """The map of one direction and each coordinate's log|tau'|. The fast direction is
        one MADE pass on the known side; the slow one takes ``dim`` passes, after pass ``i``
        of which the first ``i`` coordinates are final."""
        if inverse == (self.fast == "inverse"):
            return self.elementwise(values, self.made(values, context), inverse=inverse)
        outputs = torch.zeros_like(values)
        log_derivative = torch.zeros_like(values)
        for _ in range(self.dim):
            outputs, log_derivative = self.elementwise(values, self.made(outputs, context), inverse=inverse)
        return outputs, log_derivative


class MaskedAffineAutoregressive(MaskedAutoregressive):
    """MAF/IAF with the bounded affine map ``tau(v) = v exp(s) + t`` (see :class:`AffineMap`)."""

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int] = (128, 128),
        context_dim: int = 0,
        activation: str = "relu",
        fast: str = "inverse",
        scale_bound: float = 3.0,
    ) -> None:
        super().__init__(dim, AffineMap(scale_bound), hidden, context_dim, activation, fast)


class MaskedSplineAutoregressive(MaskedAutoregressive):
    """Autoregressive rational-quadratic spline flow (NSF-AR, Durkan et al. 2019)."""

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int] = (128, 128),
        context_dim: int = 0,
        activation: str = "relu",
        fast: str = "inverse",
        bins: int = 8,
        tail_bound: float = 4.0,
    ) -> None:
        super().__init__(dim, SplineMap(bins, tail_bound), hidden, context_dim, activation, fast)
