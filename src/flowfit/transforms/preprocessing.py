"""Fixed bijections that carry the data's own units into the flow.

They sit at the data end of a flow and their log|det| is counted like any other layer's,
so every log-density a flow reports is in the user's raw units.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from flowfit.errors import InputError
from flowfit.transforms.base import Transform


class Standardize(Transform):
    """Elementwise affine map fitted once to the data: ``x = loc + scale * z``.

    forward:  ``x = loc + scale * z``,       log|det| = ``sum_j log scale_j``
    inverse:  ``z = (x - loc) / scale``,     log|det| = ``-sum_j log scale_j``

    ``loc`` and ``scale`` are buffers, not parameters: they are set by
    :meth:`initialize_from_data` (the data's mean and standard deviation) and never trained.
    Before that they are 0 and 1, the identity.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("loc", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))
        self.register_buffer("initialized", torch.tensor(False))

    def initialize_from_data(self, x: Tensor, context: Tensor | None = None) -> None:
        """Set ``loc`` and ``scale`` to the mean and standard deviation of ``x``, once."""
        if bool(self.initialized):
            return
        if x.shape[0] < 2:
            raise InputError("need at least 2 rows to standardize the data")
        loc = x.mean(dim=0)
        scale = x.std(dim=0)
        constant = (scale <= 1e-12 * loc.abs().clamp_min(1.0)).nonzero().flatten().tolist()
        if constant:
            raise InputError(f"column(s) {constant} have zero variance: a density over them does not exist")
        self.loc.copy_(loc)
        self.scale.copy_(scale)
        self.initialized.fill_(True)

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        log_abs_det = self.scale.log().sum().expand(z.shape[0])
        return self.loc + self.scale * z, log_abs_det

    def inverse(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        log_abs_det = -self.scale.log().sum().expand(x.shape[0])
        return (x - self.loc) / self.scale, log_abs_det


class Sigmoid(Transform):
    """The logistic function, ``R^d -> (0, 1)^d``, elementwise.

    forward:  ``x = sigmoid(z)``,  log|det| = ``sum log(sigmoid(z) (1 - sigmoid(z)))``
              ``= -sum (softplus(z) + softplus(-z))``
    inverse:  ``z = log x - log(1 - x)``,  log|det| = ``-sum (log x + log(1 - x))``
    """

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        log_abs_det = -(F.softplus(z) + F.softplus(-z)).sum(dim=1)
        return torch.sigmoid(z), log_abs_det

    def inverse(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        log_x, log_one_minus = torch.log(x), torch.log1p(-x)
        return log_x - log_one_minus, -(log_x + log_one_minus).sum(dim=1)


class Logit(Transform):
    """The logit, ``(0, 1)^d -> R^d``: the inverse of :class:`Sigmoid`.

    forward:  ``x = log z - log(1 - z)``,  log|det| = ``-sum (log z + log(1 - z))``
    inverse:  ``z = sigmoid(x)``,  log|det| = ``-sum (softplus(x) + softplus(-x))``
    """

    def __init__(self) -> None:
        super().__init__()
        self._sigmoid = Sigmoid()

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._sigmoid.inverse(z)

    def inverse(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._sigmoid(x)
