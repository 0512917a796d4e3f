"""A flow on scikit-learn's 8x8 handwritten digits (64 dimensions, values 0..16, dequantized):
test bits per dimension and a grid of sampled digits.

    .venv/bin/python examples/digits.py            # writes docs/digits.png
    # the same from the command line:
    flowfit train --data digits --flow nsf --out runs/digits --no-plots
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

import flowfit
from flowfit import sources
from flowfit.families import FAMILIES
from flowfit.files import atomic_path
from flowfit.preprocess import bits_per_dim

data = sources.resolve("digits", seed=0, preprocess="dequantize+logit[0,17]")
torch.manual_seed(0)
flow = FAMILIES["nsf"].build(64, preprocess=[plan.__dict__ for plan in data.plans])
flowfit.fit(flow, data.train[0], steps=4000, batch_size=256, lr=1e-3, seed=0, val_data=data.val[0])
test_nll, _ = flowfit.train.nll(flow, data.test[0])
print(f"test: {test_nll:.1f} nats per image, {bits_per_dim(test_nll, 64):.3f} bits/dim (dequantized, values 0..17)")

with torch.inference_mode():
    samples = flow.quantize(flow.sample(36)).clamp(0, 16)
fig, axes = plt.subplots(6, 12, figsize=(12, 6))
real = data.test[0][:36]
for k, ax in enumerate(axes.flat):
    image = (samples if k % 12 < 6 else real)[(k // 12) * 6 + k % 6].reshape(8, 8)
    ax.imshow(image.numpy(), cmap="gray_r", vmin=0, vmax=16)
    ax.axis("off")
fig.suptitle("left: flow samples    right: test digits")
with atomic_path("docs/digits.png") as path:
    fig.savefig(path, dpi=70, bbox_inches="tight", format="png")
print("wrote docs/digits.png")
