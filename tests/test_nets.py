import pytest
import torch
from torch.nn import functional

from flowfit.nets import SKINNY, Linear


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
