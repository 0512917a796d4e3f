"""Checks shared by the transform and flow tests."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def randomize(module: nn.Module, scale: float = 0.5, seed: int = 0) -> nn.Module:
    """Give every parameter random values (conditioners start at zero, the identity)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(scale * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    return module


def autograd_log_abs_det(function, points: Tensor, context: Tensor | None = None) -> Tensor:
    """log|det J| of ``function`` at each row of ``points``, from the full autograd Jacobian."""
    values = []
    for i in range(points.shape[0]):
        row_context = None if context is None else context[i : i + 1]
        jacobian = torch.autograd.functional.jacobian(lambda v, c=row_context: function(v[None], c)[0][0], points[i])
        values.append(torch.linalg.slogdet(jacobian).logabsdet)
    return torch.stack(values)


def check_bijection(transform, points: Tensor, context: Tensor | None = None, atol: float = 1e-6) -> None:
    """``inverse(forward(z)) == z``, ``forward(inverse(x)) == x``, and both returned
    log-determinants equal the autograd ones (and are negatives of each other)."""
    out, log_abs_det = transform(points, context)
    back, inverse_log_abs_det = transform.inverse(out, context)
    assert out.shape == points.shape and log_abs_det.shape == (points.shape[0],)
    torch.testing.assert_close(back, points, atol=atol, rtol=0)
    torch.testing.assert_close(inverse_log_abs_det, -log_abs_det, atol=atol, rtol=0)
    torch.testing.assert_close(log_abs_det, autograd_log_abs_det(transform, points, context), atol=atol, rtol=0)
    torch.testing.assert_close(
        inverse_log_abs_det, autograd_log_abs_det(transform.inverse, out, context), atol=atol, rtol=0
    )


def interrupt_training_at(monkeypatch, step: int) -> object:
    """Make the runner's training raise Ctrl-C at ``step`` (a run to resume); returns the real ``fit``."""
    import signal

    from flowfit import runner

    real_fit = runner.fit

    def interrupted_fit(*args, **kwargs):
        def stop(at: int, _flow) -> None:
            if at == step:
                signal.raise_signal(signal.SIGINT)

        return real_fit(*args, **kwargs, callback=stop)

    monkeypatch.setattr(runner, "fit", interrupted_fit)
    return real_fit
