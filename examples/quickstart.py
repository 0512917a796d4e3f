"""The Python example of docs/getting-started.md: fit RealNVP to two moons, score points, sample, plot."""

import torch

import flowfit
from flowfit import datasets, viz

torch.manual_seed(0)
flow = flowfit.RealNVP(dim=2, layers=6, hidden=(256, 256))
result = flowfit.fit(flow, lambda n: datasets.moons(n, noise=0.05), steps=2000, batch_size=512, lr=1e-3)
print(f"best validation NLL {result.best_val_nll:.3f} nats at step {result.best_step}")

x = torch.tensor([[0.0, 1.0], [0.5, 0.25], [3.0, 3.0]])
print("log p(x):", flow.log_prob(x).tolist())  # exact, in the data's units; low = anomalous
samples, log_p = flow.sample_and_log_prob(10_000)  # new data with their log-densities
states = flow.trajectory(2_000)  # z_0 ~ N(0, I), z_1, ..., z_T = x
viz.animate(states, "quickstart.gif", viz.layer_titles(flow))
flowfit.save(flow, "quickstart-model")  # model.safetensors + config.json
assert torch.allclose(flowfit.load("quickstart-model").log_prob(x), flow.log_prob(x))
