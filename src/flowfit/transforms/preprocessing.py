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

    triangular = True

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

    def inverse_by_column(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return (x - self.loc) / self.scale, -self.scale.log().expand_as(x)


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


class ColumnMaps(Transform):
    """A fixed elementwise map chosen per column, carrying each column's support to R.

    Column ``j`` is one of:

    - ``none``:  ``x = y``;  log|dx/dy| = 0
    - ``log`` (strictly positive data):  ``x = exp(y)``,  log|dx/dy| = ``y``;
      inverse ``y = log x``, log|dy/dx| = ``-log x``
    - ``logit`` (data in ``(a, b)``):  ``x = a + (b - a) sigmoid(y)``,
      log|dx/dy| = ``log(b - a) + log sigmoid(y) + log sigmoid(-y)``;
      inverse ``y = logit((x - a) / (b - a))``

    ``forward`` is the base-to-data direction, so this layer sits at the data end of a flow
    and ``inverse`` maps raw data to R. A point outside a column's support (``x <= 0`` for
    ``log``, outside ``(a, b)`` for ``logit``) gets log-density ``-inf``.
    """

    KINDS = ("none", "log", "logit")
    triangular = True

    def __init__(self, kinds: list[str], lower: list[float] | None = None, upper: list[float] | None = None) -> None:
        super().__init__()
        unknown = sorted(set(kinds) - set(self.KINDS))
        if unknown:
            raise ValueError(f"unknown column maps {unknown}; choose from {self.KINDS}")
        dim = len(kinds)
        lower_values = torch.tensor(lower if lower is not None else [0.0] * dim, dtype=torch.float32)
        upper_values = torch.tensor(upper if upper is not None else [1.0] * dim, dtype=torch.float32)
        is_logit = torch.tensor([k == "logit" for k in kinds])
        if (is_logit & ~(upper_values > lower_values)).any():
            raise ValueError("logit columns need lower < upper")
        self.kinds = list(kinds)
        self.register_buffer("is_log", torch.tensor([k == "log" for k in kinds]))
        self.register_buffer("is_logit", is_logit)
        self.register_buffer("lower", lower_values)
        self.register_buffer("width", torch.where(is_logit, upper_values - lower_values, torch.ones(dim)))

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        log_x = torch.where(self.is_log, z, torch.zeros_like(z))
        sigmoid = torch.sigmoid(z)
        logit_x = self.lower + self.width * sigmoid
        x = torch.where(self.is_log, torch.exp(log_x), torch.where(self.is_logit, logit_x, z))
        log_derivative_logit = torch.log(self.width) - F.softplus(-z) - F.softplus(z)
        log_derivative = torch.where(self.is_log, z, torch.where(self.is_logit, log_derivative_logit, 0.0))
        return x, log_derivative.sum(dim=1)

    def inverse(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        y, log_derivative = self.inverse_by_column(x, context)
        return y, log_derivative.sum(dim=1)  # -inf when any column is outside its support

    def inverse_by_column(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        unit = (x - self.lower) / self.width
        inside = torch.where(self.is_log, x > 0, torch.where(self.is_logit, (unit > 0) & (unit < 1), True))
        # evaluate every branch on safe values, then pick; outside the support: -inf
        safe_x = torch.where(inside & self.is_log, x, torch.ones_like(x))
        safe_unit = torch.where(inside & self.is_logit, unit, torch.full_like(x, 0.5))
        log_unit, log_one_minus = torch.log(safe_unit), torch.log1p(-safe_unit)
        y = torch.where(self.is_log, torch.log(safe_x), torch.where(self.is_logit, log_unit - log_one_minus, x))
        log_derivative = torch.where(
            self.is_log,
            -torch.log(safe_x),
            torch.where(self.is_logit, -torch.log(self.width) - log_unit - log_one_minus, 0.0),
        )
        log_derivative = torch.where(inside, log_derivative, -torch.inf)
        return torch.where(inside, y, torch.zeros_like(y)), log_derivative

    def extra_repr(self) -> str:
        return f"kinds={self.kinds}"
