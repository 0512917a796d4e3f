"""Reading the user's tables: every value as float64, every problem named by row and column."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flowfit import tables
from flowfit.errors import InputError
from flowfit.shuffle import split


def test_load_csv_with_and_without_header(tmp_path) -> None:
    with_header = tmp_path / "a.csv"
    with_header.write_text("area,price\n1.5,2\n3,4.25\n")
    values, names = tables.load_table(with_header)
    assert names == ["area", "price"]
    torch.testing.assert_close(values, torch.tensor([[1.5, 2.0], [3.0, 4.25]], dtype=torch.float64))
    plain = tmp_path / "b.csv"
    plain.write_text("1,2\n3,4\n")
    values, names = tables.load_table(plain)
    assert names == ["x0", "x1"] and values.shape == (2, 2)
    values, names = tables.load_table(with_header, columns=["price"])
    assert names == ["price"] and values[:, 0].tolist() == [2.0, 4.25]


def test_load_tsv_and_npy(tmp_path) -> None:
    tsv = tmp_path / "a.tsv"
    tsv.write_text("a\tb\n1\t2\n")
    assert tables.load_table(tsv)[1] == ["a", "b"]
    npy = tmp_path / "a.npy"
    np.save(npy, np.arange(6.0).reshape(3, 2))
    values, _ = tables.load_table(npy)
    assert values.shape == (3, 2) and values[2, 1] == 5


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty"),
        ("a,b\n", "no data rows"),
        ("a,b\n1,x\n", "'x' is not a number"),
        ("a,b\n1,2\n3\n", "line 3 has 1 fields"),
        ("a,b\n1,nan\n", r"line 2, column 'b' is missing \(NaN\); pass --missing drop"),
        ("a,b\n1,2\n,3\n", r"line 3, column 'a' is missing \(empty\)"),
        ("1,2\ninf,3\n", "NaN and inf"),
    ],
)
def test_bad_csv_files(tmp_path, content: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        tables.load_table(path)


def test_bad_npy_and_missing_column(tmp_path) -> None:
    path = tmp_path / "bad.npy"
    path.write_bytes(b"not an array")
    with pytest.raises(InputError, match=r"not a readable \.npy"):
        tables.load_table(path)
    good = tmp_path / "a.csv"
    good.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="no column named 'c'"):
        tables.load_table(good, columns=["c"])
    with pytest.raises(InputError, match="no such file"):
        tables.load_table(tmp_path / "missing.csv")


def test_load_npz_and_parquet(tmp_path) -> None:
    single = tmp_path / "one.npz"
    np.savez(single, np.arange(6.0).reshape(3, 2))
    assert tables.load_table(single)[0].shape == (3, 2)
    several = tmp_path / "two.npz"
    np.savez(several, data=np.ones((4, 3)), other=np.zeros(2))
    assert tables.load_table(several)[0].shape == (4, 3)
    ambiguous = tmp_path / "three.npz"
    np.savez(ambiguous, a=np.ones((4, 3)), b=np.zeros(2))
    with pytest.raises(InputError, match=r"holds arrays a, b; choose one as .*three\.npz:NAME"):
        tables.load_table(ambiguous)
    assert tables.load_table(f"{ambiguous}:a")[0].shape == (4, 3)
    with pytest.raises(InputError, match="no array named 'c'"):
        tables.load_table(f"{ambiguous}:c")
    import decimal

    import pandas as pd

    parquet = tmp_path / "table.parquet"
    prices = [decimal.Decimal("1.25"), decimal.Decimal("2.50"), decimal.Decimal("3.75")]
    pd.DataFrame({"area": [1.0, 2.0, 3.0], "price": prices, "rooms": [1, 2, 3]}).to_parquet(parquet)
    values, names = tables.load_table(parquet)
    assert names == ["area", "price", "rooms"] and values[:, 1].tolist() == [1.25, 2.5, 3.75]
    # a column of words or times was dropped without a word, and the model trained on the rest
    labelled = tmp_path / "labelled.parquet"
    pd.DataFrame({"area": [1.0, 2.0], "label": ["a", "b"]}).to_parquet(labelled)
    with pytest.raises(InputError, match=r"column 'label' holds .*string, not numbers"):
        tables.load_table(labelled)


def test_rows_on_disk_read_what_they_select(tmp_path) -> None:
    table = np.arange(40.0).reshape(10, 4)
    np.save(tmp_path / "t.npy", table)
    rows, names = tables.open_rows(tmp_path / "t.npy")
    assert names == ["x0", "x1", "x2", "x3"] and rows.shape == (10, 4)
    part = rows.subset(torch.tensor([7, 2, 5])).select([3, 1])
    # rows come back in the order asked for, whatever the order on disk
    expected = torch.tensor(table[[7, 2, 5]][:, [3, 1]], dtype=torch.float64)
    assert torch.equal(part.take(), expected)
    assert torch.equal(part.take(torch.tensor([2, 0])), expected[[2, 0]])
    low, high = part.ranges(chunk_rows=2)
    assert low.tolist() == [11.0, 9.0] and high.tolist() == [31.0, 29.0]


def resident_file_mb() -> float:
    """This process's resident pages that map files (``RssFile``), MB (Linux)."""
    for line in open("/proc/self/status").read().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1]) / 1024
    pytest.skip("needs Linux's /proc/self/status")


def test_a_pass_over_a_mapped_file_leaves_its_pages_unmapped(tmp_path, monkeypatch) -> None:
    """A pass over a 32 MB ``.npy`` (checking every row) and a read of a large sample leave
    its pages in the file cache, not in the process: without releasing them, the same pass
    leaves the whole file resident. Training batches (small reads) are left mapped."""
    np.save(tmp_path / "t.npy", np.random.default_rng(0).normal(size=(2_000_000, 2)))
    np.save(tmp_path / "small.npy", np.zeros((10_000, 2)))
    warm_up, _ = tables.open_rows(tmp_path / "small.npy")  # code that runs for the first time maps pages
    warm_up.ranges(), warm_up.take(torch.randperm(len(warm_up)))
    grown = {}
    for release in (True, False):
        if not release:
            monkeypatch.setattr(tables.MappedPages, "release", lambda self: None)
        rows, _ = tables.open_rows(tmp_path / "t.npy")
        before = resident_file_mb()
        rows.ranges()
        rows.take(torch.randperm(len(rows))[:100_000])
        grown[release] = resident_file_mb() - before
        del rows
    assert grown[False] > 25 and grown[True] < 5, grown


def test_a_part_of_a_shuffled_split_reads_as_its_row_numbers_do(tmp_path) -> None:
    """A :class:`~flowfit.shuffle.Segment` selects, lazily, the rows its items name: the same
    values as the listed row numbers, in the same order, in blocks front to back; and a part
    of a part too."""
    table = np.arange(2 * 1000.0).reshape(1000, 2)
    np.save(tmp_path / "t.npy", table)
    rows, _ = tables.open_rows(tmp_path / "t.npy")
    for part in split(1000, (0.7, 0.2, 0.1), seed=5):
        lazy, listed = rows.subset(part), rows.subset(part.items())
        assert lazy.shape == listed.shape == (len(part), 2)
        assert torch.equal(lazy.take(), listed.take())
        assert torch.equal(lazy.take(), torch.from_numpy(table[part.items()]))
        assert torch.equal(lazy.take(torch.tensor([3, 1])), listed.take(torch.tensor([3, 1])))
        blocks = list(lazy.blocks(chunk_rows=64))
        numbers = torch.cat([numbers for numbers, _ in blocks])
        assert torch.equal(numbers, part.items().sort().values)  # front to back, every row once
        assert torch.equal(torch.cat([values for _, values in blocks]), torch.from_numpy(table[numbers]))
        assert all(len(values) <= 64 for _, values in blocks)
        assert [v.tolist() for v in lazy.ranges(chunk_rows=64)] == [v.tolist() for v in listed.ranges()]
        inner = split(len(part), (0.5, 0.5), seed=1)[1]
        assert torch.equal(lazy.subset(inner).take(), listed.take(inner.items()))
        assert torch.equal(lazy.subset(inner).row_numbers(), part.items()[inner.items()])
    with pytest.raises(ValueError, match="selects from"):
        rows.subset(split(999, (0.5, 0.5), seed=0)[0])
    with pytest.raises(IndexError):
        rows.subset(part).take(torch.tensor([len(part)]))


def test_a_part_on_disk_reports_its_first_bad_row_in_the_file(tmp_path) -> None:
    table = np.zeros((300, 2))
    train, test = split(300, (0.9, 0.1), seed=0)
    bad = test.items().sort().values[:2]
    table[bad[1], 0], table[bad[0], 1] = np.inf, np.nan
    np.save(tmp_path / "t.npy", table)
    rows, _ = tables.open_rows(tmp_path / "t.npy")
    rows.subset(train).ranges()  # the bad rows are not in it
    with pytest.raises(InputError, match=rf"row {int(bad[0]) + 1}, column 1 is missing \(NaN\)"):
        rows.subset(test).ranges(chunk_rows=16)


def test_rows_on_disk_report_the_bad_row(tmp_path) -> None:
    table = np.zeros((50, 2))
    table[37, 1] = np.nan
    np.save(tmp_path / "t.npy", table)
    rows, _ = tables.open_rows(tmp_path / "t.npy")
    with pytest.raises(InputError, match=r"row 38, column 1 is missing \(NaN\); pass --missing drop"):
        rows.ranges(chunk_rows=8)
    (tmp_path / "t.csv").write_text("1,2\n")
    with pytest.raises(InputError, match=r"only \.npy"):
        tables.open_rows(tmp_path / "t.csv")


def test_values_are_read_as_float64_and_checked_against_the_model_dtype(tmp_path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("a,b\n1e300,1\n1e-300,2\n0.1,3\n")
    values, _ = tables.load_table(path)
    assert values.dtype == torch.float64 and values[0, 0].item() == 1e300 and values[1, 0].item() == 1e-300
    with pytest.raises(InputError, match=r"row 1, column 'a' is 1e\+300, beyond the largest float32"):
        tables.check_values(values, torch.float32, ["a", "b"], str(path))
    with pytest.raises(InputError, match=r"row 2, column 'a' is 1e-300, below the smallest normal float32"):
        tables.check_values(values[1:], torch.float32, ["a", "b"], str(path), first_row=1)
    tables.check_values(values[2:], torch.float32, ["a", "b"], str(path))
    tables.check_values(values, torch.float64, ["a", "b"], str(path))  # float64 holds them
    subnormal = torch.tensor([[1.0, 1e-310]], dtype=torch.float64)  # float64's own fast path too
    with pytest.raises(InputError, match=r"column 'b' is 1e-310, below the smallest normal float64"):
        tables.check_values(subnormal, torch.float64, ["a", "b"], "t")


def test_a_nonzero_number_that_reads_as_zero_is_refused(tmp_path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("a,b\n0,0.000\n-0e5,1\n2, 1e-400\n")
    with pytest.raises(InputError, match=r"line 4, column 'b': '1e-400' is too small for float64"):
        tables.load_table(path)
    path.write_text("a,b\n0,0.000\n-0e5,1\n")
    assert tables.load_table(path)[0].abs().sum().item() == 1.0


def test_npz_array_names_may_hold_colons(tmp_path) -> None:
    archive = tmp_path / "x.npz"
    np.savez(archive, **{"a:b": np.ones((3, 2)), "c": np.zeros((2, 2))})
    assert tables.split_spec(f"{archive}:a:b") == (archive, "a:b")
    assert tables.load_table(f"{archive}:a:b")[0].shape == (3, 2)


def test_columns_float32_cannot_resolve_are_refused() -> None:
    stamps = torch.tensor([[1.7e9], [1.7e9 + 5.0], [1.7e9 + 9.0]], dtype=torch.float64)
    low, high = stamps.min(0).values, stamps.max(0).values
    with pytest.raises(
        InputError, match=r"1700000000 \.\. 1700000009, which float32 rounds in steps of 128; subtract an offset"
    ):
        tables.check_resolution(low, high, torch.float32, ["time"], "t.csv")
    tables.check_resolution(low, high, torch.float64, ["time"], "t.csv")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a,a\n1,2\n", "names column 'a' twice"),
        ("a,,b\n1,2,3\n", "column 2 of the header has no name"),
    ],
)
def test_ambiguous_headers_are_refused(tmp_path, content: str, message: str) -> None:
    path = tmp_path / "t.csv"
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        tables.load_table(path)


def test_a_byte_order_mark_is_not_part_of_the_first_name(tmp_path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes("area,price\n1,2\n3,4\n".encode("utf-8-sig"))
    assert tables.load_table(path)[1] == ["area", "price"]


def test_complex_arrays_are_refused(tmp_path) -> None:
    np.save(tmp_path / "c.npy", np.ones((5, 2), dtype=np.complex128))
    with pytest.raises(InputError, match="complex"):
        tables.load_table(tmp_path / "c.npy")


def test_columns_are_picked_once_each() -> None:
    assert tables.pick(["a", "b", "c"], ["c", "a"], "t") == [2, 0]
    with pytest.raises(InputError, match="asked for twice"):
        tables.pick(["a", "b"], ["a", "a"], "t")
    with pytest.raises(InputError, match="no column named 'z'"):
        tables.pick(["a", "b"], ["z"], "t")


def test_a_table_says_whether_it_had_a_header(tmp_path) -> None:
    (tmp_path / "h.csv").write_text("a,b\n1,2\n")
    (tmp_path / "n.csv").write_text("1,2\n")
    assert tables.open_table(tmp_path / "h.csv").has_header
    assert not tables.open_table(tmp_path / "n.csv").has_header
    np.save(tmp_path / "a.npy", np.ones((2, 2)))
    assert not tables.open_table(tmp_path / "a.npy").has_header


def test_rows_on_disk_check_every_value_against_the_dtype(tmp_path) -> None:
    table = np.ones((40, 2))
    table[33, 1] = 1e200
    np.save(tmp_path / "t.npy", table)
    rows, _ = tables.open_rows(tmp_path / "t.npy")
    rows.check(torch.float64, ["a", "b"])
    with pytest.raises(InputError, match="row 34, column 'b' is 1e\\+200"):
        rows.subset(torch.arange(40).flip(0)).check(torch.float32, ["a", "b"])


@pytest.mark.parametrize("cell", ["1_000", "\uff11.5", "\u0660.\u0665"])
def test_cells_that_python_reads_as_numbers_but_are_not_plain_numbers(tmp_path, cell: str) -> None:
    path = tmp_path / "t.csv"
    path.write_text(f"a,b\n1,2\n3,{cell}\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"line 3, column 'b': .* is not a plain number"):
        tables.load_table(path)


def test_times_are_not_numbers(tmp_path) -> None:
    np.save(tmp_path / "t.npy", np.arange(4, dtype="m8[s]").reshape(2, 2))
    with pytest.raises(InputError, match="holds times"):
        tables.load_table(tmp_path / "t.npy")


def test_columns_not_asked_for_may_hold_anything(tmp_path) -> None:
    path = tmp_path / "t.csv"
    path.write_text('id,name,a,b\n7,"Zürich, old town",1.5,2\nx-9,1_000,3,4\n', encoding="utf-8")
    values, names = tables.load_table(path, columns=["b", "a"])
    assert names == ["b", "a"] and values.tolist() == [[2.0, 1.5], [4.0, 3.0]]
    with pytest.raises(InputError, match=r"line 3, column 'id': 'x-9' is not a number"):
        tables.load_table(path)
    table = tables.open_table(path)
    assert table.kinds() == {"id": "text", "name": "text", "a": "number", "b": "number"}
    assert table.kinds(["a"]) == {"a": "number"}


def test_labels_and_missing_cells_are_kept_when_asked(tmp_path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("cut,a\n Ideal ,1\n,2\nNaN,nan\nFair,\n")
    table = tables.open_table(path)
    assert table.kinds() == {"cut": "text", "a": "number"}  # missing cells say nothing of a column's kind
    block = table.read_all(["a"], ["cut"], keep_missing=True)
    assert block.labels[:, 0].tolist() == ["Ideal", None, None, "Fair"]
    assert block.values[0, 0] == 1.0 and np.isnan(block.values[2:, 0]).all()
    assert block.missing.tolist() == [False, True, True, True]
    with pytest.raises(InputError, match=r"line 3, column 'cut' is missing; pass --missing drop"):
        table.read_all(["a"], ["cut"])
    blocks = list(table.blocks(["a"], ["cut"], rows=3, keep_missing=True))
    assert [(b.start, len(b)) for b in blocks] == [(0, 3), (3, 1)] and blocks[1].where(0) == "line 5"
    path.write_text("a,b\n1,inf\n")
    with pytest.raises(InputError, match=r"line 2, column 'b' is inf \(NaN and inf are not data\)"):
        tables.open_table(path).read_all(["b"], keep_missing=True)  # inf is never a missing value


def test_what_other_programs_write_for_a_missing_number_is_missing(tmp_path) -> None:
    """R writes NA, spreadsheets #N/A, SQL NULL: in a column of numbers each is a missing cell
    (an error naming it unless the user's policy keeps it), not text that turns the column into
    labels; in a column of labels they stay labels."""
    path = tmp_path / "t.csv"
    path.write_text("a,b,cut\n1,2,NA\nNA,3,x\n n/a ,4,y\n#N/A,NULL,z\nnone,<NA>,x\n5,-nan,NA\n")
    table = tables.open_table(path)
    assert table.kinds() == {"a": "number", "b": "number", "cut": "text"}
    block = table.read_all(["a", "b"], ["cut"], keep_missing=True)
    assert block.missing.tolist() == [False, True, True, True, True, True]
    assert np.isnan(block.values[1:5, 0]).all() and block.values[[0, 5], 0].tolist() == [1.0, 5.0]
    assert np.isnan(block.values[[3, 4, 5], 1]).all()
    assert block.labels[:, 0].tolist() == ["NA", "x", "y", "z", "x", "NA"]  # a label, maybe Namibia
    with pytest.raises(InputError, match=r"line 3, column 'a' is missing \('NA'\); pass --missing drop"):
        table.read_all(["a"])
    with pytest.raises(InputError, match=r"line 5, column 'b' is missing \('NULL'\)"):
        table.read_all(["b"])
    path.write_text("a\n1\nNAN\n2\n")
    with pytest.raises(InputError, match=r"line 3, column 'a' is missing \(NaN\)"):
        tables.open_table(path).read_all(["a"])
    path.write_text("a,b\n1,2\n ? ,3\n")  # the UCI repository's mark
    assert np.isnan(tables.open_table(path).read_all(["a", "b"], keep_missing=True).values[1, 0])
    with pytest.raises(InputError, match=r"line 3, column 'a' is missing \('\?'\)"):
        tables.open_table(path).read_all(["a"])


def test_a_stray_cell_in_a_column_of_numbers_is_named_not_a_missing_mark() -> None:
    labels = np.array(["1", "NA", "2", None, "12 kg", "3"], dtype=object)
    with pytest.raises(InputError, match=r"column 'w' holds numbers but row 5 holds '12 kg'; fix that cell, or pass"):
        tables.refuse_numbers_as_labels(labels, "w", "t.csv", "pass")
    tables.refuse_numbers_as_labels(np.array(["a", "NA", "b", "1"], dtype=object), "w", "t.csv", "pass")  # labels
    only_numbers = np.array(["1.5", "NA", "2", None], dtype=object)  # a Parquet column of strings, say
    with pytest.raises(InputError, match=r"column 'w' holds numbers stored as text; convert it to numbers, or pass"):
        tables.refuse_numbers_as_labels(only_numbers, "w", "t.parquet", "pass")


def test_parquet_text_and_null_cells(tmp_path) -> None:
    import pandas as pd

    path = tmp_path / "t.parquet"
    frame = pd.DataFrame(
        {
            "when": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03"]),
            "cut": pd.Categorical(["Good", None, "Fair"]),
            "a": [1.0, None, 3.0],
            "n": pd.array([1, None, 3], dtype="Int64"),
        }
    )
    frame.to_parquet(path)
    table = tables.open_table(path)
    assert table.kinds(["cut", "a", "n"]) == {"cut": "text", "a": "number", "n": "number"}
    with pytest.raises(InputError, match=r"column 'when' holds timestamp.*neither numbers nor text"):
        table.kinds()
    block = table.read_all(["a", "n"], ["cut"], keep_missing=True)
    assert block.labels[:, 0].tolist() == ["Good", None, "Fair"] and block.missing.tolist() == [False, True, False]
    assert block.values[2].tolist() == [3.0, 3.0]
    with pytest.raises(InputError, match=r"row 2, column 'a' is missing \(NaN\)"):
        table.read_all(["a"])


def test_training_batches_keep_their_pages_and_passes_release_theirs(tmp_path, monkeypatch) -> None:
    """Releasing after every batch would fault its pages in again at the next: a batch of
    thousands of rows keeps them; a pass releases after each block, a large sample once."""
    np.save(tmp_path / "t.npy", np.zeros((200_000, 2)))
    rows, _ = tables.open_rows(tmp_path / "t.npy")
    released = []
    monkeypatch.setattr(tables.MappedPages, "release", lambda self: released.append(1))
    rows.take(torch.randperm(len(rows))[:8192])
    assert released == []
    rows.take(torch.randperm(len(rows))[: tables.RELEASE_ROWS])
    assert len(released) == 1
    list(rows.blocks(chunk_rows=50_000))
    assert len(released) == 1 + 4
