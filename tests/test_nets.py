"""The networks: compiled products equal to torch's, and inference buffers reused safely."""

from __future__ import annotations

import threading

import pytest
import torch
from torch.nn import functional

import flowfit
from flowfit import datasets, nets
from flowfit.nets import MLP, SKINNY, Linear, reusing_activations

from .helpers import randomize


@pytest.mark.parametrize(("in_features", "out_features"), [(1, 16), (2, 16), (16, 2), (16, 1), (3, 5), (1, 1)])
def test_a_compiled_linear_layer_computes_what_torch_does(in_features: int, out_features: int) -> None:
    torch.manual_seed(0)
    layer = Linear(in_features, out_features).double()
    traced: set[object] = set()

    def recording(graph: torch.fx.GraphModule, example_inputs: list[torch.Tensor]):
        traced.update(node.target for node in graph.graph.nodes)
        return graph.forward

    compiled = torch.compile(layer, backend=recording, dynamic=False)
    x = torch.randn(7, in_features, dtype=torch.float64, requires_grad=True)
    cotangent = torch.randn(7, out_features, dtype=torch.float64)
    outputs, expected = compiled(x), functional.linear(x, layer.weight, layer.bias)
    torch.testing.assert_close(outputs, expected, rtol=0, atol=1e-12)
    got = torch.autograd.grad(outputs, (x, layer.weight, layer.bias), cotangent)
    want = torch.autograd.grad(expected, (x, layer.weight, layer.bias), cotangent)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    # the skinny products are traced element-wise (no product for Inductor to hand to BLAS)
    skinny = min(in_features, out_features) <= SKINNY
    assert (functional.linear in traced) != skinny, traced


@pytest.mark.parametrize("activation", ["relu", "tanh"])  # in place on the buffer, or a new tensor
def test_reused_activations_give_the_same_outputs_and_never_overwrite_one(activation: str) -> None:
    network = randomize(MLP(3, 5, hidden=(16, 16, 16), activation=activation).double(), seed=1)
    first, second = (
        torch.randn(40, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(i)) for i in (2, 3)
    )
    with torch.no_grad():
        fresh = network(first), network(second)
        with reusing_activations():
            reused = network(first), network(second)
            buffers = list(nets._workspace.buffers.values())
    for got, want in zip(reused, fresh, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)  # the first output survived the second call
    # three hidden layers of one width took turns in two buffers, the same for both calls
    assert [tuple(buffer.shape) for buffer in buffers] == [(40, 16), (40, 16)]
    assert nets._workspace.buffers is None  # handed back when the block ends


@pytest.mark.parametrize("bias", [True, False])
def test_a_product_written_into_a_buffer_is_the_layers_output(bias: bool) -> None:
    layer = randomize(Linear(3, 4, bias=bias).double(), seed=2)
    x = torch.randn(6, 3, dtype=torch.float64)
    out = torch.empty(6, 4, dtype=torch.float64)
    with torch.no_grad():
        assert layer.forward_into(x, out) is out
        torch.testing.assert_close(out, layer(x), rtol=0, atol=1e-12)


def test_activations_are_not_reused_where_gradients_need_them_and_nested_blocks_share() -> None:
    network = MLP(2, 2, hidden=(8,))
    x = torch.randn(10, 2)
    with reusing_activations():
        network(x).sum().backward()  # with gradients: fresh activations, none in the buffers
        assert nets._workspace.buffers == {}
        with reusing_activations(), torch.no_grad():
            network(x)
        assert len(nets._workspace.buffers) == 1  # the inner block wrote into the outer one's
    assert nets._workspace.buffers is None


@pytest.mark.parametrize("family", ["nsf", "maf"])
def test_threads_scoring_one_flow_in_chunks_each_get_their_own_buffers(family: str) -> None:
    torch.manual_seed(0)
    flow = flowfit.NSF(2, layers=2, hidden=(64, 64)) if family == "nsf" else flowfit.MAF(2, layers=2, hidden=(64, 64))
    randomize(flow.double(), scale=0.2, seed=1)
    flow.inference_chunk = 500  # 8 chunks of each call
    points = [datasets.moons(4000, seed=seed).double() for seed in range(4)]
    with torch.no_grad():
        expected = [flow.log_prob(x) for x in points]
    results: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(points))}

    def score(i: int) -> None:
        with torch.no_grad():
            for _ in range(5):
                results[i].append(flow.log_prob(points[i]))

    threads = [threading.Thread(target=score, args=(i,)) for i in range(len(points))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, want in enumerate(expected):
        assert len(results[i]) == 5
        for got in results[i]:
            torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
