"""Continuous normalizing flows: a neural ODE ``dz/dt = f(z, t, c)`` on ``t`` in ``[0, 1]``.

The map from base (``t = 0``) to data (``t = 1``) is the ODE's flow, and its log-determinant
follows the instantaneous change of variables (Chen et al. 2018; FFJORD, Grathwohl et al. 2019):

    d log|det dz_t/dz_0| / dt = tr(df/dz)(z_t, t),

so ``log p(x) = log N(z_0) - int_0^1 tr(df/dz) dt`` with ``z_0`` found by integrating
backwards from ``z_1 = x``. The trace is exact (``dim`` autograd passes) or Hutchinson's
unbiased estimate ``eps^T (df/dz) eps`` with one Rademacher probe per solve. Solvers come from
torchdiffeq (dopri5 by default); the adjoint method is optional.

Two ways to train the same model: maximum likelihood through the ODE (``objective="mle"``)
or conditional flow matching (``objective="fm"``; Lipman et al. 2023, Tong et al. 2023),
which regresses ``f`` on the velocity of straight (optimal-transport) paths between noise and
data without solving any ODE. Either way ``log_prob`` is exact through the same ODE.

``z_t`` exists at every real ``t`` in ``[0, 1]``: :meth:`ContinuousFlow.trajectory` returns it
at any requested times.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchdiffeq import odeint, odeint_adjoint

from flowfit.errors import InputError
from flowfit.nets import ACTIVATIONS, full_precision
from flowfit.transforms.base import Transform
from flowfit.transforms.preprocessing import Standardize

#: Frequencies ``k`` of the time features ``sin(pi k t), cos(pi k t)`` a Fourier field adds.
TIME_FREQUENCIES = 4


class VectorField(nn.Module):
    """``f(z, t, c)``: an MLP that sees the time (and the context) at every layer.

    Each hidden layer is ``h <- act(W [h, t, c] + b)``; the output layer starts at zero, so
    the flow starts as the identity map. Smooth activations (softplus by default) keep the
    ODE well posed and the trace differentiable.

    With ``fourier = m > 0`` the network sees random Fourier features of ``z`` as well,
    ``[z, sin(2 pi B z), cos(2 pi B z)]`` with a fixed ``B`` of ``m`` rows drawn from
    ``N(0, fourier_scale^2)`` (Tancik et al. 2020, https://arxiv.org/abs/2006.10739), and
    sinusoids of the time, ``sin(pi k t), cos(pi k t)`` for ``k = 1..4``: an MLP on raw
    coordinates is biased toward smooth fields, and thin strokes are not smooth. The features
    are smooth too, so the trace stays exact.
    """

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int] = (64, 64, 64),
        context_dim: int = 0,
        activation: str = "softplus",
        fourier: int = 0,
        fourier_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.fourier = fourier
        extra = 1 + (2 * TIME_FREQUENCIES if fourier else 0) + context_dim
        sizes = [dim + 2 * fourier, *hidden]
        self.layers = nn.ModuleList(nn.Linear(a + extra, b) for a, b in itertools.pairwise(sizes))
        self.output = nn.Linear(sizes[-1] + extra, dim)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)
        self.activation = ACTIVATIONS[activation]()
        if fourier:
            self.register_buffer("frequencies", torch.randn(dim, fourier) * fourier_scale)
            self.register_buffer("time_frequencies", torch.arange(1, TIME_FREQUENCIES + 1) * torch.pi)

    def forward(self, z: Tensor, t: Tensor, context: Tensor | None = None) -> Tensor:
        h, extra = self.features(z, t, context)
        for layer in self.layers:
            h = self.activation(layer(torch.cat((h, extra.to(h.dtype)), dim=1)))
        # under the trainer's mixed precision the layers run in bfloat16; the velocity is
        # returned in the inputs' precision
        return self.output(torch.cat((h, extra.to(h.dtype)), dim=1)).to(z.dtype)

    @full_precision  # angles of up to tens of radians
    def features(self, z: Tensor, t: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """The first layer's inputs: ``z`` (with its Fourier features), and what every layer
        sees besides, the time (with its sinusoids) and the context."""
        extra = t.expand(z.shape[0], 1) if t.dim() < 2 else t
        h = z
        if self.fourier:
            angles = 2 * torch.pi * z @ self.frequencies.to(z.dtype)
            h = torch.cat((z, angles.sin(), angles.cos()), dim=1)
            times = extra * self.time_frequencies.to(z.dtype)
            extra = torch.cat((extra, times.sin(), times.cos()), dim=1)
        if context is not None:
            extra = torch.cat((extra, context), dim=1)
        return h, extra


def jacobian_rows(velocity: Tensor, z: Tensor, create_graph: bool) -> list[Tensor]:
    """The rows ``df_i/dz`` of the Jacobian, row by row: one autograd pass per dimension."""
    rows = []
    for i in range(z.shape[1]):
        (gradient,) = torch.autograd.grad(velocity[:, i].sum(), z, create_graph=create_graph, retain_graph=True)
        rows.append(gradient)
    return rows


def trace_of(rows: list[Tensor]) -> Tensor:
    """``tr(df/dz)`` per point from the Jacobian's rows (:func:`jacobian_rows`)."""
    return sum(row[:, i] for i, row in enumerate(rows))


def exact_divergence(velocity: Tensor, z: Tensor, create_graph: bool) -> Tensor:
    """``tr(df/dz)`` row by row, one autograd pass per dimension."""
    return trace_of(jacobian_rows(velocity, z, create_graph))


def probe_product(velocity: Tensor, z: Tensor, probe: Tensor, create_graph: bool) -> Tensor:
    """``eps^T (df/dz)`` for a probe ``eps`` per row: one autograd pass."""
    (product,) = torch.autograd.grad(velocity, z, probe, create_graph=create_graph)
    return product


def hutchinson_divergence(velocity: Tensor, z: Tensor, probe: Tensor, create_graph: bool) -> Tensor:
    """Hutchinson's estimate ``eps^T (df/dz) eps`` (unbiased when ``E[eps eps^T] = I``)."""
    return (probe_product(velocity, z, probe, create_graph) * probe).sum(dim=1)


class _Dynamics(nn.Module):
    """The augmented ODE that torchdiffeq integrates: ``d(z, l)/dt = (f(z, t), tr df/dz)``,
    and with ``regularize`` also the integrands of the kinetic energy ``|f|^2`` and of the
    Jacobian's squared Frobenius norm ``|df/dz|_F^2`` (exact from the same Jacobian rows, or
    Hutchinson's ``|eps^T df/dz|^2`` with the trace's probe)."""

    def __init__(self, field: VectorField) -> None:
        super().__init__()
        self.field = field
        self.context: Tensor | None = None
        self.probe: Tensor | None = None
        self.regularize = False
        self.evaluations = 0

    def forward(self, t: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        self.evaluations += 1
        z = state[0]
        create_graph = torch.is_grad_enabled()  # the caller differentiates through the solve
        with torch.enable_grad():
            if not z.requires_grad:
                z = z.detach().requires_grad_(True)
            velocity = self.field(z, t.to(z.dtype), self.context)
            if self.probe is None:
                rows = jacobian_rows(velocity, z, create_graph)
                divergence = trace_of(rows)
            else:
                rows = [probe_product(velocity, z, self.probe, create_graph)]
                divergence = (rows[0] * self.probe).sum(dim=1)
        if not create_graph:
            velocity, divergence = velocity.detach(), divergence.detach()
        if not self.regularize:
            return velocity, divergence
        frobenius = sum(row.square().sum(dim=1) for row in rows)
        return velocity, divergence, velocity.square().sum(dim=1), frobenius

    def velocity(self, t: Tensor, z: Tensor) -> Tensor:
        """``dz/dt = f(z, t)`` alone: the ODE of a sample, whose log-determinant nobody asked for."""
        self.evaluations += 1
        return self.field(z, t.to(z.dtype), self.context)


class ContinuousFlow(Transform):
    """A continuous-time flow: the time-1 map of ``dy/dt = f(y, t, c)``, then the fixed
    data standardization ``x = loc + scale * y``.

    forward:  ``y_1 = y_0 + int_0^1 f dt``,  ``x = loc + scale y_1``,
              log|det| = ``int_0^1 tr(df/dy) dt + sum log scale``
    inverse:  integrate from ``t = 1`` back to ``0``; log|det| is the negative.

    Args:
        dim: dimension of the data.
        hidden: hidden sizes of the vector field's MLP.
        context_dim: size of the context the field sees (0: unconditional).
        activation: a smooth activation (``softplus``, ``tanh``, ``silu``).
        method, rtol, atol: the torchdiffeq solver and its tolerances.
        trace: ``"exact"`` (``dim`` autograd passes per evaluation), ``"hutchinson"`` (one,
            unbiased; used only while training, evaluation stays exact) or ``"auto"``
            (exact up to 8 dimensions).
        adjoint: backpropagate with the adjoint method (memory independent of the number of
            solver steps, at the price of a backward solve).
        fourier, fourier_scale: random Fourier features of the field's input (see
            :class:`VectorField`; 0: none).
        pairing: how flow matching pairs noise with data in a batch: ``"independent"``, or
            ``"ot"``, the minibatch optimal-transport assignment (:func:`ot_pairing`).
        sample_method, sample_steps: the solver of a sample's path, ``dz/dt = f`` alone (no
            trace: :meth:`push_forward`, ``trajectory``): ``None`` (``method`` with ``rtol``
            and ``atol``) or a fixed-step method of :data:`FIXED_STEP_METHODS` taking
            ``sample_steps`` equal steps. Log-densities always use ``method``, ``rtol``, ``atol``.
        train_tolerance: ``rtol = atol`` of the solve while training by maximum likelihood
            (``None``: ``rtol`` and ``atol``); a looser solve trains faster, and log-densities
            outside training always use ``rtol`` and ``atol``.
        kinetic_penalty, jacobian_penalty: weights ``lambda_K``, ``lambda_J`` of the
            regularization of maximum-likelihood training in "How to train your neural ODE"
            (Finlay et al. 2020, https://arxiv.org/abs/2002.02798): the loss gains
            ``lambda_K E int_0^1 |f|^2 dt + lambda_J E int_0^1 |df/dz|_F^2 dt``, which favours
            straight, smooth paths that a solver follows in fewer steps (0: off).
    """

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int] = (64, 64, 64),
        context_dim: int = 0,
        activation: str = "softplus",
        method: str = "dopri5",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        trace: str = "auto",
        adjoint: bool = False,
        fourier: int = 0,
        fourier_scale: float = 1.0,
        pairing: str = "independent",
        sample_method: str | None = None,
        sample_steps: int = 16,
        train_tolerance: float | None = None,
        kinetic_penalty: float = 0.0,
        jacobian_penalty: float = 0.0,
    ) -> None:
        super().__init__()
        if trace not in ("auto", "exact", "hutchinson"):
            raise ValueError(f"trace must be 'auto', 'exact' or 'hutchinson', got {trace!r}")
        if pairing not in PAIRINGS:
            raise ValueError(f"pairing must be one of {', '.join(PAIRINGS)}, got {pairing!r}")
        if pairing == "ot" and context_dim:
            raise ValueError("pairing 'ot' would pair noise with data of other contexts; use 'independent'")
        if sample_method is not None and sample_method not in FIXED_STEP_METHODS:
            choices = ", ".join(FIXED_STEP_METHODS)
            raise ValueError(f"sample_method must be None or one of {choices}, got {sample_method!r}")
        if sample_steps < 1:
            raise ValueError(f"sample_steps must be a positive number of steps, got {sample_steps}")
        self.dim = dim
        self.dynamics = _Dynamics(VectorField(dim, hidden, context_dim, activation, fourier, fourier_scale))
        self.standardize = Standardize(dim)
        self.method, self.rtol, self.atol, self.adjoint = method, rtol, atol, adjoint
        self.sample_method, self.sample_steps = sample_method, sample_steps
        if kinetic_penalty < 0 or jacobian_penalty < 0:
            raise ValueError("kinetic_penalty and jacobian_penalty are weights >= 0")
        self.penalties = (float(kinetic_penalty), float(jacobian_penalty))
        if train_tolerance is not None and not train_tolerance > 0:
            raise ValueError(f"train_tolerance must be a positive tolerance, got {train_tolerance}")
        self.train_tolerance = train_tolerance
        self.pairing = pairing
        self.hutchinson = trace == "hutchinson" or (trace == "auto" and dim > 8)

    @property
    def field(self) -> VectorField:
        """The vector field ``f(z, t, c)``."""
        return self.dynamics.field

    # -- the ODE ------------------------------------------------------------------------
    def _integrate(
        self, y: Tensor, times: Tensor, context: Tensor | None, regularize: bool = False
    ) -> tuple[Tensor, ...]:
        """Solve the augmented ODE from ``times[0]``; return ``y`` and the accumulated trace
        integral at every time, shapes ``(len(times), n, dim)`` and ``(len(times), n)``, and
        with ``regularize`` the accumulated kinetic energy and Frobenius norm too."""
        self.dynamics.context, self.dynamics.regularize = context, regularize
        use_probe = self.hutchinson and self.training and torch.is_grad_enabled()
        self.dynamics.probe = torch.randint(0, 2, y.shape, device=y.device).to(y.dtype) * 2 - 1 if use_probe else None
        state = (y, *[y.new_zeros(y.shape[0])] * (3 if regularize else 1))
        training = self.training and torch.is_grad_enabled() and self.train_tolerance is not None
        rtol, atol = (self.train_tolerance, self.train_tolerance) if training else (self.rtol, self.atol)
        options = {"method": self.method, "rtol": rtol, "atol": atol}
        if self.adjoint and torch.is_grad_enabled():
            adjoint_params = tuple(self.field.parameters()) + (() if context is None else (context,))
            return odeint_adjoint(self.dynamics, state, times, adjoint_params=adjoint_params, **options)
        return odeint(self.dynamics, state, times, **options)

    def _path(self, y: Tensor, times: Tensor, context: Tensor | None) -> Tensor:
        """Solve ``dy/dt = f(y, t)`` alone (no trace) from ``times[0]`` with the sampling
        solver; ``y`` at every time, shape ``(len(times), n, dim)``. A fixed-step solver steps
        at most ``1 / sample_steps`` at a time, in equal steps between consecutive requested
        times, so every requested ``z_t`` is a solver node, never an interpolation."""
        self.dynamics.context = context
        if self.sample_method is None:
            return odeint(self.dynamics.velocity, y, times, method=self.method, rtol=self.rtol, atol=self.atol)

        def grid(_: object, __: Tensor, requested: Tensor) -> Tensor:  # torchdiffeq hands increasing times
            nodes = [requested[:1]]
            for start, end in itertools.pairwise(requested.tolist()):
                steps = max(1, math.ceil((end - start) * self.sample_steps - 1e-9))
                nodes.append(torch.linspace(start, end, steps + 1, dtype=requested.dtype)[1:])
            return torch.cat(nodes).to(requested.device)

        options = {"grid_constructor": grid}
        return odeint(self.dynamics.velocity, y, times, method=self.sample_method, options=options)

    def _run(self, y: Tensor, start: float, end: float, context: Tensor | None) -> tuple[Tensor, Tensor]:
        with _autograd_allowed():
            y = _usable(y)
            context = None if context is None else _usable(context)
            times = torch.tensor([start, end], dtype=y.dtype, device=y.device)
            ys, traces = self._integrate(y, times, context)
        return ys[-1], traces[-1]

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        y, trace = self._run(z, 0.0, 1.0, context)
        x, log_scale = self.standardize(y)
        return x, trace + log_scale

    def inverse(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        y, log_scale = self.standardize.inverse(x)
        z, trace = self._run(y, 1.0, 0.0, context)
        return z, trace + log_scale

    def regularized_inverse(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`inverse`, and the penalty ``lambda_K E int |f|^2 + lambda_J E int |df/dz|_F^2``
        (means over the rows) integrated along the same solve, for training."""
        y, log_scale = self.standardize.inverse(x)
        times = torch.tensor([1.0, 0.0], dtype=y.dtype, device=y.device)
        ys, traces, kinetic, frobenius = self._integrate(y, times, context, regularize=True)
        # the solve runs from t = 1 to 0, so each accumulated integral is -int_0^1
        penalty = -self.penalties[0] * kinetic[-1].mean() - self.penalties[1] * frobenius[-1].mean()
        return ys[-1], traces[-1] + log_scale, penalty

    def push_forward(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """``x = forward(z)[0]`` by the sampling solver, without the trace: a sample's path
        costs one field evaluation per solver stage instead of ``1 + dim`` passes."""
        times = torch.tensor([0.0, 1.0], dtype=z.dtype, device=z.device)
        return self.standardize(self._path(z, times, context)[-1])[0]

    def initialize_from_data(self, x: Tensor, context: Tensor | None = None) -> None:
        self.standardize.initialize_from_data(x)

    # -- z_t at any time ----------------------------------------------------------------
    def trajectory(self, z0: Tensor, times: Sequence[float] | Tensor, context: Tensor | None = None) -> list[Tensor]:
        """``z_t`` at each requested time ``t`` in ``[0, 1]``, integrating the ODE from ``z_0``.

        The fixed standardization is blended in linearly, ``z_t = t loc + (1 - t + t scale) y_t``,
        so ``z_0`` is the base sample and ``z_1 = forward(z_0)`` exactly; in between, the path
        solves ``dz/dt = loc + (scale - 1) y_t + (1 - t + t scale) f(y_t, t)``, a real ODE.
        """
        times = torch.as_tensor(times, dtype=z0.dtype, device=z0.device).flatten()
        if len(times) == 0 or (times < 0).any() or (times > 1).any():
            raise InputError("trajectory times must lie in [0, 1] (t = 0 is the base, t = 1 the data)")
        grid, index = torch.unique(torch.cat((times.new_zeros(1), times)), sorted=True, return_inverse=True)
        with torch.no_grad():
            if len(grid) == 1:
                ys = z0[None]
            else:
                ys = self._path(z0, grid, context)
        return [self._state(grid[k], ys[k]) for k in index[1:].tolist()]

    def _spread(self, t: Tensor) -> Tensor:
        """``a(t) = 1 - t + t scale``: the standardization blended in at time ``t``."""
        return 1 - t + t * self.standardize.scale

    def _state(self, t: Tensor, y: Tensor) -> Tensor:
        """``z_t = t loc + a(t) y_t``, the point the path shows at time ``t``."""
        return t * self.standardize.loc + self._spread(t) * y

    def change_of_variables(
        self, x: Tensor, times: Sequence[float] | Tensor, context: Tensor | None = None
    ) -> tuple[list[Tensor], list[Tensor]]:
        """``z_t`` of data points ``x`` at ``times`` (with 0 and 1 added, sorted), solved back
        from ``t = 1``, and ``log|det dz_t'/dz_t|`` of each step between consecutive times.

        With ``z_t = t loc + a(t) y_t``, ``a(t) = 1 - t + t scale`` (see :meth:`trajectory`),
        the step from ``t`` to ``t'`` has log|det| ``int_t^t' tr(df/dy) ds + sum_j log(a_j(t') / a_j(t))``;
        the steps add up to the forward log|det| of the whole flow.
        """
        times = torch.as_tensor(times, dtype=x.dtype, device=x.device).flatten()
        if (times < 0).any() or (times > 1).any():
            raise InputError("times must lie in [0, 1] (t = 0 is the base, t = 1 the data)")
        grid = torch.unique(torch.cat((times, times.new_tensor([0.0, 1.0]))), sorted=True)
        y1, _ = self.standardize.inverse(x)
        with torch.no_grad(), _autograd_allowed():
            ys, traces = self._integrate(_usable(y1), grid.flip(0), None if context is None else _usable(context))
        ys, from_one = ys.detach().flip(0), -traces.detach().flip(0)  # from_one[k] = int_{t_k}^1 tr ds
        log_spread = [self._spread(t).log().sum() for t in grid]
        states = [self._state(t, y) for t, y in zip(grid, ys, strict=True)]
        steps = [from_one[k] - from_one[k + 1] + log_spread[k + 1] - log_spread[k] for k in range(len(grid) - 1)]
        return states, steps

    def flow_matching_loss(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """The flow-matching loss of this layer's field on data ``x`` (see
        :func:`flow_matching_loss`); ``context`` as the field sees it."""
        return flow_matching_loss(self, x, context)

    @property
    def evaluations(self) -> int:
        """Vector-field evaluations since construction (a solver's cost, NFE)."""
        return self.dynamics.evaluations


#: Fixed-step solvers for a sample's path (``sample_method``), from torchdiffeq.
FIXED_STEP_METHODS = ("rk4", "midpoint", "euler")
#: How flow matching pairs the noise of a batch with its data (``ContinuousFlow(pairing=...)``).
PAIRINGS = ("independent", "ot")
#: Rows paired at a time by ``pairing="ot"``: the exact assignment costs O(rows^3) (on this
#: project's 2-core machine 0.4 ms for 128 rows, 13 ms for 512, against about 2 ms for a whole
#: training step), so a batch is paired in consecutive blocks of this size.
OT_BLOCK = 128


def ot_pairing(y0: Tensor, y1: Tensor) -> Tensor:
    """The permutation ``p`` that minimises ``sum_i |y0[p[i]] - y1[i]|^2`` over the batch:
    minibatch optimal transport (Tong et al. 2023, https://arxiv.org/abs/2302.00482; Pooladian
    et al. 2023), solved exactly by ``scipy.optimize.linear_sum_assignment``. Noise paired
    this way travels straighter paths, which a solver follows in fewer steps."""
    from scipy.optimize import linear_sum_assignment

    cost = torch.cdist(y1.detach().double(), y0.detach().double()).square().cpu().numpy()
    _, columns = linear_sum_assignment(cost)  # row i (data) takes noise columns[i]
    return torch.as_tensor(columns, device=y0.device)


def flow_matching_loss(
    layer: ContinuousFlow, x: Tensor, context: Tensor | None = None, sigma_min: float = 1e-4
) -> Tensor:
    """Conditional flow matching with optimal-transport paths (Lipman et al. 2023).

    With ``y_1`` the standardized data, ``y_0 ~ N(0, I)`` and ``t ~ U(0, 1)``,
    ``y_t = (1 - (1 - sigma_min) t) y_0 + t y_1`` moves at ``u = y_1 - (1 - sigma_min) y_0``;
    the loss is ``E |f(y_t, t, c) - u|^2``, whose minimiser's ODE carries ``N(0, I)`` to the
    data distribution. With ``layer.pairing == "ot"`` the batch's noise is first assigned to
    its data by :func:`ot_pairing` (in blocks of :data:`OT_BLOCK` rows) while training; a loss
    measured without gradients (validation) pairs independently, at the same cost every time.
    """
    y1, _ = layer.standardize.inverse(x)
    y0 = torch.randn_like(y1)
    if layer.pairing == "ot" and torch.is_grad_enabled():  # training; a validation loss pairs independently
        y0 = torch.cat([
            y0[i : i + OT_BLOCK][ot_pairing(y0[i : i + OT_BLOCK], y1[i : i + OT_BLOCK])]
            for i in range(0, len(y1), OT_BLOCK)
        ])  # fmt: skip
    t = torch.rand(y1.shape[0], 1, dtype=y1.dtype, device=y1.device)
    yt = (1 - (1 - sigma_min) * t) * y0 + t * y1
    target = y1 - (1 - sigma_min) * y0
    return (layer.field(yt, t, context) - target).square().sum(dim=1).mean()


class _autograd_allowed:  # noqa: N801 (used as a context manager)
    """Leave inference mode, keeping the caller's grad mode: the divergence needs autograd
    (enabled locally by the dynamics) even when the caller only evaluates under
    ``torch.inference_mode``; without this, tensors made there cannot enter a graph."""

    def __enter__(self) -> None:
        grad_enabled = torch.is_grad_enabled()
        self._inference = torch.inference_mode(False)
        self._inference.__enter__()
        self._grad = torch.set_grad_enabled(grad_enabled)
        self._grad.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._grad.__exit__(*exc)
        self._inference.__exit__(*exc)


def _usable(tensor: Tensor) -> Tensor:
    """A tensor autograd may record (inference tensors are cloned out of inference mode)."""
    return tensor.clone() if tensor.is_inference() else tensor
