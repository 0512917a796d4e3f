"""House prices against floor area (SaratogaHouses), the tutorial's in-the-wild example, done
for real: the conditional density p(price | livingArea) drawn at several areas over the data.

    .venv/bin/python examples/house_prices.py      # needs: pip install 'flowfit[data]'
    # the same model from the command line:
    flowfit train --data saratoga --columns price --given livingArea --flow maf --out runs/price

Writes docs/house_prices.png.
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

import flowfit
from flowfit import sources
from flowfit.files import atomic_path

data = sources.resolve("saratoga", columns=["price"], given=["livingArea"], seed=0)
print("preprocessing:", [plan.spec for plan in data.plans])
torch.manual_seed(0)
flow = flowfit.MAF(1, context_dim=1, preprocess=[plan.__dict__ for plan in data.plans])
flowfit.fit(flow, data.train, steps=4000, batch_size=256, lr=2e-3, seed=0, val_data=data.val)
test_nll, stderr = flowfit.train.nll(flow, *data.test)
print(f"test NLL of price given livingArea: {test_nll:.3f} ± {stderr:.3f} nats (price in dollars)")

price, area = data.train[0][:, 0].numpy(), data.train[1][:, 0].numpy()
fig, ax = plt.subplots(figsize=(8, 5))
ax.scatter(area, price / 1000, s=4, alpha=0.35, color="0.4", label="houses (training split)")
prices = torch.linspace(0, 600_000, 400)[1:, None]
with torch.inference_mode():
    for at in (1000, 1500, 2000, 2500, 3000, 3500):
        density = flow.log_prob(prices, torch.full((len(prices), 1), float(at))).exp().numpy()
        width = 400 * density / density.max()  # draw each conditional as a sideways curve at its area
        shown = width > 2  # leave out the flat tails
        ax.fill_betweenx(prices[shown, 0].numpy() / 1000, at, at + width[shown], alpha=0.5)
        ax.plot(at + width[shown], prices[shown, 0].numpy() / 1000, lw=1)
ax.set_xlabel("living area (square feet)")
ax.set_ylabel("price (thousand US dollars)")
ax.set_title("p(price | living area) from a conditional flow")
ax.set_ylim(0, 600)
ax.legend(loc="upper left")
with atomic_path("docs/house_prices.png") as path:
    fig.savefig(path, dpi=90, bbox_inches="tight", format="png")
print("wrote docs/house_prices.png")
