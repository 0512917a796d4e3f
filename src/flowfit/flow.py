"""``Flow``: a base distribution pushed through a composition of transforms.

With ``x = f(z_0)``, ``f = f_T o ... o f_1`` and ``z_0 ~ p_Z0``, the change of variables gives

    log p(x) = log p_Z0(z_0) - sum_i log|det df_i/dz_(i-1)|,   z_0 = f^-1(x),

which :meth:`Flow.log_prob` computes in one pass from data to base (each inverse returns
``log|det df_i^-1/dz_i| = -log|det df_i/dz_(i-1)|``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from flowfit.distributions import StandardNormal
from flowfit.errors import InputError
from flowfit.transforms.base import Compose, Transform


class Flow(nn.Module):
    """A normalizing flow: ``x = f_T(...f_1(z_0))`` with ``z_0 ~ N(0, I)``.

    Args:
        transforms: the layers, listed from the base side to the data side.
        dim: dimension of the data.
        context_dim: dimension of the conditioning vector ``c`` for ``p(x | c)``; 0 for an
            unconditional flow.
        context_embedding: optional network applied to ``c`` before it reaches the
            transforms (its output size must match what the transforms expect).
        config: how a builder made this flow (``{"builder": name, "kwargs": {...}}``), so
            that :func:`flowfit.load` can rebuild it. Builders set it; a hand-made flow
            has none and cannot be saved.
        dequantize_steps: per column, the quantization step of data that is dequantized
            (uniform noise of one step added before the flow sees it, in :func:`flowfit.fit`
            and :func:`flowfit.train.nll`); 0 for continuous columns.
    """

    def __init__(
        self,
        transforms: Sequence[Transform],
        dim: int,
        context_dim: int = 0,
        context_embedding: nn.Module | None = None,
        config: dict[str, Any] | None = None,
        dequantize_steps: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.context_dim = context_dim
        self.base = StandardNormal(dim)
        self.transform = Compose(transforms)
        self.context_embedding = context_embedding
        # the context is standardized (fixed, from the training data) before anything sees it
        self.register_buffer("context_loc", torch.zeros(context_dim))
        self.register_buffer("context_scale", torch.ones(context_dim))
        self.register_buffer("context_initialized", torch.tensor(False))
        steps = torch.zeros(dim) if dequantize_steps is None else torch.as_tensor(dequantize_steps, dtype=torch.float32)
        self.register_buffer("dequantize_steps", steps)
        self.config = config
        #: Free-form facts saved with the model (column names, the data it was fitted to).
        self.metadata: dict[str, Any] = {}

    # -- the maps -------------------------------------------------------------------------
    @property
    def layers(self) -> nn.ModuleList:
        """The transforms, base side first."""
        return self.transform.transforms

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map base to data: ``x = f(z)`` and ``log|det df/dz|``, shape ``(n,)``."""
        z = self._check(z, "z")
        return self.transform(z, self._embed(context, z.shape[0]))

    def inverse(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map data to base: ``z = f^-1(x)`` and ``log|det df^-1/dx|``, shape ``(n,)``."""
        x = self._check(x, "x")
        return self.transform.inverse(x, self._embed(context, x.shape[0]))

    # -- densities and samples ------------------------------------------------------------
    #: Rows pushed through the network at a time when no gradient is needed: activations of
    #: a few thousand rows stay in cache, 100,000 rows' would not.
    inference_chunk = 4096

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Exact log-density of each row of ``x`` (nats, in the data's units), shape ``(n,)``."""
        x = self._check(x, "x")
        step = self.inference_chunk
        if not torch.is_grad_enabled() and len(x) > step:
            context = None if context is None else torch.as_tensor(context)
            parts = [
                self.log_prob(x[i : i + step], None if context is None else context[i : i + step])
                for i in range(0, len(x), step)
            ]
            return torch.cat(parts)
        z, log_abs_det = self.inverse(x, context)
        return self.base.log_prob(z) + log_abs_det

    def sample(self, n: int, context: Tensor | None = None) -> Tensor:
        """Draw ``n`` samples: shape ``(n, dim)``, or ``(m, n, dim)`` for ``m`` context rows."""
        return self.sample_and_log_prob(n, context)[0]

    def sample_and_log_prob(self, n: int, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Draw samples and their exact log-density in one pass from base to data.

        ``log p(x) = log p_Z0(z_0) - log|det df/dz_0|``. Shapes as in :meth:`sample`, with
        the log-densities shaped ``(n,)`` or ``(m, n)``.
        """
        if n < 1:
            raise InputError(f"the number of samples must be positive, got {n}")
        rows = self._context_rows(context)
        z = self.base.sample(n * (rows or 1))
        if context is not None:
            context = torch.as_tensor(context, device=z.device, dtype=z.dtype).repeat_interleave(n, dim=0)
        x, log_abs_det = self._push(z, context)
        log_prob = self.base.log_prob(z) - log_abs_det
        if rows is None:
            return x, log_prob
        return x.view(rows, n, self.dim), log_prob.view(rows, n)

    def _push(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """``forward`` on base samples, in cache-sized chunks when no gradient is needed."""
        step = self.inference_chunk
        if torch.is_grad_enabled() or len(z) <= step:
            return self.transform(z, self._embed(context, z.shape[0]))
        parts = [
            self._push(z[i : i + step], None if context is None else context[i : i + step])
            for i in range(0, len(z), step)
        ]
        return torch.cat([x for x, _ in parts]), torch.cat([log_abs_det for _, log_abs_det in parts])

    def trajectory(
        self, z0_or_n: Tensor | int, context: Tensor | None = None, t: Sequence[float] | Tensor | None = None
    ) -> list[Tensor]:
        """The states ``[z_0, z_1, ..., z_T]``: a base sample and its image after each layer.

        ``z0_or_n`` is either the starting points ``z_0`` (shape ``(n, dim)``) or a number of
        points to draw from the base distribution. ``z_T`` is the data-side point.

        For a continuous-time flow, ``t`` asks for ``z_t`` at those real times in ``[0, 1]``
        instead (``t = 0`` the base, ``t = 1`` the data), solved from the ODE.
        """
        if isinstance(z0_or_n, int):
            z = self.base.sample(z0_or_n)
        else:
            z = self._check(z0_or_n, "z0")
        context = self._embed(context, z.shape[0])
        if t is not None:
            if not self.is_continuous:
                raise InputError("trajectory(t=...) needs a continuous-time flow; a discrete flow has z_0, ..., z_T")
            return self.layers[0].trajectory(z, t, context)
        states = [z]
        for layer in self.layers:
            z, _ = layer(z, context)
            states.append(z)
        return states

    @torch.no_grad()
    def initialize(self, x: Tensor, context: Tensor | None = None) -> None:
        """Run the data-dependent initialisation of every layer (e.g. standardization).

        Each layer that has one sees ``x`` mapped back to its own data side; the context's
        standardization is fitted to ``context``. Whatever is already initialised (a loaded
        or resumed model) keeps its values.
        """
        x = self._check(x, "x")
        if context is not None and self.context_dim and not bool(self.context_initialized):
            context = torch.as_tensor(context, device=self._anchor.device, dtype=self._anchor.dtype)
            scale = context.std(dim=0) if len(context) > 1 else torch.ones_like(context[0])
            self.context_loc.copy_(context.mean(dim=0))
            self.context_scale.copy_(torch.where(scale > 0, scale, torch.ones_like(scale)))
            self.context_initialized.fill_(True)
        self.transform.initialize_from_data(x, self._embed(context, x.shape[0]))

    def dequantize(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Add ``U[0, step)`` noise to the quantized columns (see ``dequantize_steps``)."""
        from flowfit.preprocess import dequantize

        return dequantize(self._check(x, "x"), self.dequantize_steps, generator)

    def quantize(self, x: Tensor) -> Tensor:
        """Undo :meth:`dequantize` on samples: round quantized columns down to their step."""
        steps = self.dequantize_steps
        if not bool((steps > 0).any()):
            return x
        safe = torch.where(steps > 0, steps, torch.ones_like(steps))
        return torch.where(steps > 0, torch.floor(x / safe) * safe, x)

    @property
    def is_continuous(self) -> bool:
        """Whether this flow is one continuous-time layer (``z_t`` defined for every ``t``)."""
        return len(self.layers) == 1 and hasattr(self.layers[0], "trajectory")

    # -- helpers --------------------------------------------------------------------------
    @property
    def _anchor(self) -> Tensor:
        return self.base._anchor

    def _check(self, x: Tensor, name: str) -> Tensor:
        """Cast to the flow's device and dtype and check the shape."""
        x = torch.as_tensor(x, device=self._anchor.device, dtype=self._anchor.dtype)
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise InputError(f"{name} must have shape (n, {self.dim}), got {tuple(x.shape)}")
        return x

    def _context_rows(self, context: Tensor | None) -> int | None:
        if context is None:
            if self.context_dim:
                raise InputError("this flow is conditional: pass a context")
            return None
        shape = tuple(torch.as_tensor(context).shape)
        if len(shape) != 2 or shape[1] != self.context_dim:
            raise InputError(f"context must have shape (m, {self.context_dim}), got {shape}")
        return shape[0]

    def _embed(self, context: Tensor | None, n: int) -> Tensor | None:
        if context is None:
            if self.context_dim:
                raise InputError("this flow is conditional: pass a context")
            return None
        context = torch.as_tensor(context, device=self._anchor.device, dtype=self._anchor.dtype)
        if context.dim() != 2 or context.shape != (n, self.context_dim):
            raise InputError(f"context must have shape ({n}, {self.context_dim}), got {tuple(context.shape)}")
        context = (context - self.context_loc) / self.context_scale
        if self.context_embedding is not None:
            context = self.context_embedding(context)
        return context
