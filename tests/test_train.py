from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import flowfit
from flowfit import datasets, shuffle, tables
from flowfit.errors import FlowfitWarning, InputError, TrainingDivergedError
from flowfit.train import nll
from flowfit.train.data import TableSource


def small_flow() -> flowfit.Flow:
    return flowfit.RealNVP(2, layers=2, hidden=(16,))


def test_fit_lowers_the_nll_and_keeps_the_best_state() -> None:
    flow = small_flow()
    data = datasets.moons(2000, seed=0)
    val = datasets.moons(1000, seed=1)
    flow.initialize(data)
    before = nll(flow, val)[0]
    result = flowfit.fit(flow, data, steps=150, lr=5e-3, val_data=val, val_every=10, seed=0, progress=False)
    after = nll(flow, val)[0]
    assert after < before - 0.2
    # the flow holds the best state, not the last one
    assert math.isclose(after, result.best_val_nll, abs_tol=1e-5)
    assert result.best_val_nll == min(v for _, v in result.val_curve)
    assert len(result.val_curve) == 15 and result.val_curve[-1][0] == 150


def test_fit_is_reproducible_with_a_seed() -> None:
    def run() -> torch.Tensor:
        torch.manual_seed(3)  # initial weights
        flow = small_flow()
        flowfit.fit(flow, lambda n: datasets.moons(n), steps=20, seed=3, progress=False)
        return torch.cat([p.flatten() for p in flow.parameters()])

    assert torch.equal(run(), run())


def test_fit_standardizes_from_the_data() -> None:
    flow = small_flow()
    data = datasets.moons(3000, seed=0) * 100 + 7
    flowfit.fit(flow, data, steps=2, progress=False)
    standardize = flow.layers[-1]
    torch.testing.assert_close(standardize.loc, data.mean(0), rtol=1e-2, atol=1.0)
    torch.testing.assert_close(standardize.scale, data.std(0), rtol=0.05, atol=0)


def test_raw_units_nll_shifts_by_the_log_scale() -> None:
    """A density in units 10x larger is 10^-dim times smaller: NLL + dim * log 10."""
    data = datasets.moons(2000, seed=0)
    torch.manual_seed(0)
    flow = small_flow()
    flowfit.fit(flow, data, steps=30, seed=0, progress=False)
    torch.manual_seed(0)
    scaled = small_flow()
    flowfit.fit(scaled, data * 10, steps=30, seed=0, progress=False)
    test = datasets.moons(1000, seed=5)
    assert math.isclose(nll(scaled, test * 10)[0], nll(flow, test)[0] + 2 * math.log(10), abs_tol=1e-3)


def test_divergence_names_the_step() -> None:
    calls = 0

    def sampler(n: int) -> torch.Tensor:
        nonlocal calls
        calls += 1
        batch = datasets.moons(n)
        if calls > 2 + 7:  # two draws for initialisation and validation, then 7 good steps
            batch[0, 0] = 1e30  # a float32 the data check lets through, whose log-density overflows
        return batch

    flow = small_flow()
    # steps 8, 9 and 10 are rolled back (with half the learning rate each time); the 4th failure stops
    with pytest.raises(TrainingDivergedError, match="step 11"):
        flowfit.fit(flow, sampler, steps=50, progress=False)
    assert all(torch.isfinite(p).all() for p in flow.parameters())


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (torch.randn(100, 3), "3 columns"),
        (torch.randn(100), "2-D"),
        (torch.tensor([[0.0, float("nan")]] * 50), "row 1, column '1' is nan"),
        (torch.tensor([[0.0, 1e300]] * 50, dtype=torch.float64), "beyond the largest float32"),
        (torch.tensor([[1.0, 1e-300]] * 50, dtype=torch.float64), "below the smallest normal float32"),
        (np.zeros((50, 2), dtype=np.complex64), "complex"),
        (torch.randn(3, 2), "too few"),
    ],
)
def test_bad_data(data, message) -> None:
    with pytest.raises(InputError, match=message):
        flowfit.fit(small_flow(), data, steps=1, progress=False)


# -- the training loop's guards and bookkeeping ---------------------------------------------
def parameters(flow: flowfit.Flow) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in flow.parameters()])


def resumable_run(tmp_path, interrupt_at: int | None, resume: bool = False) -> torch.Tensor:
    import signal

    torch.manual_seed(0)
    flow = small_flow()
    data = datasets.moons(1000, seed=0)

    def callback(step: int, _flow: flowfit.Flow) -> None:
        if step == interrupt_at:
            signal.raise_signal(signal.SIGINT)  # as Ctrl-C: checkpoint at the end of this step, then stop

    kwargs = dict(
        steps=60,
        batch_size=64,
        lr=3e-3,
        seed=0,
        val_every=10,
        ema=0.9,
        progress=False,
        checkpoint_dir=tmp_path / "checkpoint",
        callback=callback,
        resume=resume,
    )
    flowfit.fit(flow, data, **kwargs)
    return parameters(flow)


def test_resumed_run_ends_with_the_uninterrupted_weights(tmp_path) -> None:
    uninterrupted = resumable_run(tmp_path / "a", interrupt_at=None)
    with pytest.raises(KeyboardInterrupt):
        resumable_run(tmp_path / "b", interrupt_at=30)
    assert (tmp_path / "b" / "checkpoint" / "checkpoint.safetensors").exists()
    resumed = resumable_run(tmp_path / "b", interrupt_at=None, resume=True)
    assert torch.equal(resumed, uninterrupted)


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(flowfit.CheckpointError, match="nothing to resume"):
        flowfit.fit(small_flow(), datasets.moons(100), steps=2, checkpoint_dir=tmp_path, resume=True, progress=False)


def test_divergence_guard_skips_a_finite_spike() -> None:
    calls = 0

    def sampler(n: int) -> torch.Tensor:
        nonlocal calls
        calls += 1
        batch = datasets.moons(n)
        if calls == 2 + 80:  # one wild batch after 80 good steps: a finite loss far above the rest
            batch[:, 0] += 1e4
        return batch

    torch.manual_seed(0)
    flow = small_flow()
    result = flowfit.fit(flow, sampler, steps=120, lr=3e-3, val_every=10, seed=0, progress=False)
    assert result.skipped == [80] and result.rollbacks == []  # one wild batch: its update is skipped
    assert all(torch.isfinite(p).all() for p in flow.parameters())
    assert result.best_val_nll < 2.0


def test_a_huge_learning_rate_ends_in_a_clear_error_or_recovers(tmp_path) -> None:
    torch.manual_seed(0)
    flow = flowfit.RealNVP(2, layers=2, hidden=(16,), scale_bound=50.0)
    try:
        result = flowfit.fit(
            flow,
            lambda n: datasets.moons(n),
            steps=200,
            lr=10.0,
            val_every=10,
            progress=False,
            checkpoint_dir=tmp_path,
            checkpoint_every=10,
        )
        assert math.isfinite(result.best_val_nll)
    except TrainingDivergedError as error:
        assert "step" in str(error)
    assert all(torch.isfinite(p).all() for p in flow.parameters())
    if (tmp_path / "checkpoint.safetensors").exists():  # any checkpoint written holds finite numbers only
        from safetensors.torch import load_file

        assert all(
            torch.isfinite(v).all()
            for v in load_file(tmp_path / "checkpoint.safetensors").values()
            if v.is_floating_point()
        )


def test_ema_weights_are_what_the_flow_keeps() -> None:
    torch.manual_seed(0)
    flow = small_flow()
    result = flowfit.fit(
        flow, datasets.moons(2000, seed=0), steps=50, lr=5e-3, ema=0.9, val_every=50, seed=0, progress=False
    )
    assert result.best_step == 50
    torch.manual_seed(0)
    plain = small_flow()
    flowfit.fit(plain, datasets.moons(2000, seed=0), steps=50, lr=5e-3, ema=0, val_every=50, seed=0, progress=False)
    assert not torch.equal(parameters(flow), parameters(plain))  # averaged, not the last step's weights


def test_the_average_warms_up_its_decay() -> None:
    """After ``n`` updates the average moves toward the weights by ``1 - min(decay, (1 + n) /
    (10 + n))``: early updates count, so a short run's average is not its initial weights."""
    from torch.optim.swa_utils import AveragedModel

    from flowfit.train.trainer import warming_ema

    weight = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    module = torch.nn.Module()
    module.weight = weight
    average = AveragedModel(module, multi_avg_fn=warming_ema(0.995))
    expected = torch.zeros(3, dtype=torch.float64)
    for n in range(300):
        with torch.no_grad():
            weight.copy_(torch.full((3,), float(n + 1)))
        average.update_parameters(module)
        # the first update copies; after it, the average of n updates decays by min(0.995, (1 + n) / (10 + n))
        decay = min(0.995, (1 + n) / (10 + n))
        expected = weight.detach().clone() if n == 0 else torch.lerp(expected, weight.detach(), 1 - decay)
    torch.testing.assert_close(average.module.weight, expected, rtol=1e-12, atol=1e-12)
    assert 250 < float(expected[0]) < 290  # an average of recent weights, not of the first ones


def test_early_stopping_and_plateau_schedule(tmp_path) -> None:
    torch.manual_seed(0)
    flow = small_flow()
    log = tmp_path / "log.csv"
    result = flowfit.fit(
        flow,
        datasets.moons(100, seed=0),  # few rows: validation stalls long before 2000 steps
        val_data=datasets.moons(500, seed=1),
        steps=2000,
        lr=3e-3,
        val_every=5,
        patience=3,
        schedule="plateau",
        log_path=log,
        progress=False,
    )
    assert result.stopped_at < 2000
    lines = log.read_text().splitlines()
    assert lines[0] == "step,train_loss,val_metric,lr,skipped" and len(lines) == len(result.val_curve) + 1


def test_a_run_that_never_beats_the_untrained_flow_says_so_and_keeps_it() -> None:
    """Validation data the training makes less likely (shifted): the untrained flow is the best
    state; it is kept (its numbers are honest) and the run says so."""
    torch.manual_seed(0)
    flow = small_flow()
    shifted = datasets.moons(500, seed=1) + torch.tensor([3.0, 0.0])
    with pytest.warns(flowfit.FlowfitWarning, match="never beat the untrained flow"):
        result = flowfit.fit(flow, datasets.moons(500, seed=0), val_data=shifted, steps=200, lr=3e-3, progress=False)
    assert result.best_step == 0 and result.best_val_nll == result.start_val == nll(flow, shifted)[0]


def test_a_validation_that_is_never_finite_keeps_nothing() -> None:
    """Validation rows outside the flow's support (a log column meeting a 0): no state was
    ever measured, so none may be kept as the best (it was: the untrained weights, exit 0)."""
    from dataclasses import asdict

    from flowfit.preprocess import ColumnPlan

    plans = [asdict(ColumnPlan("log")), asdict(ColumnPlan())]
    flow = flowfit.RealNVP(2, layers=2, hidden=(8,), preprocess=plans)
    train = datasets.moons(500, seed=0) + torch.tensor([3.0, 0.0])
    val = train[:50].clone()
    val[0, 0] = 0.0
    with pytest.raises(TrainingDivergedError, match="never finite"):
        flowfit.fit(flow, train, val_data=val, steps=20, progress=False)


def test_spikes_that_keep_coming_roll_back_then_stop() -> None:
    calls = 0

    def sampler(n: int) -> torch.Tensor:
        nonlocal calls
        calls += 1
        batch = datasets.moons(n)
        if calls > 2 + 49:  # from step 50 on, every batch is wild (finite, far from the data)
            batch[:, 0] += 1e4
        return batch

    torch.manual_seed(0)
    flow = small_flow()
    # spikes are judged against the last 50 good losses, so step 50 still passes; then every 10
    # skipped steps make a rollback (at 60, 70, 80), and the 4th rollback is refused at step 90
    with pytest.raises(TrainingDivergedError, match="step 90"):
        flowfit.fit(flow, sampler, steps=200, lr=3e-3, val_every=10, seed=0, progress=False)
    assert all(torch.isfinite(p).all() for p in flow.parameters())


@pytest.mark.parametrize("conditional", [False, True])
def test_training_from_disk_equals_training_in_memory(tmp_path, conditional: bool) -> None:
    """A memory-mapped .npy read a batch at a time trains exactly as the same rows in memory."""
    x, label = datasets.labelled_moons(1500, seed=0)
    np.save(tmp_path / "t.npy", torch.cat([x, label], dim=1).double().numpy())
    rows, _ = tables.open_rows(tmp_path / "t.npy")

    def run(data) -> torch.Tensor:
        torch.manual_seed(0)
        flow = flowfit.RealNVP(2, layers=2, hidden=(16,), context_dim=1 if conditional else 0)
        flowfit.fit(flow, data, steps=40, batch_size=128, seed=0, progress=False)
        return torch.cat([p.flatten() for p in flow.parameters()])

    if conditional:
        in_memory, on_disk = run((x, label)), run((rows.select([0, 1]), rows.select([2])))
    else:
        in_memory, on_disk = run(x), run(rows.select([0, 1]))
    assert torch.equal(in_memory, on_disk)


def test_the_nll_of_rows_on_disk_is_the_nll_of_the_same_rows_in_memory(tmp_path, monkeypatch) -> None:
    """Rows on disk are scored a chunk at a time (here chunks of 100 of 1,234 rows): the same
    mean and standard error as all of them at once; a row of density 0 makes the NLL inf."""
    from flowfit.train import trainer

    monkeypatch.setattr(trainer, "CHUNK_ROWS", 100)
    x = datasets.moons(1234, seed=3).double() * 50 + 1000  # an offset: the sums must not cancel
    np.save(tmp_path / "t.npy", x.numpy())
    rows, _ = tables.open_rows(tmp_path / "t.npy")
    flow = flowfit.RealNVP(2, layers=2, hidden=(8,)).double()
    flow.initialize(x)
    mean, stderr = nll(flow, rows)
    expected_mean, expected_stderr = nll(flow, x)
    assert mean == pytest.approx(expected_mean, rel=1e-12) and stderr == pytest.approx(expected_stderr, rel=1e-9)
    part = shuffle.split(1234, (0.5, 0.5), seed=0)[1]  # a shuffled part, as training leaves it
    assert nll(flow, tables.select_rows(rows, part))[0] == pytest.approx(nll(flow, x[part.items()])[0], rel=1e-12)
    x[1000] = float(np.finfo(np.float64).max)  # far outside the data: log-density -inf
    np.save(tmp_path / "far.npy", x.numpy())
    assert nll(flow, tables.open_rows(tmp_path / "far.npy")[0])[0] == math.inf == nll(flow, x)[0]


def test_a_large_validation_set_is_measured_on_a_random_sample(monkeypatch) -> None:
    """Of more held-out rows than VALIDATION_ROWS, validation measures that many, chosen at
    random: from a validation set sorted by its first column, the sample's mean is the
    whole set's, not its first rows'."""
    from flowfit.train import data as training_data

    monkeypatch.setattr(training_data, "VALIDATION_ROWS", 500)
    val = datasets.moons(5000, seed=1).double()
    val = val[val[:, 0].argsort()]
    flow = small_flow()
    result = flowfit.fit(flow, datasets.moons(1000), steps=2, val_data=val, val_every=1, progress=False)
    _, (held_x, _), _ = training_data.make_source(datasets.moons(1000), flow, val, 0.1, 0, 0, 1)
    assert held_x.shape == (500, 2)
    assert set(map(tuple, held_x.tolist())) <= set(map(tuple, val.float().tolist()))
    assert abs(held_x[:, 0].mean().item() - val[:, 0].mean().item()) < 0.1  # the first 500 rows: 1.4 below
    assert result.best_val_nll == pytest.approx(nll(flow, held_x)[0], abs=1e-5)


def numbered_source(n: int, seed: int = 0, rank: int = 0, world: int = 1, rows=None) -> TableSource:
    """A source whose row ``i`` holds ``(i, i)`` (unless ``rows`` are given): a batch says
    which rows it drew."""
    if rows is None:
        rows = torch.arange(n, dtype=torch.float64)[:, None].repeat(1, 2)
    return TableSource(rows, None, small_flow(), seed=seed, rank=rank, world=world)


def drawn(source: TableSource, batches: int, size: int) -> list[list[int]]:
    return [source.batch(size)[0][:, 0].long().tolist() for _ in range(batches)]


@pytest.mark.parametrize("n", [1000, 1003])
def test_each_pass_draws_every_row_once_in_a_new_order(n: int) -> None:
    """Batches of 100 from 1000 (or 1003) rows: a pass is 10 batches of distinct rows (the 3
    left over are skipped), then a new pass in a new order."""
    source = numbered_source(n)
    passes = [[row for batch in drawn(source, 10, 100) for row in batch] for _ in range(3)]
    for rows in passes:
        assert len(set(rows)) == 1000 and min(rows) >= 0 and max(rows) < n
    if n == 1000:
        assert sorted(passes[0]) == list(range(1000))
    assert passes[0] != passes[1] != passes[2]
    assert source.state_dict() == {"epoch": 2, "position": 1000}
    assert drawn(numbered_source(n), 30, 100) == [p[i : i + 100] for p in passes for i in range(0, 1000, 100)]
    assert drawn(numbered_source(n, seed=1), 10, 100) != drawn(numbered_source(n), 10, 100)


def test_a_source_resumes_in_the_order_it_left_off() -> None:
    """The state (epoch, position) restores the order exactly, across the end of a pass."""
    whole = drawn(numbered_source(1000), 25, 64)
    first = numbered_source(1000)
    drawn(first, 13, 64)
    state = first.state_dict()
    resumed = numbered_source(1000)
    resumed.load_state_dict(state)
    assert drawn(resumed, 12, 64) == whole[13:]


def test_ranks_share_each_global_batch() -> None:
    """Two ranks together draw exactly the global batch of one process, halves in order."""
    single = drawn(numbered_source(500), 12, 64)
    ranks = [drawn(numbered_source(500, rank=r, world=2), 12, 64) for r in (0, 1)]
    assert [a + b for a, b in zip(*ranks, strict=True)] == single
    assert all(len(a) == 32 for a in ranks[0])


def test_a_source_on_disk_draws_the_rows_in_memory_draw(tmp_path) -> None:
    """A part of a split file, on disk and in memory: the same rows, batch for batch."""
    table = torch.arange(1500, dtype=torch.float64)[:, None].repeat(1, 2)
    np.save(tmp_path / "t.npy", table.numpy())
    rows, _ = tables.open_rows(tmp_path / "t.npy")
    part = shuffle.split(1500, (0.8, 0.2), seed=4)[0]
    on_disk = numbered_source(len(part), rows=tables.select_rows(rows, part))
    in_memory = numbered_source(len(part), rows=tables.select_rows(table, part))
    assert drawn(on_disk, 25, 100) == drawn(in_memory, 25, 100)


def test_tensorboard_gets_the_curves(tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = flowfit.fit(
        small_flow(), datasets.moons(1000, seed=0), steps=30, val_every=10, tensorboard_dir=tmp_path, progress=False
    )
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    validation = [(e.step, e.value) for e in events.Scalars("validation/nll")]
    assert [s for s, _ in validation] == [10, 20, 30]
    assert [v for _, v in validation] == pytest.approx([v for _, v in result.val_curve], rel=1e-6)
    assert len(events.Scalars("train/nll")) == len(events.Scalars("train/lr")) == 3


def test_a_checkpoint_with_nan_is_never_written(tmp_path) -> None:
    from flowfit.train import Checkpointer, Trainer, TrainOptions

    flow = small_flow()
    checkpointer = Checkpointer(tmp_path, every=1)
    trainer = Trainer(flow, datasets.moons(500, seed=0), TrainOptions(steps=5), checkpointer=checkpointer)
    checkpointer.save(trainer.parts())
    written = checkpointer.path.read_bytes()
    with torch.no_grad():
        next(flow.parameters())[0] = float("nan")
    with pytest.raises(flowfit.CheckpointError, match="non-finite"):
        checkpointer.save(trainer.parts())
    assert checkpointer.path.read_bytes() == written  # the good one is kept


def test_array_likes_are_data_and_only_a_tuple_is_a_pair() -> None:
    """A sampler returning numpy crashed (AttributeError); a list of rows was taken for a pair."""
    torch.manual_seed(0)
    rows = datasets.moons(1000, seed=0).tolist()
    result = flowfit.fit(small_flow(), rows, steps=20, progress=False)  # 1000 rows, not (x, context)
    assert math.isfinite(result.best_val_nll)
    result = flowfit.fit(small_flow(), lambda n: datasets.moons(n).numpy(), steps=20, progress=False)
    assert math.isfinite(result.best_val_nll)
    conditional = flowfit.RealNVP(2, layers=2, hidden=(8,), context_dim=1)
    x, label = datasets.labelled_moons(500, seed=0)
    flowfit.fit(conditional, (x.numpy(), label.numpy()), steps=5, progress=False)
    with pytest.raises(InputError, match="must be a pair"):
        flowfit.fit(conditional, [x.numpy(), label.numpy()], steps=5, progress=False)


def test_skipped_steps_are_counted_logged_and_warned_about(tmp_path) -> None:
    """Heavy-tailed data must not be silently trimmed by the spike guard."""
    calls = 0

    def sampler(n: int) -> torch.Tensor:
        nonlocal calls
        calls += 1
        batch = datasets.moons(n)
        if calls > 2 + 60 and calls % 20 == 0:  # a wild batch every 20 steps: 5% of them
            batch[:, 0] += 1e4
        return batch

    torch.manual_seed(0)
    log = tmp_path / "log.csv"
    with pytest.warns(flowfit.FlowfitWarning, match=r"steps \(\d\.\d%\) were skipped as loss spikes"):
        result = flowfit.fit(small_flow(), sampler, steps=200, val_every=50, lr=3e-3, log_path=log, progress=False)
    assert len(result.skipped) == 7 and result.rollbacks == []
    logged = [int(line.rsplit(",", 1)[1]) for line in log.read_text().splitlines()[1:]]
    assert sum(logged) == 7


def test_the_global_random_state_is_left_alone() -> None:
    flow = small_flow()
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    flowfit.fit(flow, lambda n: datasets.moons(n), steps=3, progress=False)
    assert torch.equal(torch.rand(3), expected)


def test_a_sampler_must_return_what_it_was_asked_for() -> None:
    with pytest.raises(InputError, match="asked for 10000 samples and returned 7"):
        flowfit.fit(small_flow(), lambda n: torch.randn(7, 2), steps=3, progress=False)


def test_options_come_one_way_or_the_other() -> None:
    from flowfit.options import TrainOptions

    with pytest.raises(TypeError, match="not both"):
        flowfit.fit(small_flow(), datasets.moons(100), TrainOptions(steps=5), steps=7, progress=False)
    assert TrainOptions(steps=np.int64(5)).steps == 5 and type(TrainOptions(steps=np.int64(5)).steps) is int


def test_a_checkpoint_of_another_model_is_refused(tmp_path) -> None:
    torch.manual_seed(0)
    flowfit.fit(small_flow(), datasets.moons(300, seed=0), steps=4, checkpoint_dir=tmp_path, checkpoint_every=2,
                progress=False)  # fmt: skip
    other = flowfit.RealNVP(2, layers=3, hidden=(16,))
    with pytest.raises(flowfit.CheckpointError, match="does not fit this run"):
        flowfit.fit(other, datasets.moons(300, seed=0), steps=4, checkpoint_dir=tmp_path, resume=True, progress=False)


def _spline_flow() -> flowfit.Flow:
    torch.manual_seed(0)
    return flowfit.NSF(2, layers=2, bins=4, hidden=(8,)).double()


def _trained(compile: str, family: str = "nsf") -> tuple[flowfit.Flow, flowfit.train.FitResult]:
    torch.manual_seed(0)
    flow = _spline_flow() if family == "nsf" else flowfit.RealNVP(2, layers=2, hidden=(8,)).double()
    data = datasets.moons(512, seed=0).double()
    result = flowfit.fit(flow, data, steps=5, batch_size=64, val_every=5, seed=0, compile=compile, progress=False)
    return flow, result


@pytest.mark.parametrize("family", ["nsf", "realnvp"])
def test_a_compiled_training_step_gives_the_eager_log_densities(family: str) -> None:
    # float64, so that the only difference could be the code Inductor generates (both networks'
    # first layers take one column, and RealNVP's last gives two numbers: the products compiled
    # element-wise, flowfit.nets.Linear)
    eager, eager_result = _trained("off", family)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FlowfitWarning)  # it compiled: no fallback
        compiled, compiled_result = _trained("on", family)
    x = datasets.moons(200, seed=1).double()
    with torch.no_grad():
        torch.testing.assert_close(compiled.log_prob(x), eager.log_prob(x), rtol=0, atol=1e-10)
    losses = [value for _, value in compiled_result.train_curve]
    assert losses == pytest.approx([value for _, value in eager_result.train_curve], abs=1e-10)


def test_a_step_that_cannot_be_compiled_trains_eagerly_after_one_notice(monkeypatch) -> None:
    def no_compiler(module, **kwargs):
        def call(*args):
            raise RuntimeError("InductorError: CppCompileError: C++ compiler not found\ntraceback ...")

        return call

    monkeypatch.setattr(torch, "compile", no_compiler)
    with pytest.warns(FlowfitWarning, match=r"without torch.compile: it failed \(InductorError: CppCompileError"):
        fallen_back, _ = _trained("on")
    eager, _ = _trained("off")
    for a, b in zip(fallen_back.parameters(), eager.parameters(), strict=True):
        assert torch.equal(a, b)


def test_auto_compiles_long_runs_of_spline_flows_and_flow_matching_only() -> None:
    from flowfit.options import TrainOptions
    from flowfit.train import trainer
    from flowfit.train.trainer import COMPILE_ROWS

    def compiles(flow: flowfit.Flow, rows: int, **options) -> bool:
        return trainer.compiles(flow, TrainOptions(steps=rows // 500, batch_size=500, **options))

    assert compiles(_spline_flow(), COMPILE_ROWS)
    assert not compiles(_spline_flow(), COMPILE_ROWS - 500)  # a short run would not repay ~20 s
    assert not compiles(_spline_flow(), COMPILE_ROWS, compile="off")
    assert not compiles(small_flow(), COMPILE_ROWS)  # RealNVP: matrix products dominate its step
    assert compiles(small_flow(), 500, compile="on")
    assert compiles(flowfit.CNF(2), COMPILE_ROWS, objective="fm")  # the field's step, no ODE solve
    assert not compiles(flowfit.CNF(2), COMPILE_ROWS - 500, objective="fm")
    assert not compiles(flowfit.CNF(2), COMPILE_ROWS)  # maximum likelihood: an ODE solve per step
    assert not compiles(_spline_flow(), COMPILE_ROWS, objective="fm")  # NSF has no flow-matching loss


def test_mixed_precision_is_chosen_for_the_families_and_objectives_it_speeds_up(monkeypatch) -> None:
    from flowfit.options import TrainOptions
    from flowfit.train import trainer

    def mixes(flow: flowfit.Flow, **options) -> bool:
        return trainer.mixes_precision(flow, TrainOptions(**options))

    monkeypatch.setattr(trainer, "native_bfloat16", lambda device: True)
    assert mixes(small_flow())  # RealNVP: its step is mostly products
    assert not mixes(small_flow(), mixed_precision="off")
    assert not mixes(_spline_flow().float())  # NSF: no faster
    assert mixes(_spline_flow().float(), mixed_precision="on")
    assert mixes(flowfit.CNF(2), objective="fm") and not mixes(flowfit.CNF(2))  # not through the ODE
    assert not mixes(small_flow().double())  # asked for float64: kept
    with pytest.raises(InputError, match="mixed precision trains float32 flows; this one is float64"):
        mixes(small_flow().double(), mixed_precision="on")
    monkeypatch.setattr(trainer, "native_bfloat16", lambda device: False)  # bfloat16 would be slower
    assert not mixes(small_flow()) and mixes(small_flow(), mixed_precision="on")


def test_mixed_precision_trains_in_bfloat16_and_validates_and_keeps_float32() -> None:
    data, val = datasets.moons(2000, seed=0), datasets.moons(1000, seed=1)
    results = {}
    for precision in ("off", "on"):
        torch.manual_seed(0)
        flow = small_flow()
        seen: set[tuple[bool, torch.dtype]] = set()
        first = next(m for m in flow.modules() if isinstance(m, torch.nn.Linear))
        first.register_forward_hook(lambda m, args, out, seen=seen: seen.add((torch.is_grad_enabled(), out.dtype)))
        flowfit.fit(flow, data, steps=300, lr=5e-3, val_data=val, mixed_precision=precision, seed=0, progress=False)
        training = torch.bfloat16 if precision == "on" else torch.float32
        assert seen == {(True, training), (False, torch.float32)}  # validation in full precision
        assert all(p.dtype == torch.float32 for p in flow.state_dict().values() if p.is_floating_point())
        results[precision] = nll(flow, val)[0]
    assert abs(results["on"] - results["off"]) < 0.05, results
