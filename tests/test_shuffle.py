"""Seeded permutations computed on the fly: true permutations, reproducible, well mixed, and
with no per-row memory."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from flowfit.shuffle import Permutation, Segment, split

SIZES = [1, 2, 3, 4, 5, 7, 8, 16, 17, 97, 127, 128, 1000, 1024, 65_537, 2**18]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("seed", [0, 1, 123_456_789, -5])
def test_every_position_gets_a_different_item_and_the_inverse_undoes_it(n: int, seed: int) -> None:
    p = Permutation(n, seed)
    items = p(torch.arange(n))
    assert items.dtype == torch.int64
    assert torch.equal(items.sort().values, torch.arange(n))  # each of 0..n-1 exactly once
    assert torch.equal(p.inverse(items), torch.arange(n))
    assert torch.equal(p(p.inverse(torch.arange(n))), torch.arange(n))


def test_the_same_seed_gives_the_same_order_on_any_machine() -> None:
    """Pinned values: a checkpoint resumes in the order its run began with, and a split
    stays the same split, across machines and versions."""
    assert Permutation(10, 0)(torch.arange(10)).tolist() == [7, 5, 1, 8, 6, 3, 4, 0, 9, 2]
    assert torch.equal(Permutation(1000, 3)(torch.arange(1000)), Permutation(1000, 3)(torch.arange(1000)))
    assert not torch.equal(Permutation(1000, 3)(torch.arange(1000)), Permutation(1000, 4)(torch.arange(1000)))


def test_a_permutation_computes_any_positions_in_any_shape() -> None:
    p, everything = Permutation(500, 9), Permutation(500, 9)(torch.arange(500))
    positions = torch.tensor([[499, 0], [17, 17]])
    assert torch.equal(p(positions), everything[positions])
    with pytest.raises(IndexError):
        p(torch.tensor([500]))
    with pytest.raises(IndexError):
        p.inverse(torch.tensor([-1]))
    with pytest.raises(TypeError):
        p(torch.tensor([0.5]))
    with pytest.raises(ValueError, match="n >= 1"):
        Permutation(0, 0)


def test_the_order_is_well_mixed() -> None:
    """What training needs of a shuffle: no trace of the original order, within a pass and
    from one seed (epoch) to the next."""
    n = 10_000
    positions = torch.arange(n, dtype=torch.float64)
    for seed in range(5):
        items = Permutation(n, seed)(torch.arange(n)).double()
        assert abs(torch.corrcoef(torch.stack([positions, items]))[0, 1]) < 0.05
        # neighbours in the shuffled order are as far apart as two random rows: n/3 on average
        assert abs(items.diff().abs().mean() / n - 1 / 3) < 0.02
        # each tenth of the pass draws a tenth of each tenth of the rows
        counts = torch.histc(items.reshape(10, -1)[0], bins=10, min=0, max=n)
        assert counts.min() > 60 and counts.max() < 140
    first, second = (Permutation(n, s)(torch.arange(n)).double() for s in (0, 1))
    assert abs(torch.corrcoef(torch.stack([first, second]))[0, 1]) < 0.05


@pytest.mark.parametrize("n", [10, 11, 97, 1000, 4096])
def test_split_parts_are_disjoint_and_cover_every_item(n: int) -> None:
    parts = split(n, (0.8, 0.1, 0.1), seed=2)
    assert [len(part) for part in parts] == [int(0.8 * n), int(0.1 * n), n - int(0.8 * n) - int(0.1 * n)]
    items = torch.cat([part.items() for part in parts])
    assert torch.equal(items.sort().values, torch.arange(n))
    for j, part in enumerate(parts):
        # each item knows which part holds it, and where
        where = part.positions_of(torch.arange(n))
        inside = where >= 0
        assert torch.equal(torch.arange(n)[inside].sort().values, part.items().sort().values)
        assert torch.equal(part.items(where[inside]), torch.arange(n)[inside])
        assert all(not bool((other.positions_of(part.items()) >= 0).any()) for k, other in enumerate(parts) if k != j)


def test_a_segment_checks_its_positions() -> None:
    part = split(10, (0.5, 0.5), seed=0)[1]
    assert torch.equal(part.items(torch.tensor([4, 0])), part.items()[[4, 0]])
    with pytest.raises(IndexError):
        part.items(torch.tensor([5]))
    with pytest.raises(ValueError, match="not within"):
        Segment(Permutation(10, 0), 3, 11)
    with pytest.raises(ValueError, match="do not cut"):
        split(10, (0.8, 0.8, 0.1), seed=0)


def test_memory_does_not_grow_with_the_number_of_items() -> None:
    """A split of a trillion items, and positions drawn from anywhere in it: a per-item
    array would need 8 TB."""
    n = 10**12
    parts = split(n, (0.8, 0.1, 0.1), seed=0)
    assert sum(len(part) for part in parts) == n
    positions = torch.tensor([0, 1, n // 2, int(0.8 * n) - 1])
    items = parts[0].items(positions)
    assert len(set(items.tolist())) == 4 and bool(((items >= 0) & (items < n)).all())
    assert torch.equal(parts[0].positions_of(items), positions)
    assert bool((parts[1].positions_of(items) == -1).all())


def test_training_rows_on_disk_hold_no_row_numbers() -> None:
    """The peak memory of splitting 50 million rows on disk, shuffling them and drawing
    batches (a process's high-water mark, before and after) grows by less than a per-row
    int64 array would take (400 MB)."""
    code = """
import resource, numpy as np, torch, flowfit
from flowfit.tables import Rows
from flowfit.train.data import TableSource
from flowfit.shuffle import split

def train_on(n):
    rows = Rows(np.broadcast_to(np.arange(2.0), (n, 2)))  # n rows, no memory
    train, val, test = (rows.subset(part) for part in split(n, (0.8, 0.1, 0.1), seed=0))
    source = TableSource(train, None, flowfit.RealNVP(2), seed=0, rank=0, world=1)
    for _ in range(20):
        source.batch(4096)
    source.load_state_dict(source.state_dict())
    return source.batch(4096)[0].shape, val.take(torch.arange(1000)).shape

train_on(10_000)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
train_on(50_000_000)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(result.stdout) < 40  # MB
