"""``Flow``: a base distribution pushed through a composition of transforms.

With ``x = f(z_0)``, ``f = f_T o ... o f_1`` and ``z_0 ~ p_Z0``, the change of variables gives

    log p(x) = log p_Z0(z_0) - sum_i log|det df_i/dz_(i-1)|,   z_0 = f^-1(x),

which :meth:`Flow.log_prob` computes in one pass from data to base (each inverse returns
``log|det df_i^-1/dz_i| = -log|det df_i/dz_(i-1)|``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from flowfit.config import Configurable
from flowfit.distributions import Base, StandardNormal
from flowfit.errors import InputError
from flowfit.nets import reusing_activations
from flowfit.preprocess import EDGE, dequantize
from flowfit.transforms.base import Compose, Transform

#: Why a flow that mixes its columns cannot score a row by its observed cells, and what to do.
NOT_INTEGRABLE = (
    "this flow mixes its continuous columns, so it cannot integrate a missing cell out exactly; a flow that keeps "
    "the column order (--flow nsf-ar-ordered, the columns that may be missing last) can"
)


class Flow(Configurable, nn.Module):
    """A normalizing flow: ``x = f_T(...f_1(z_0))`` with ``z_0 ~ p_Z0`` (``N(0, I)`` by default).

    Args:
        transforms: the layers, listed from the base side to the data side.
        dim: dimension of the data.
        context_dim: dimension of the conditioning vector ``c`` for ``p(x | c)``; 0 for an
            unconditional flow.
        context_embedding: optional network applied to the (standardized) context before it
            reaches the transforms (its output size must match what the transforms expect).
        base: the base distribution (default :class:`~flowfit.distributions.StandardNormal`).
        dequantize_steps: per column, the quantization step of data that is dequantized
            (uniform noise of one step added before the flow sees it); 0 for continuous
            columns.
        atoms: for a flow that keeps the column order, ``{column: (values, weights)}``: a
            dequantized column's recurring values, each the box ``[value, value + step)``
            mixed into the column's conditional density with its weight (see
            :mod:`flowfit.preprocess`).

    A flow made only of flowfit modules can be saved (:func:`flowfit.save`) and rebuilt,
    whether a family built it or you composed it by hand.
    """

    #: ``steps``, ``batch_size`` and ``lr`` that :func:`flowfit.fit` uses when they are not
    #: given; each family sets its own (tuned on two moons, see README).
    training_defaults: ClassVar[dict[str, Any]] = {"steps": 5000, "batch_size": 256, "lr": 1e-3}
    #: Rows pushed through the networks at a time when no gradient is needed (activations of a
    #: few thousand rows stay near the cache, 100,000 rows' would not); ``None``: from the
    #: widest layer (:meth:`rows_per_chunk`).
    inference_chunk: ClassVar[int | None] = None
    #: The objectives under which ``torch.compile`` of the training step pays for its compile
    #: time (about 20 s on 2 cores) in a long run: ``TrainOptions(compile="auto")`` compiles
    #: only these.
    compile_pays: ClassVar[tuple[str, ...]] = ()
    #: The objectives under which computing the networks' products in bfloat16 speeds a
    #: training step up: ``TrainOptions(mixed_precision="auto")`` uses it only for these.
    mixed_precision_pays: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        transforms: Sequence[Transform],
        dim: int,
        context_dim: int = 0,
        context_embedding: nn.Module | None = None,
        base: Base | None = None,
        dequantize_steps: Sequence[float] | Tensor | None = None,
        atoms: dict[int, tuple[Sequence[float], Sequence[float]]] | None = None,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.context_dim = context_dim
        self.base = StandardNormal(dim) if base is None else base
        if not isinstance(self.base, Base):
            raise ValueError(f"base must be a flowfit base distribution, got {base!r}")
        if self.base.dim != dim:
            raise ValueError(f"the base distribution has dimension {self.base.dim}, the flow {dim}")
        self.transform = Compose(transforms)
        self.context_embedding = context_embedding
        # the context is standardized (fixed, from the training data) before anything sees it
        self.register_buffer("context_loc", torch.zeros(context_dim))
        self.register_buffer("context_scale", torch.ones(context_dim))
        steps = torch.zeros(dim) if dequantize_steps is None else torch.as_tensor(dequantize_steps).float()
        if steps.shape != (dim,):
            raise ValueError(f"dequantize_steps needs one step per column ({dim}), got {tuple(steps.shape)}")
        self.register_buffer("dequantize_steps", steps)
        self._set_atoms(atoms or {})
        # the range of the training data and contexts, for far_outside (set by initialize)
        self.register_buffer("data_range", torch.zeros(2, dim))
        self.register_buffer("context_range", torch.zeros(2, context_dim))
        self.register_buffer("initialized", torch.tensor(False))
        #: Free-form facts saved with the model (column names, the data it was fitted to).
        self.metadata: dict[str, Any] = {}

    def _set_atoms(self, atoms: dict[int, tuple[Sequence[float], Sequence[float]]]) -> None:
        """Each column's atoms as float64 tensors (values increasing, log-weights) and
        ``log(1 - sum of the weights)``, the weight of the flow's own part. They are rebuilt
        from the constructor's arguments, not buffers: a float32 copy would move a box of one
        cent at 18,777.20 by a tenth of its width."""
        self._atoms: dict[int, tuple[Tensor, Tensor, float]] = {}
        for j in sorted(atoms):
            values, weights = (torch.tensor(list(v), dtype=torch.float64) for v in atoms[j])
            if not 0 <= j < self.dim or not float(self.dequantize_steps[j]) > 0:
                raise ValueError(f"atoms of column {j} need a dequantized column of this flow")
            self._atoms[j] = (values, weights.log(), math.log1p(-weights.sum().item()))
        if atoms and not self.transform.triangular:
            raise ValueError("recurring values (atoms) need a flow that keeps the column order (nsf-ar-ordered)")

    @property
    def has_atoms(self) -> bool:
        return bool(self._atoms)

    @classmethod
    def defaults_for(cls, objective: str = "mle") -> tuple[dict[str, Any], dict[str, Any]]:
        """``(architecture, training)`` defaults of this family for an objective: constructor
        arguments that differ from the signature's, and ``steps``/``batch_size``/``lr``."""
        return {}, dict(cls.training_defaults)

    # -- where it lives -------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.base.anchor.device

    @property
    def dtype(self) -> torch.dtype:
        return self.base.anchor.dtype

    @property
    def layers(self) -> nn.ModuleList:
        """The transforms, base side first."""
        return self.transform.transforms

    @property
    def column_names(self) -> list[str]:
        """The data's column names, as ``flowfit train`` recorded them in ``metadata``, or
        ``x0, x1, ...``."""
        names = self.metadata.get("columns")
        return list(names) if isinstance(names, list) and len(names) == self.dim else [f"x{j}" for j in range(self.dim)]

    @property
    def is_continuous(self) -> bool:
        """Whether this flow is one continuous-time layer (``z_t`` defined for every ``t``)."""
        return len(self.layers) == 1 and hasattr(self.layers[0], "trajectory")

    # -- the maps -------------------------------------------------------------------------
    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map base to data: ``x = f(z)`` and ``log|det df/dz|``, shape ``(n,)``."""
        z = self._check(z, "z")
        return self._chunked(self.transform, z, self.embed_context(context, len(z)))

    def inverse(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map data to base: ``z = f^-1(x)`` and ``log|det df^-1/dx|``, shape ``(n,)``."""
        x = self._check(x, "x")
        return self._chunked(self.transform.inverse, x, self.embed_context(context, len(x)))

    # -- densities and samples ------------------------------------------------------------
    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Exact log-density at each row of ``x`` (nats, in the data's units), shape ``(n,)``.

        This is the density at exactly these points. To score data rows of a flow with
        quantized columns, use :meth:`dequantized_log_prob`.
        """
        if self.has_atoms:
            return self._column_log_probs(self._check(x, "x"), context).sum(dim=1)
        z, log_abs_det = self.inverse(x, context)
        return self.base.log_prob(z) + log_abs_det

    def _column_log_probs(self, x: Tensor, context: Tensor | None) -> Tensor:
        """``log p(x_j | x_<j)`` of each cell of a flow that keeps the column order: the base's
        density of ``z_j`` times ``|dz_j/dx_j|``, with the column's atoms mixed in. Shape
        ``(n, dim)``."""
        z, log_derivative = self._chunked(self.transform.inverse_by_column, x, self.embed_context(context, len(x)))
        log_q = self.base.log_prob_by_column(z) + log_derivative
        if not self.has_atoms:
            return log_q
        columns = list(log_q.unbind(dim=1))
        for j, (values, log_weights, log_continuous) in self._atoms.items():
            values = values.to(x.device, x.dtype)
            k = (torch.searchsorted(values, x[:, j].contiguous(), right=True) - 1).clamp(min=0)
            step = self.dequantize_steps[j].to(x.dtype)
            inside = (x[:, j] >= values[k]) & (x[:, j] < values[k] + step)
            spike = torch.where(inside, log_weights.to(x.device, x.dtype)[k] - step.log(), -torch.inf)
            columns[j] = torch.logaddexp(columns[j] + log_continuous, spike)
        return torch.stack(columns, dim=1)

    def dequantized_log_prob(self, x: Tensor, context: Tensor | None = None, seed: int = 0) -> Tensor:
        """The log-likelihood of data rows: :meth:`log_prob` of ``x`` after the quantized
        columns get their uniform noise (:meth:`dequantize`, drawn from ``seed``, so the same
        rows always get the same numbers). For a flow without quantized columns it equals
        :meth:`log_prob`; with them it is a one-sample estimate of the lower bound on the
        log-probability of the discrete values that training maximises."""
        x = self.dequantize(x, torch.Generator().manual_seed(seed))
        return self.log_prob(x, context)

    @property
    def marginalizes_trailing_columns(self) -> bool:
        """Whether :meth:`observed_log_prob` is exact here: every layer keeps the column order
        (is :attr:`~flowfit.transforms.Transform.triangular`), as ``--flow nsf-ar-ordered``'s do."""
        return bool(self.transform.triangular)

    def observed_log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Exact log-density of each row's observed cells, its missing cells (NaN) integrated
        out: ``log p(x_1, ..., x_k)`` for a row whose first ``k`` cells are observed.

        Each layer of a :attr:`marginalizes_trailing_columns` flow maps column ``j`` using
        columns ``<= j`` only, so ``(z_1, ..., z_k) = g(x_1, ..., x_k)`` is a bijection on its
        own, its Jacobian the leading ``k x k`` block of the whole one, and ``z_1..z_k`` are
        distributed as the base's first ``k`` coordinates (independent of the others). So

            ``log p(x_1..k) = sum_(j <= k) [log p_Z0(z_j) + log|dz_j/dx_j|]``

        with no integral to approximate. A row's missing cells must be its last columns in the
        model's order, and the flow must keep the column order: otherwise raises
        :class:`~flowfit.errors.InputError` (:meth:`integration_problem`). A row with no
        missing cell gets :meth:`log_prob`. Shape ``(n,)``."""
        x = self._check(x, "x")
        missing = torch.isnan(x)
        if not bool(missing.any()):
            return self.log_prob(x, context)
        problem = self.integration_problem(missing)
        if problem is not None:
            raise InputError(f"row {problem[0] + 1}: {problem[1]}")
        x = torch.where(missing, self.data_range.mean(dim=0), x)  # any point of the support: no output sees it
        return torch.where(missing, 0.0, self._column_log_probs(x, context)).sum(dim=1)

    def integration_problem(self, missing: Tensor) -> tuple[int, str] | None:
        """The first row of a mask of missing cells (shape ``(n, dim)``) whose missing cells
        :meth:`observed_log_prob` cannot integrate out exactly, and why; ``None`` if none."""
        if not bool(missing.any()):
            return None
        names = self.column_names
        if not self.marginalizes_trailing_columns:
            row, column = (int(v) for v in missing.nonzero()[0])
            return row, f"{names[column]!r} is missing: {NOT_INTEGRABLE}"
        misplaced = missing[:, :-1] & ~missing[:, 1:]  # an observed cell after a missing one
        if not bool(misplaced.any()):
            return None
        row, column = (int(v) for v in misplaced.nonzero()[0])
        return row, (
            f"{names[column]!r} is missing but {names[column + 1]!r} after it is not; the flow integrates out "
            f"missing cells only after every observed one (in its order: {', '.join(names)})"
        )

    def sample(self, n: int, context: Tensor | None = None) -> Tensor:
        """Draw ``n`` samples: shape ``(n, dim)``, or ``(m, n, dim)`` for ``m`` context rows.

        Only ``x = f(z)`` is computed (:meth:`Transform.push_forward`): a continuous flow
        skips the trace and solves with its sampling solver."""
        z, context, rows = self._base_draw(n, context)
        embedded = self.embed_context(context, len(z))
        x = self._chunked(self.transform.push_forward, z, embedded)
        if self.has_atoms:
            x = self._draw_atoms(z, x, embedded)
        return x if rows is None else x.view(rows, n, self.dim)

    def _draw_atoms(self, z: Tensor, x: Tensor, context: Tensor | None) -> Tensor:
        """Mix the atoms into samples of the flow's part, column by column: a row takes an
        atom of column ``j`` with the atoms' total weight (which one by weight, a uniform
        point of its box), and its later columns are drawn again from the flow given its new
        first ``j`` columns (the map is triangular: ``z_<=j`` is recomputed from them, the
        base's later coordinates kept, as independent draws they are)."""
        for j, (values, log_weights, _) in self._atoms.items():
            weights = log_weights.exp()
            pick = (torch.rand(len(x), dtype=torch.float64) < weights.sum().item()).nonzero()[:, 0].to(x.device)
            if not len(pick):
                continue
            which = torch.multinomial(weights, len(pick), replacement=True)
            box = EDGE + (1 - 2 * EDGE) * torch.rand(len(pick), dtype=torch.float64)
            changed = x[pick].clone()
            changed[:, j] = (values[which] + box * float(self.dequantize_steps[j])).to(x.device, x.dtype)
            part = None if context is None else context[pick]
            kept, _ = self._chunked(self.transform.inverse, changed, part)
            kept = torch.cat((kept[:, : j + 1], z[pick, j + 1 :]), dim=1)
            redrawn = self._chunked(self.transform.push_forward, kept, part)
            x = x.index_copy(0, pick, torch.cat((changed[:, : j + 1], redrawn[:, j + 1 :]), dim=1))
            z = z.index_copy(0, pick, kept)
        return x

    def sample_and_log_prob(self, n: int, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Draw samples and their exact log-density in one pass from base to data.

        ``log p(x) = log p_Z0(z_0) - log|det df/dz_0|``. Shapes as in :meth:`sample`, with
        the log-densities shaped ``(n,)`` or ``(m, n)``.
        """
        if self.has_atoms:  # samples are not one pass of the flow: score them
            x = self.sample(n, context)
            flat = None if context is None else self._cast(context).repeat_interleave(n, dim=0)
            return x, self.log_prob(x.reshape(-1, self.dim), flat).view(x.shape[:-1])
        z, context, rows = self._base_draw(n, context)
        x, log_abs_det = self.forward(z, context)
        log_prob = self.base.log_prob(z) - log_abs_det
        if rows is None:
            return x, log_prob
        return x.view(rows, n, self.dim), log_prob.view(rows, n)

    def _base_draw(self, n: int, context: Tensor | None) -> tuple[Tensor, Tensor | None, int | None]:
        """``n`` base points per context row (the context repeated to match), and the number
        of context rows (``None`` without a context)."""
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise InputError(f"the number of samples must be a positive integer, got {n!r}")
        n = int(n)
        rows = self._context_rows(context)
        z = self.base.sample(n * (rows or 1))
        if context is not None:
            context = self._cast(context).repeat_interleave(n, dim=0)
        return z, context, rows

    def trajectory(
        self, z0_or_n: Tensor | int, context: Tensor | None = None, t: Sequence[float] | Tensor | None = None
    ) -> list[Tensor]:
        """The states ``[z_0, z_1, ..., z_T]``: a base sample and its image after each layer.

        ``z0_or_n`` is either the starting points ``z_0`` (shape ``(n, dim)``) or a number of
        points to draw from the base distribution. ``z_T`` is the data-side point. A
        conditional flow needs one context row per point.

        For a continuous-time flow, ``t`` asks for ``z_t`` at those real times in ``[0, 1]``
        instead (``t = 0`` the base, ``t = 1`` the data), solved from the ODE.
        """
        z = self.base.sample(z0_or_n) if isinstance(z0_or_n, int) else self._check(z0_or_n, "z0")
        context = self.embed_context(context, len(z))
        if t is not None:
            if not self.is_continuous:
                raise InputError("trajectory(t=...) needs a continuous-time flow; a discrete flow has z_0, ..., z_T")
            return self.layers[0].trajectory(z, t, context)
        states = [z]
        for layer in self.layers:
            z, _ = layer(z, context)
            states.append(z)
        return states

    def change_of_variables(
        self, x: Tensor, context: Tensor | None = None, t: Sequence[float] | Tensor | None = None
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Follow data points back to the base, step by step: ``(states, log_abs_dets)``.

        ``states`` are ``[z_0, ..., z_T]`` with ``z_T = x`` (base side first, as in
        :meth:`trajectory`); ``log_abs_dets[i]`` is ``log|det dz_(i+1)/dz_i|``, the
        log-determinant of step ``i`` in the forward direction, shape ``(n,)``. So

            ``log p(x) = base.log_prob(z_0) - sum_i log_abs_dets[i]``,

        the change of variables written out one layer at a time. For a continuous-time flow,
        ``t`` asks for the states at those times instead (``0`` and ``1`` are always added),
        the steps being the ODE's maps between consecutive times.
        """
        x = self._check(x, "x")
        context = self.embed_context(context, len(x))
        if t is not None:
            if not self.is_continuous:
                raise InputError("change_of_variables(t=...) needs a continuous-time flow")
            return self.layers[0].change_of_variables(x, t, context)
        states, log_abs_dets = [x], []
        for layer in reversed(self.layers):
            z, log_abs_det = layer.inverse(states[0], context)
            states.insert(0, z)
            log_abs_dets.insert(0, -log_abs_det)
        return states, log_abs_dets

    def loss(self, x: Tensor, context: Tensor | None = None, objective: str = "mle") -> Tensor:
        """The training loss on a batch: the mean negative log-likelihood (``"mle"``, plus a
        continuous flow's path penalties when it has them), or for a continuous flow the
        conditional flow-matching loss (``"fm"``)."""
        if objective == "mle" and self.is_continuous and any(self.layers[0].penalties):
            x = self._check(x, "x")
            z, log_abs_det, penalty = self.layers[0].regularized_inverse(x, self.embed_context(context, len(x)))
            return -(self.base.log_prob(z) + log_abs_det).mean() + penalty
        if objective == "mle":
            return -self.log_prob(x, context).mean()
        if objective == "fm" and self.is_continuous:
            x = self._check(x, "x")
            return self.layers[0].flow_matching_loss(x, self.embed_context(context, len(x)))
        raise InputError(f"objective {objective!r}: use 'mle', or 'fm' (flow matching) for a continuous flow")

    # -- data-side facts ------------------------------------------------------------------
    @torch.no_grad()
    def initialize(self, x: Tensor, context: Tensor | None = None) -> None:
        """Fit what is fixed by the training data, once: every layer's data-dependent
        initialisation (standardization, ActNorm; each layer sees ``x`` mapped back to its
        own data side), the context's standardization, and the data's range
        (:meth:`far_outside`). A loaded or already initialised flow keeps its values."""
        x = self._check(x, "x")
        if bool(self.initialized):
            return
        if context is not None and self.context_dim:
            context = self._cast(context)
            scale = context.std(dim=0) if len(context) > 1 else torch.ones_like(context[0])
            self.context_loc.copy_(context.mean(dim=0))
            self.context_scale.copy_(torch.where(scale > 0, scale, torch.ones_like(scale)))
            self.context_range.copy_(torch.stack((context.min(dim=0).values, context.max(dim=0).values)))
        self.transform.initialize_from_data(x, self.embed_context(context, len(x)))
        self.data_range.copy_(torch.stack((x.min(dim=0).values, x.max(dim=0).values)))
        self.initialized.fill_(True)

    def far_outside(self, x: Tensor | None, context: Tensor | None = None) -> Tensor:
        """Which rows lie far outside the training data: some coordinate of ``x`` (or of the
        context) more than the training range's width beyond its minimum or maximum. The
        density there is extrapolation, however exact its arithmetic. Shape ``(n,)``, bool;
        either argument may be None."""
        parts = []
        if x is not None:
            parts.append(_beyond(self._check(x, "x"), self.data_range))
        if context is not None and self.context_dim:
            parts.append(_beyond(self._cast(context), self.context_range))
        if not parts:
            raise InputError("far_outside needs points or contexts")
        far = parts[0] if len(parts) == 1 else parts[0] | parts[1]
        return far & self.initialized

    def dequantize(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Add ``U[0, step)`` noise to the quantized columns (see ``dequantize_steps``)."""
        return dequantize(self._check(x, "x"), self.dequantize_steps, generator)

    def quantize(self, x: Tensor) -> Tensor:
        """Undo :meth:`dequantize` on samples: round quantized columns down to their step."""
        steps = self.dequantize_steps
        if not bool((steps > 0).any()):
            return x
        safe = torch.where(steps > 0, steps, torch.ones_like(steps))
        return torch.where(steps > 0, torch.floor(x / safe) * safe, x)

    def embed_context(self, context: Tensor | None, n: int) -> Tensor | None:
        """The context as the transforms see it: standardized, then embedded; checks that
        there is one row of ``context_dim`` values per point."""
        if context is None:
            if self.context_dim:
                raise InputError("this flow is conditional: pass a context")
            return None
        if not self.context_dim:
            raise InputError("this flow is unconditional: it takes no context")
        context = self._cast(context)
        if context.shape != (n, self.context_dim):
            raise InputError(f"context must have shape ({n}, {self.context_dim}), got {tuple(context.shape)}")
        context = (context - self.context_loc) / self.context_scale
        return context if self.context_embedding is None else self.context_embedding(context)

    # -- helpers --------------------------------------------------------------------------
    def _cast(self, values: Any) -> Tensor:
        return torch.as_tensor(values, device=self.device, dtype=self.dtype)

    def _check(self, x: Any, name: str) -> Tensor:
        """Cast to the flow's device and dtype and check the shape."""
        x = self._cast(x)
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

    def rows_per_chunk(self) -> int:
        """The rows of an inference chunk: as many as make the widest layer's activations about
        2**21 floats (8 MB), a power of two from 1,024 to 16,384. More rows spread each
        operation's fixed cost thinner; the networks write each chunk's activations into the same
        buffers (:func:`flowfit.nets.reusing_activations`), so no chunk waits for fresh memory
        (``benchmarks/inference_chunk.py``)."""
        widest = max((m.out_features for m in self.modules() if isinstance(m, nn.Linear)), default=1)
        return min(16384, max(1024, 2 ** int(math.log2(2**21 / widest))))

    def _chunked(self, function: Callable[[Tensor, Tensor | None], Any], x: Tensor, context: Tensor | None) -> Any:
        """``function(x, context)`` (a tensor, or a map's output and log-determinant), in
        cache-sized chunks of rows when no gradient is needed."""
        if torch.is_grad_enabled():  # a training step: one pass, and nothing more to decide
            return function(x, context)
        step = self.inference_chunk or self.rows_per_chunk()
        if len(x) <= step:
            return function(x, context)
        with reusing_activations():  # each chunk's networks write into the same memory
            parts = [
                function(x[i : i + step], None if context is None else context[i : i + step])
                for i in range(0, len(x), step)
            ]
        if isinstance(parts[0], Tensor):
            return torch.cat(parts)
        return torch.cat([out for out, _ in parts]), torch.cat([log_abs_det for _, log_abs_det in parts])


def _beyond(values: Tensor, value_range: Tensor) -> Tensor:
    """Rows with a value more than the range's width below its minimum or above its maximum."""
    low, high = value_range
    span = high - low
    return ((values < low - span) | (values > high + span)).any(dim=1)
