"""Conditional density estimation: p(x | moon) on two moons, then both conditionals.

.venv/bin/python examples/conditional_moons.py   # writes docs/conditional_moons.png
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

import flowfit
from flowfit import datasets
from flowfit.files import atomic_path

torch.manual_seed(0)
flow = flowfit.NSF(dim=2, context_dim=1)  # the context is the moon's label, 0 (upper) or 1 (lower)
flowfit.fit(flow, lambda n: datasets.labelled_moons(n), steps=3000, batch_size=512, lr=2e-3)

x, label = datasets.labelled_moons(20000, seed=1)
print(f"test NLL of x given its moon: {-flow.log_prob(x, label).mean().item():.3f} nats")
print(f"NLL under the wrong moon:     {-flow.log_prob(x, 1 - label).mean().item():.3f} nats")

xs, ys = np.linspace(-1.5, 2.5, 240), np.linspace(-1.0, 1.5, 150)
grid = torch.from_numpy(np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)).float()
fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
with torch.inference_mode():
    for moon, ax in enumerate(axes[:2]):
        log_p = flow.log_prob(grid, torch.full((len(grid), 1), float(moon))).reshape(len(ys), len(xs))
        ax.imshow(log_p.clamp_min(-10).numpy(), origin="lower", extent=(-1.5, 2.5, -1.0, 1.5), cmap="viridis")
        ax.set_title(f"log p(x | moon = {moon})")
    samples = flow.sample(2000, torch.tensor([[0.0], [1.0]]))
for moon, color in ((0, "tab:blue"), (1, "tab:red")):
    axes[2].scatter(*samples[moon].T, s=1, c=color, label=f"samples given moon = {moon}")
axes[2].set_xlim(-1.5, 2.5)
axes[2].set_ylim(-1.0, 1.5)
axes[2].legend(loc="lower left", markerscale=8)
with atomic_path("docs/conditional_moons.png") as path:
    fig.savefig(path, dpi=90, bbox_inches="tight", format="png")
print("wrote docs/conditional_moons.png")
