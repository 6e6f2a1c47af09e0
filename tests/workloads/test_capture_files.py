"""Capture files are user data: private to the pods' group, deleted by the retention, read safely whatever they hold."""

from __future__ import annotations

import io
import json
import logging
import math
import os
import shutil
import stat
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest

from scaleml_api import runtime
from scaleml_api.v1alpha1.modeldeployment import CaptureFormat, ModelDeploymentSpec
from scaleml_operator.builders import modeldeployment as build
from scaleml_operator.builders.meta import Owner
from scaleml_workloads.capture.__main__ import parser
from scaleml_workloads.capture.files import (
    DATATYPES,
    DIRECTORY_MODE,
    FILE_MODE,
    METADATA_KEY,
    MODEL,
    MODEL_VERSION,
    CaptureFiles,
    Sample,
    Tensor,
    TensorSpec,
    capture_files,
    file_name,
    read_captures,
    read_layout,
    read_window,
    this_instance,
)
from scaleml_workloads.capture.retention import Retention, sweep
from tests.support.manifests import example, merged
from tests.support.polling import wait_for
from tests.workloads.runs import MODEL_NAME
from tests.workloads.serving import feature_batch
from tests.workloads.test_capture import converter

pytestmark = pytest.mark.workloads

HOUR = 3600.0

MIB = 1024 * 1024


@pytest.fixture
def umask() -> Iterator[None]:
    """The strictest umask a container may run with: files would come out 0600 without an explicit mode."""
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.parametrize("file_format", ["parquet", "npz"])
def test_capture_files_are_readable_by_the_group_only_whatever_the_umask(
    tmp_path: Path, umask: None, file_format: str
) -> None:
    files = CaptureFiles(tmp_path, file_format, rows_per_file=1, seconds_per_file=60)  # type: ignore[arg-type]

    [flushed] = files.add(churn_sample(1))

    assert flushed.path is not None
    assert stat.S_IMODE(flushed.path.stat().st_mode) == FILE_MODE == 0o640


def _write(directory: Path, first_row: float, instance: str, sequence: int, size: int) -> Path:
    path = directory / file_name(first_row, instance, sequence, "parquet")
    path.write_bytes(b"\0" * size)
    return path


def test_the_sweep_deletes_files_past_the_age_then_the_oldest_past_the_size(tmp_path: Path) -> None:
    now = 1_700_000_000.0
    expired = _write(tmp_path, now - 30 * HOUR, "pod-a", 1, 100)
    old = _write(tmp_path, now - 20 * HOUR, "pod-b", 1, 400)
    middle = _write(tmp_path, now - 10 * HOUR, "pod-a", 2, 400)
    new = _write(tmp_path, now - 1 * HOUR, "pod-b", 2, 400)
    unrelated = tmp_path / "notes.txt"
    unrelated.write_text("not a capture file")

    swept = sweep(tmp_path, Retention(max_age_seconds=24 * HOUR, max_bytes=1000), now=now)

    assert (swept.by_age, swept.by_size, swept.kept_bytes, swept.errors) == (1, 1, 800, [])
    assert [path.exists() for path in (expired, old, middle, new, unrelated)] == [False, False, True, True, True]


def test_half_written_files_of_dead_writers_go_once_they_are_old(tmp_path: Path) -> None:
    now = time.time()
    stale = tmp_path / f".{file_name(now - 3 * HOUR, 'gone-pod', 1, 'npz')}"
    writing = tmp_path / f".{file_name(now - 3 * HOUR, 'live-pod', 1, 'npz')}"
    for path in (stale, writing):
        path.write_bytes(b"partial")
    os.utime(stale, (now - 2 * HOUR, now - 2 * HOUR))

    sweep(tmp_path, Retention(max_age_seconds=60.0, max_bytes=10**9), now=now)

    assert not stale.exists()
    assert writing.exists(), "a hidden file written to a moment ago may still be being written"


def test_the_converter_applies_the_retention_when_it_starts(tmp_path: Path) -> None:
    traces, directory = tmp_path / "traces", tmp_path / "captures"
    traces.mkdir()
    directory.mkdir()
    now = time.time()
    expired = _write(directory, now - 2 * HOUR, "old-pod", 1, 10)
    oldest = _write(directory, now - 50 * 60, "old-pod", 2, 2048)
    newest = _write(directory, now - 40 * 60, "old-pod", 3, 2048)
    with converter(traces, directory, tmp_path, "--max-age=1h", "--max-bytes=3Ki") as running:
        deleted = {
            reason: running.metric("scaleml_capture_files_deleted_total", reason=reason)
            for reason in ("max_age", "max_bytes")
        }
        assert running.stop() == 0

    assert deleted == {"max_age": 1.0, "max_bytes": 1.0}
    assert [path.name for path in capture_files(directory)] == [newest.name]
    assert [expired.exists(), oldest.exists()] == [False, False]


@pytest.mark.parametrize(("option", "message"), [("--max-age=30s", "at least 1m"), ("--max-bytes=1.5Gi", "whole")])
def test_retention_options_are_checked_as_the_api_checks_them(
    capsys: pytest.CaptureFixture[str], option: str, message: str
) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args([option])

    assert message in capsys.readouterr().err


# Reading: nothing in a file fails a window, and a window is bounded in bytes.


def _sample(timestamp: float, rows: int = 4, width: int = 5, version: str = "1", model: str = "churn") -> Sample:
    inputs = (Tensor("INPUT__0", "FP32", np.full((rows, width), timestamp, np.float32)),)
    outputs = (Tensor("OUTPUT__0", "FP32", np.zeros((rows, 2), np.float32)),)
    return Sample(timestamp, model, version, "", inputs, outputs)


def _complete_file(directory: Path, timestamp: float, file_format: str = "parquet", rows: int = 4) -> Path:
    files = CaptureFiles(directory, file_format, rows_per_file=10**6, seconds_per_file=60)  # type: ignore[arg-type]
    files.add(_sample(timestamp, rows))
    [flushed] = files.flush()
    assert flushed.path is not None
    return flushed.path


def _npz_declaring(path: Path, shape: tuple[int, ...]) -> None:
    """An npz file whose INPUT__0 header declares `shape` of float32 and holds a few bytes of data."""
    metadata = {"version": 1, "tensors": [{"name": "INPUT__0", "role": "input", "datatype": "FP32", "shape": [5]}]}
    arrays = {
        "timestamp": np.zeros(1),
        "model": np.array(["churn"]),
        "model_version": np.array(["1"]),
        "request_id": np.array([""]),
        METADATA_KEY: np.array(json.dumps(metadata)),
    }
    with zipfile.ZipFile(path, "w") as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.save(buffer, array)
            archive.writestr(f"{name}.npy", buffer.getvalue())
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})  # type: ignore[no-untyped-call]
        archive.writestr("INPUT__0.npy", header.getvalue() + b"\0" * 64)


def _parquet_with_a_long_model_name(path: Path, rows: int) -> None:
    """A parquet capture file whose `model` column repeats one 1 MiB string on every row (dictionary encoded)."""
    metadata = {"version": 1, "tensors": [{"name": "INPUT__0", "role": "input", "datatype": "FP32", "shape": [1]}]}
    long_name = pa.DictionaryArray.from_arrays(pa.array(np.zeros(rows, np.int32)), pa.array(["m" * (1 << 20)]))
    table = pa.table(
        {
            "timestamp": pa.array(np.arange(rows, dtype=np.float64)),
            "model": long_name,
            "model_version": pa.array(["1"] * rows),
            "request_id": pa.array([""] * rows),
            "INPUT__0": pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(rows, np.float32)), 1),
        }
    ).replace_schema_metadata({METADATA_KEY: json.dumps(metadata)})
    pq.write_table(table, path)


def _garbage(directory: Path, kind: str) -> Path:
    """A file named as a capture file of time 200 (between the two valid ones), holding `kind` of garbage."""
    suffix = "npz" if "npz" in kind else "parquet"
    path = directory / file_name(200.0, "mangled", 1, suffix)  # type: ignore[arg-type]
    valid = _complete_file(directory / "valid", 200.0, suffix).read_bytes()
    if kind.startswith("truncated"):
        path.write_bytes(valid[: len(valid) // 2])
    elif kind == "random bytes":
        path.write_bytes(os.urandom(4096))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "parquet of other columns":
        pq.write_table(pa.table({"x": [1, 2]}), path)
    elif kind == "npz of pickled objects":
        with path.open("wb") as sink:
            np.savez(sink, timestamp=np.array([object()]), **{METADATA_KEY: np.array("{}")})
    elif kind == "npz with a wrong layout":
        with zipfile.ZipFile(path, "w") as archive, zipfile.ZipFile(io.BytesIO(valid)) as source:
            for member in source.namelist():
                data = source.read(member)
                archive.writestr(member, data[:-8] if member == "INPUT__0.npy" else data)
    return path


GARBAGE = [
    "truncated parquet",
    "truncated npz",
    "random bytes",
    "empty",
    "parquet of other columns",
    "npz of pickled objects",
    "npz with a wrong layout",
]


@pytest.mark.parametrize("kind", GARBAGE)
def test_a_file_that_is_not_a_capture_file_is_skipped_and_named(tmp_path: Path, kind: str) -> None:
    (tmp_path / "valid").mkdir()
    _complete_file(tmp_path, 100.0)
    _complete_file(tmp_path, 300.0)
    bad = _garbage(tmp_path, kind)

    window = read_window(tmp_path, newest_rows=100)

    assert window.rows == 8
    assert np.unique(window.columns["INPUT__0"]).tolist() == [100.0, 300.0]
    assert [(skip.path, skip.reason) for skip in window.skipped] == [(bad, "unreadable")]


def test_files_that_would_inflate_past_the_window_are_skipped_before_their_data_is_read(tmp_path: Path) -> None:
    _complete_file(tmp_path, 100.0)
    # 10**12 float32 declared in a file of a few hundred bytes: read, it would ask for 4 TB.
    _npz_declaring(tmp_path / file_name(200.0, "bomb", 1, "npz"), (10**12 // 5, 5))
    _parquet_with_a_long_model_name(tmp_path / file_name(300.0, "bomb", 2, "parquet"), rows=2000)

    window = read_window(tmp_path, newest_rows=100, max_bytes=64 * 1024 * 1024)

    assert window.rows == 4
    assert sorted(skip.reason for skip in window.skipped) == ["too_large", "too_large"]


def _stored_as(path: Path, column: str, stored: npt.DTypeLike, rows: int, width: int) -> None:
    """A capture file whose metadata declares INPUT__0 FP64 of `width` values, with `column` stored as `stored`."""
    metadata = {"version": 1, "tensors": [{"name": "INPUT__0", "role": "input", "datatype": "FP64", "shape": [width]}]}
    arrays: dict[str, npt.NDArray[Any]] = {
        "timestamp": np.full(rows, 200.0),
        "INPUT__0": np.zeros((rows, width)),
    }
    arrays[column] = arrays[column].astype(stored)
    strings = {name: np.array([value] * rows) for name, value in [("model", "churn"), ("model_version", "1")]}
    strings["request_id"] = np.array([""] * rows)
    if path.suffix == ".npz":
        np.savez_compressed(path, **arrays, **strings, **{METADATA_KEY: np.array(json.dumps(metadata))})
        return
    tensor = pa.FixedSizeListArray.from_arrays(pa.array(arrays["INPUT__0"].reshape(-1)), width)
    table = pa.table({"timestamp": arrays["timestamp"], **strings, "INPUT__0": tensor})
    pq.write_table(table.replace_schema_metadata({METADATA_KEY: json.dumps(metadata)}), path)


@pytest.mark.parametrize("file_format", ["parquet", "npz"])
@pytest.mark.parametrize(
    ("column", "stored"), [("INPUT__0", np.bool_), ("INPUT__0", np.float32), ("timestamp", np.uint8)]
)
def test_a_column_stored_narrower_than_declared_is_skipped_before_it_is_widened(
    tmp_path: Path, file_format: str, column: str, stored: npt.DTypeLike
) -> None:
    # Counted as stored (a byte a bool), converted to the declared FP64 it would take eight times the budget.
    rows, width, budget = 64, 1024, 256 * 1024
    _complete_file(tmp_path, 100.0)
    narrow = tmp_path / file_name(200.0, "narrow", 1, file_format)  # type: ignore[arg-type]
    _stored_as(narrow, column, stored, rows, width)

    window = read_window(tmp_path, newest_rows=1000, max_bytes=budget)

    assert [(skip.path, skip.reason) for skip in window.skipped] == [(narrow, "unreadable")]
    assert f"{column} is stored as " in window.skipped[0].detail
    assert "not as its declared FP64" in window.skipped[0].detail
    assert window.rows == 4
    assert window.nbytes <= budget


def test_an_npz_file_larger_than_what_is_left_is_skipped_before_it_is_opened(tmp_path: Path) -> None:
    _complete_file(tmp_path, 100.0, "npz")
    padded = tmp_path / file_name(200.0, "padded", 1, "npz")
    (tmp_path / "valid").mkdir()
    shutil.copyfile(_complete_file(tmp_path / "valid", 200.0, "npz"), padded)
    with zipfile.ZipFile(padded, "a") as archive:
        archive.writestr("padding", os.urandom(1 << 20))

    window = read_window(tmp_path, newest_rows=100, max_bytes=512 * 1024)

    assert [(skip.path, skip.reason) for skip in window.skipped] == [(padded, "too_large")]
    assert window.rows == 4


@pytest.mark.parametrize("file_format", ["parquet", "npz"])
def test_a_window_of_one_model_version_leaves_out_and_counts_the_rows_of_others(
    tmp_path: Path, file_format: CaptureFormat
) -> None:
    files = CaptureFiles(tmp_path, file_format, rows_per_file=10**6, seconds_per_file=60)
    files.add(_sample(100.0))
    files.flush()
    # A rollout: both versions answer in one file, then the new one alone, with another input width.
    files.add(_sample(200.0))
    files.add(_sample(201.0, version="2"))
    files.flush()
    files.add(_sample(300.0, width=7, version="2"))
    files.flush()

    window = read_window(tmp_path, newest_rows=100, strings=False, model_version="1")

    assert np.unique(window.columns["INPUT__0"]).tolist() == [100.0, 200.0]
    assert window.other_versions == 8
    assert window.skipped == ()
    assert MODEL_VERSION not in window.columns


def test_a_window_of_one_model_leaves_out_the_rows_of_others_before_comparing_layouts(tmp_path: Path) -> None:
    """The probe's case: fraud's newer rows, five columns wide, beside churn's eight at the claim's root."""
    root, own = tmp_path, tmp_path / "churn"
    for directory, sample in (
        (root, _sample(100.0, rows=3000, width=8)),
        (root, _sample(200.0, rows=100, width=5, model="fraud")),
        (own, _sample(300.0, rows=2000, width=8)),
    ):
        files = CaptureFiles(directory, "parquet", rows_per_file=10**6, seconds_per_file=60)
        files.add(sample)
        files.flush()

    window = read_window([own, root], newest_rows=5000, strings=False, model="churn", model_version="1")

    assert np.unique(window.columns["INPUT__0"]).tolist() == [100.0, 300.0]
    assert (window.rows, window.columns["INPUT__0"].shape[1:], window.other_models, window.skipped) == (
        5000,
        (8,),
        100,
        (),
    )
    assert MODEL not in window.columns
    # Alone, churn's directory holds churn's rows only.
    assert read_window(own, newest_rows=5000, model="churn").rows == 2000


def test_a_writer_makes_its_directory_for_the_group_whatever_the_umask(tmp_path: Path, umask: None) -> None:
    files = CaptureFiles(tmp_path / "churn", "parquet", rows_per_file=1, seconds_per_file=60)

    [flushed] = files.add(churn_sample(1))

    assert flushed.path is not None
    assert flushed.path.parent == tmp_path / "churn"
    assert stat.S_IMODE((tmp_path / "churn").stat().st_mode) == DIRECTORY_MODE == 0o750


def _rendered_converter(name: str, max_age: str, claim: Path) -> tuple[Path, list[str]]:
    """The directory and options of the capture converter the operator renders for the ModelDeployment `name`, its
    claim mounted at `claim`; without --traces and --metrics-port, which the test's `converter` sets."""
    spec = ModelDeploymentSpec.model_validate(
        merged(example("ModelDeployment"), {"spec": {"capture": {"retention": {"maxAge": max_age}}}})["spec"]
    )
    owner = Owner("ModelDeployment", name, "ml", f"{name}-uid")
    pod = build.pod_template(owner, spec, build.ModelSource("models", name, 1), ("triton", "workloads"))["spec"]
    mounted = [
        option.replace(f"={runtime.CAPTURE_DIR}", f"={claim}", 1)
        for option in pod["initContainers"][1]["command"][3:]
        if not option.startswith(("--traces=", "--metrics-port="))
    ]
    directory = next(option.removeprefix("--directory=") for option in mounted if option.startswith("--directory="))
    return Path(directory), mounted


def test_the_retention_of_one_model_deployment_never_deletes_another_s_captures(tmp_path: Path) -> None:
    """churn keeps its captures 168h, fraud 5m, on one claim (the probe's case): fraud's converter runs."""
    claim, traces = tmp_path / "claim", tmp_path / "traces"
    traces.mkdir()
    churn, _ = _rendered_converter("churn", "168h", claim)
    fraud, options = _rendered_converter("fraud", "5m", claim)
    for directory in (churn, fraud):
        directory.mkdir(parents=True, exist_ok=True)
    now = time.time()
    churns = _write(churn, now - 600, "churn-triton-6d5f7b9c4-abc12", 1, 100)
    frauds = _write(fraud, now - 600, "fraud-triton-7c9d8f6b5-xyz34", 1, 100)
    # The layout before: every ModelDeployment's files at the root, which every converter of the claim sweeps, by
    # its own retention as before, until none is left.
    legacy_old = _write(claim, now - 600, "churn-triton-5b8c7d6f4-abc11", 1, 100)
    legacy_new = _write(claim, now - 60, "churn-triton-5b8c7d6f4-abc11", 2, 100)

    with converter(traces, fraud, tmp_path, *options) as running:
        wait_for(
            lambda: running.metric("scaleml_capture_files_deleted_total", reason="max_age") >= 2.0,
            timeout=30,
            message="fraud's first sweep",
        )
        assert running.stop() == 0

    assert [churns.exists(), legacy_new.exists()] == [True, True]
    assert [frauds.exists(), legacy_old.exists()] == [False, False]


def test_a_window_ends_before_the_file_that_would_take_it_past_its_bytes(tmp_path: Path) -> None:
    for n in range(5):
        _complete_file(tmp_path, float(n), rows=100)
    one_file = 100 * (5 + 2) * 4 + 100 * 8  # two float32 tensors and the timestamps

    window = read_window(tmp_path, newest_rows=1000, max_bytes=int(2.5 * one_file), strings=False)

    assert window.rows == 200
    assert window.bytes_limited
    assert window.nbytes <= 2.5 * one_file
    assert np.unique(window.columns["INPUT__0"]).tolist() == [3.0, 4.0]
    assert "model" not in window.columns


def churn_sample(rows: int, timestamp: float = 0.0) -> Sample:
    """An inference of the churn model as the converter captures it: five features in, two scores out."""
    inputs = (Tensor("INPUT__0", "FP32", feature_batch(rows)),)
    return Sample(
        timestamp, MODEL_NAME, "1", "", inputs, (Tensor("OUTPUT__0", "FP32", np.zeros((rows, 2), np.float32)),)
    )


def test_a_file_is_completed_once_it_holds_max_bytes_of_tensor_data(tmp_path: Path) -> None:
    sample = churn_sample(3)
    assert sample.nbytes == 3 * (5 + 2) * 4
    files = CaptureFiles(tmp_path, "npz", rows_per_file=1000, seconds_per_file=60, max_bytes=2 * sample.nbytes + 1)

    flushed = [outcome.rows for _ in range(5) for outcome in files.add(sample)] + [o.rows for o in files.flush()]

    assert flushed == [6, 6, 3]


def _text_sample(timestamp: float, lengths: list[int]) -> Sample:
    elements = np.array([b"x" * length for length in lengths], dtype=object).reshape(1, len(lengths))
    return Sample(timestamp, MODEL_NAME, "1", "", (Tensor("TEXT", "BYTES", elements),), ())


def test_an_npz_file_counts_its_text_at_the_width_of_the_longest_element(tmp_path: Path) -> None:
    """npz stores BYTES at one width: 4,000 elements and one of 256 KiB would take 1 GiB as it is written."""
    files = CaptureFiles(tmp_path, "npz", rows_per_file=1000, seconds_per_file=60, max_bytes=MIB)
    [refused] = files.add(_text_sample(1.0, [256 * 1024] + [1] * 3_999))
    assert (refused.samples, refused.path) == (1, None)
    assert "width of the longest" in str(refused.error)
    # Short texts fill a file as their lengths say; a long one that would widen them all starts the next.
    assert files.add(_text_sample(2.0, [100] * 1000)) == []
    [first] = files.add(_text_sample(3.0, [2000] * 10))
    assert first.path is not None
    assert first.samples == 1
    [second] = files.flush()
    assert second.samples == 1
    # Parquet stores each element at its own length: the same request is one small file.
    parquet = CaptureFiles(tmp_path / "parquet", "parquet", rows_per_file=1000, seconds_per_file=60, max_bytes=MIB)
    assert parquet.add(_text_sample(1.0, [256 * 1024] + [1] * 3_999)) == []


def test_files_are_written_again_once_the_volume_is_back(tmp_path: Path) -> None:
    volume = tmp_path / "not-yet-mounted"
    files = CaptureFiles(volume / "churn", "parquet", rows_per_file=2, seconds_per_file=60)

    [lost] = files.add(churn_sample(2))
    volume.mkdir()
    [written] = files.add(churn_sample(2))

    assert isinstance(lost.error, FileNotFoundError)
    assert (lost.samples, lost.rows, lost.path) == (1, 2, None)
    assert written.error is None
    # The writer makes its own directory on the volume, never the volume.
    assert capture_files(volume / "churn") == [written.path]


def _values(datatype: str, shape: tuple[int, ...], seed: int) -> npt.NDArray[Any]:
    rng = np.random.default_rng(seed)
    if datatype == "BYTES":
        return np.array(
            [f"v{value}".encode() for value in rng.integers(0, 99, size=math.prod(shape))], dtype=object
        ).reshape(shape)
    return (rng.normal(size=shape) * 50).astype(DATATYPES[datatype])


@pytest.mark.parametrize("file_format", ["parquet", "npz"])
def test_every_datatype_reads_back_as_written(tmp_path: Path, file_format: CaptureFormat) -> None:
    files = CaptureFiles(tmp_path, file_format, rows_per_file=1000, seconds_per_file=60)
    samples = []
    for n in range(3):
        inputs = tuple(Tensor(datatype, datatype, _values(datatype, (n + 1, 2, 3), n)) for datatype in DATATYPES)
        outputs = (Tensor("OUT", "FP32", _values("FP32", (n + 1, 2), n)),)
        samples.append(Sample(float(n), MODEL_NAME, "4", f"id-{n}", inputs, outputs))
        assert files.add(samples[-1]) == []
    [flushed] = files.flush()
    assert (flushed.samples, flushed.rows, flushed.error) == (3, 6, None)

    columns = read_captures(tmp_path, newest_rows=100)

    assert flushed.path is not None
    assert read_layout(flushed.path) == [
        *(TensorSpec(datatype, "input", datatype, (2, 3)) for datatype in sorted(DATATYPES)),
        TensorSpec("OUT", "output", "FP32", (2,)),
    ]
    assert columns["timestamp"].tolist() == [0.0, 1.0, 1.0, 2.0, 2.0, 2.0]
    assert columns["request_id"].tolist() == ["id-0", "id-1", "id-1", "id-2", "id-2", "id-2"]
    assert set(columns["model"].tolist()) == {MODEL_NAME}
    for name in [*DATATYPES, "OUT"]:
        expected = np.concatenate([sample.array(name) for sample in samples])
        assert columns[name].dtype == expected.dtype
        assert columns[name].shape == expected.shape
        assert columns[name].tolist() == expected.tolist()


def test_a_new_layout_starts_a_new_file_and_the_reader_keeps_to_the_newest(tmp_path: Path) -> None:
    files = CaptureFiles(tmp_path, "parquet", rows_per_file=1000, seconds_per_file=60)

    def sample(width: int, timestamp: float) -> Sample:
        return Sample(timestamp, MODEL_NAME, "1", "", (Tensor("X", "FP32", np.zeros((2, width), np.float32)),), ())

    assert files.add(sample(3, 1.0)) == []
    [first] = files.add(sample(4, 2.0))
    [second] = files.flush()

    assert first.rows == second.rows == 2
    assert read_captures(tmp_path, newest_rows=100)["X"].shape == (2, 4)


def test_the_reader_skips_corrupt_files_and_hidden_ones(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    files = CaptureFiles(tmp_path, "parquet", rows_per_file=2, seconds_per_file=60)
    for n in range(3):
        files.add(Sample(float(n), MODEL_NAME, "1", str(n), (Tensor("X", "INT64", np.full((2, 1), n)),), ()))
    (tmp_path / file_name(1.5, "other", 1, "parquet")).write_bytes(b"PAR1 truncated")
    (tmp_path / f".{file_name(9.0, 'other', 1, 'parquet')}").write_bytes(b"half written")

    with caplog.at_level(logging.WARNING):
        newest = read_captures(tmp_path, newest_rows=5)

    assert newest["X"].ravel().tolist() == [0, 1, 1, 2, 2]
    assert f"skipping capture file {tmp_path / file_name(1.5, 'other', 1, 'parquet')}" in caplog.text


def test_a_starting_writer_removes_only_its_pod_s_unfinished_files(tmp_path: Path) -> None:
    mine = tmp_path / f".{file_name(1.0, this_instance(), 7, 'npz')}"
    others = tmp_path / f".{file_name(1.0, 'another-pod', 7, 'npz')}"
    complete = tmp_path / file_name(1.0, this_instance(), 6, "npz")
    for path in (mine, others, complete):
        path.write_bytes(b"")

    CaptureFiles(tmp_path, "npz", 10, 60).remove_stale_temporaries()

    assert sorted(os.listdir(tmp_path)) == sorted([others.name, complete.name])


def test_files_are_named_after_the_pod(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("POD_NAME", "churn-7d9f8c-x2x4q")
    files = CaptureFiles(tmp_path, "npz", rows_per_file=1, seconds_per_file=60)

    [flushed] = files.add(churn_sample(1, timestamp=1_700_000_000.25))

    assert flushed.path == tmp_path / "captures-20231114T221320.250000Z-churn-7d9f8c-x2x4q-000001.npz"
