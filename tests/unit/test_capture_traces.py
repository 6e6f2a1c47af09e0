"""Triton's trace files read into capture samples, and the converter's bounds, on files written as Triton writes them.

The forms of the entries are Triton 2.51's (checked against a real server in
tests/workloads/test_capture.py); here they are written by hand to reach what a real server
rarely does: a file cut off, a mangled entry, raw bytes that look like the file's own syntax.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY

from scaleml_workloads.capture.converter import TraceConverter, TraceDirectory
from scaleml_workloads.capture.files import CaptureFiles, read_captures
from scaleml_workloads.capture.traces import MAX_ID_CHARS, read_trace_file

MIB = 1024 * 1024


def _wall(ns: int) -> float:
    return ns / 1e9


def trace(
    trace_id: int,
    inputs: dict[str, tuple[str, str, str]],
    outputs: dict[str, tuple[str, str, str]] | None = None,
    request_id: str | None = None,
    parent_id: int | None = None,
    start_ns: int = 1_000_000_000,
    model_name: str = "churn",
) -> str:
    """The entries of one trace, as Triton writes them: tensors are name -> (data, shape, datatype)."""
    model = f'{{"id":{trace_id},"model_name":"{model_name}","model_version":3'
    if request_id is not None:
        model += f',"request_id":"{request_id}"'
    if parent_id is not None:
        model += f',"parent_id":{parent_id}'
    entries = [
        f'{{"id":{trace_id},"timestamps":[{{"name":"GRPC_WAITREAD_START","ns":{start_ns - 10**9}}}]}}',
        model + "}",
        f'{{"id":{trace_id},"timestamps":[{{"name":"REQUEST_START","ns":{start_ns}}}]}}',
    ]
    for activity, tensors in (("TENSOR_QUEUE_INPUT", inputs), ("TENSOR_BACKEND_OUTPUT", outputs or {})):
        for name, (data, shape, datatype) in tensors.items():
            entries.append(
                f'{{"id":{trace_id},"activity":"{activity}","tensor":'
                f'{{"name":"{name}","data":"{data}","shape":"{shape}","dtype":"{datatype}"}}}}'
            )
    entries.append(f'{{"id":{trace_id},"timestamps":[{{"name":"REQUEST_END","ns":{start_ns + 5000}}}]}}')
    return ",".join(entries)


def trace_file(*traces: str) -> bytes:
    return ("[" + ",".join(traces) + "]").encode()


def churn(trace_id: int, **options: object) -> str:
    inputs = {"INPUT__0": ("0.5,-1.25,3e+10,nan,-inf,0.1,0.2,0.3,0.4,0.5", "2,5", "FP32")}
    return trace(trace_id, inputs, {"OUTPUT__0": ("0.9,0.1,0.2,0.8", "2,2", "FP32")}, **options)  # type: ignore[arg-type]


def test_a_trace_becomes_a_sample_of_its_inputs_outputs_model_and_request_time() -> None:
    read = read_trace_file(trace_file(churn(1, start_ns=7_500_000_000)), _wall)

    [sample] = read.samples
    assert (sample.model, sample.model_version, sample.request_id, sample.rows) == ("churn", "3", "", 2)
    assert sample.timestamp == 7.5, "the time Triton took the request, not when it began to wait for one"
    np.testing.assert_array_equal(
        sample.array("INPUT__0"), np.array([[0.5, -1.25, 3e10, np.nan, -np.inf], [0.1, 0.2, 0.3, 0.4, 0.5]], np.float32)
    )
    assert sample.array("INPUT__0").dtype == np.float32
    assert sample.array("OUTPUT__0").tolist() == np.array([[0.9, 0.1], [0.2, 0.8]], np.float32).tolist()
    assert read.unreadable == {}


def test_request_ids_are_kept_only_when_asked_and_cut_to_their_bound() -> None:
    data = trace_file(churn(1, request_id="r" * 100))
    assert read_trace_file(data, _wall).samples[0].request_id == ""
    assert read_trace_file(data, _wall, request_ids=True).samples[0].request_id == "r" * MAX_ID_CHARS


def test_raw_bytes_that_look_like_the_file_s_syntax_are_read_by_their_lengths() -> None:
    # INT8 -5 and 44 (a comma), UINT8 34 (a quote) and 93 (a bracket); BYTES with quotes, a comma and a newline.
    raw_int8 = bytes([0xFB]) + b"," + b","
    raw_uint8 = b'"' + b"," + b"]"
    strings = b'\\"a,"b\n\\",\\"}]\\"'
    head = '{"id":1,"model_name":"m","model_version":1},{"id":1,"timestamps":[{"name":"REQUEST_START","ns":5}]},'
    tensors = [
        b'{"id":1,"activity":"TENSOR_QUEUE_INPUT","tensor":{"name":"A","data":"' + raw_int8 + b'","shape":"1,2",'
        b'"dtype":"INT8"}}',
        b'{"id":1,"activity":"TENSOR_QUEUE_INPUT","tensor":{"name":"B","data":"' + raw_uint8 + b'","shape":"1,2",'
        b'"dtype":"UINT8"}}',
        b'{"id":1,"activity":"TENSOR_QUEUE_INPUT","tensor":{"name":"S","data":"' + strings + b'","shape":"1,2",'
        b'"dtype":"BYTES"}}',
    ]
    data = b"[" + head.encode() + b",".join(tensors) + b"]"

    [sample] = read_trace_file(data, _wall).samples

    assert sample.array("A").tolist() == [[-5, 44]]
    assert sample.array("B").tolist() == [[34, 93]]
    assert sample.array("S").tolist() == [[b'a,"b\n', b"}]"]]


def test_every_numeric_datatype_keeps_its_type_and_range() -> None:
    inputs = {
        "I64": ("-9223372036854775808,7", "1,2", "INT64"),
        "U64": ("18446744073709551615,0", "1,2", "UINT64"),
        "B": ("1,0", "1,2", "BOOL"),
        "D": ("1e-300,-0", "1,2", "FP64"),
    }
    [sample] = read_trace_file(trace_file(trace(1, inputs)), _wall).samples

    assert sample.array("I64").tolist() == [[-(2**63), 7]]
    assert sample.array("U64").tolist() == [[2**64 - 1, 0]]
    assert sample.array("B").tolist() == [[True, False]]
    assert sample.array("D").dtype == np.float64


def test_fp16_tensors_carry_no_data_and_are_left_out_and_counted() -> None:
    inputs = {"X": ("1,2", "1,2", "INT32"), "H": ("", "1,2", "FP16")}
    read = read_trace_file(trace_file(trace(1, inputs), trace(2, {"H": ("", "1,2", "FP16")})), _wall)

    [sample] = read.samples
    assert [tensor.name for tensor in sample.inputs] == ["X"]
    assert read.untraced == {"FP16": 2}
    assert read.unreadable == {2: "only FP16 tensors, not in Triton's traces"}


BROKEN = {
    "too few values": ("1,2,3", "1,2", "INT32"),
    "not a number": ("1,x", "1,2", "INT32"),
    "a BOOL of 2": ("1,2", "1,2", "BOOL"),
    "an INT8 byte short": ("a", "1,2", "INT8"),
    "BYTES elements short": ('\\"a\\"', "1,2", "BYTES"),
    "BYTES without quotes": ("a,b", "1,2", "BYTES"),
    "an unknown datatype": ("1,2", "1,2", "INT4"),
}


@pytest.mark.parametrize("tensor", BROKEN.values(), ids=BROKEN)
def test_a_tensor_that_does_not_match_its_shape_costs_its_own_trace_only(tensor: tuple[str, str, str]) -> None:
    read = read_trace_file(trace_file(churn(1), trace(2, {"X": tensor}), churn(3)), _wall)

    assert [sample.rows for sample in read.samples] == [2, 2]
    assert list(read.unreadable) == [2]
    assert read.unreadable[2].startswith("tensor X: ")


def test_an_entry_of_an_unknown_form_costs_its_own_trace_and_reading_goes_on() -> None:
    mangled = '{"id":2,"activity":"TENSOR_QUEUE_INPUT","tensor":{"name":"X","shape":"1,2"}}'
    read = read_trace_file(trace_file(churn(1), mangled, churn(3)), _wall)

    assert len(read.samples) == 2
    assert read.unreadable == {2: "an entry that is not one Triton writes"}


def test_a_file_cut_off_by_a_dying_triton_yields_its_whole_traces() -> None:
    whole = trace_file(churn(1), churn(2))
    cut = whole[: whole.rindex(b'"activity":"TENSOR_BACKEND_OUTPUT"') + 10]

    read = read_trace_file(cut, _wall)

    assert len(read.samples) == 1, "the second trace lost its output: it is not a sample"
    assert read.unreadable == {2: "cut off at the end of an incomplete file"}
    assert read_trace_file(b"[", _wall).samples == []


def test_the_steps_of_an_ensemble_are_not_samples() -> None:
    read = read_trace_file(trace_file(churn(1), churn(2, parent_id=1)), _wall)

    assert len(read.samples) == 1
    assert read.unreadable == {}


def _forged_trace(trace_id: int) -> str:
    forged = trace(trace_id, {"INPUT__0": ("7,7,7", "1,3", "FP32")}, {"OUTPUT__0": ("1,0", "1,2", "FP32")})
    return forged.replace("1000000000", "10000000000000000000")


def _forging(trace_id: int, ends_on: int | None = None) -> str:
    """A request id that writes a whole trace of its own (inputs and outputs chosen, a time far ahead) and
    opens a model entry of that trace (or of `ends_on`, a trace of its own to end on) for the real end
    of the id to close: the id is written raw."""
    opened = trace_id if ends_on is None else ends_on
    return 'x"},' + _forged_trace(trace_id) + f',{{"id":{opened},"model_name":"churn","model_version":3,"request_id":"y'


@pytest.mark.parametrize("forged_id", [4242, 2], ids=["another-id", "its-own-id"])
def test_a_request_id_that_writes_entries_forges_no_sample(forged_id: int) -> None:
    read = read_trace_file(trace_file(churn(1), churn(2, request_id=_forging(forged_id)), churn(3)), _wall)

    assert [sample.rows for sample in read.samples] == [2, 2], "only the honest traces"
    assert 2 in read.unreadable
    assert {sample.timestamp for sample in read.samples} == {1.0}


# A BYTES element is written raw between \\" and \\": one can end its own tensor, write a whole trace,
# and end on an entry that Triton's own end of the element completes: a tensor of a trace of its own,
# or (before timestamps were read by their exact form) timestamps that run on to the end of the real trace.
_TENSOR_END = '\\"","shape":"1,1","dtype":"BYTES"}},'
_BYTES_FORGERIES = {
    "ends-on-a-trace-of-its-own": _TENSOR_END
    + _forged_trace(4242)
    + ',{"id":4243,"activity":"TENSOR_QUEUE_INPUT","tensor":{"name":"Z","data":"\\"',
    "ends-on-open-timestamps": _TENSOR_END + _forged_trace(4242) + ',{"id":4242,"timestamps":[',
}


@pytest.mark.parametrize("element", _BYTES_FORGERIES.values(), ids=_BYTES_FORGERIES.keys())
def test_a_bytes_element_that_writes_a_trace_forges_no_sample(element: str) -> None:
    text = {"TEXT": ('\\"' + element + '\\"', "1,1", "BYTES")}
    read = read_trace_file(trace_file(churn(1), trace(2, text, {"OUTPUT__0": ("1", "1,1", "FP32")}), churn(3)), _wall)

    assert [sample.rows for sample in read.samples] == [2, 2], "only the honest traces"
    assert {sample.timestamp for sample in read.samples} == {1.0}


def test_a_request_id_that_writes_a_trace_and_one_to_end_on_forges_no_sample() -> None:
    read = read_trace_file(trace_file(churn(1), churn(2, request_id=_forging(4242, ends_on=4243)), churn(3)), _wall)

    assert [sample.rows for sample in read.samples] == [2, 2], "only the honest traces"
    assert {4242, 2} <= set(read.unreadable)


def test_a_trace_dated_after_the_file_was_read_is_no_sample() -> None:
    """Whatever else forged it: a sample in the future would be the newest for ever, and the monitor
    would never see a new window."""
    read = read_trace_file(trace_file(churn(1), churn(2, start_ns=9_000_000_000)), _wall, read_at=5.0)

    assert [sample.timestamp for sample in read.samples] == [1.0]
    assert read.unreadable == {2: "a REQUEST_START after the file was read"}


def test_a_second_request_start_or_tensor_of_one_name_drops_the_trace() -> None:
    twice = churn(2) + ',{"id":2,"timestamps":[{"name":"REQUEST_START","ns":5}]}'
    again = (
        churn(3)
        + ',{"id":3,"activity":"TENSOR_QUEUE_INPUT","tensor":{"name":"INPUT__0","data":"1","shape":"1","dtype":"FP32"}}'
    )
    read = read_trace_file(trace_file(churn(1), twice, again, churn(4)), _wall)

    assert len(read.samples) == 2
    assert sorted(read.unreadable) == [2, 3]


def test_a_request_id_of_many_entry_beginnings_is_read_in_one_pass() -> None:
    # Each ',{"id":' is a place to start reading again; scanned to the end of the file from each, as the
    # tensor entry's pattern once was, 8 MiB of them take hours (the suite's timeout fails the test).
    hostile = 'x"}' + ',{"id":7,"activity":"X","tensor":{"name":"n","data":"' * 150_000
    read = read_trace_file(trace_file(churn(1), churn(2, request_id=hostile), churn(3)), _wall)

    assert [sample.rows for sample in read.samples] == [2, 2]
    assert 2 in read.unreadable


# --- the converter's bounds -------------------------------------------------------------------


def _count(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def directories(tmp_path: Path) -> tuple[Path, Path]:
    traces, captures = tmp_path / "traces", tmp_path / "captures"
    traces.mkdir()
    captures.mkdir()
    return traces, captures


def _converter(
    traces: Path,
    captures: Path,
    max_file: int = 64 * MIB,
    max_backlog: int = 256 * MIB,
    skip: frozenset[str] = frozenset(),
) -> TraceConverter:
    files = CaptureFiles(captures, "parquet", rows_per_file=10_000, seconds_per_file=3600)
    return TraceConverter(TraceDirectory(traces, "trace.json"), files, max_file, max_backlog, skip_models=skip)


def _settled(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    past = time.time() - 60
    os.utime(path, (past, past))


def test_trace_files_are_read_in_triton_s_order_and_deleted(directories: tuple[Path, Path]) -> None:
    traces, captures = directories
    for index in (10, 9, 2):
        _settled(traces / f"trace.json.{index}", trace_file(churn(index, start_ns=index * 10**9)))
    (traces / "trace.json.11").write_bytes(trace_file(churn(11)))  # written a moment ago: maybe still being written
    (traces / "unrelated").write_text("")
    converter = _converter(traces, captures)

    converter.convert()
    converter.files.flush()

    # Triton's monotonic nanoseconds, on the wall clock: 2 s, 9 s and 10 s after the clock's start.
    timestamps = read_captures(captures, newest_rows=10)["timestamp"]
    np.testing.assert_allclose(np.diff(timestamps), [0, 7, 0, 1, 0], atol=1e-3)
    assert abs(timestamps[0] - (time.time() - time.monotonic() + 2)) < 1
    assert sorted(os.listdir(traces)) == ["trace.json.11", "unrelated"]


def test_requests_for_explanations_are_not_captured(directories: tuple[Path, Path]) -> None:
    traces, captures = directories
    inputs = {"INPUT__0": ("0.5,-1.25,3,0,1", "1,5", "FP32")}
    explained = trace(2, inputs, {"ATTRIBUTIONS": ("0.1,0.2,0.3,0,0", "1,5", "FP32")}, model_name="churn-explain")
    _settled(traces / "trace.json.0", trace_file(churn(1), explained))
    converter = _converter(traces, captures, skip=frozenset({"churn-explain"}))

    converter.convert()
    converter.files.flush()

    assert list(read_captures(captures, newest_rows=10)["model"]) == ["churn", "churn"]


def test_oversized_files_and_a_backlog_are_deleted_unread_and_counted(directories: tuple[Path, Path]) -> None:
    traces, captures = directories
    one = trace_file(churn(1))
    big = trace_file(churn(1, request_id="x" * 4096))
    for index in range(6):
        _settled(traces / f"trace.json.{index}", big if index == 5 else one)
    before = {
        reason: _count("scaleml_capture_trace_files_dropped_total", reason=reason)
        for reason in ("backlog", "too_large")
    }
    # Room for the three newest small files: the two oldest go unread.
    converter = _converter(traces, captures, max_file=4096, max_backlog=3 * len(one) + len(big))

    converter.convert()
    converter.files.flush()

    after = {reason: _count("scaleml_capture_trace_files_dropped_total", reason=reason) for reason in before}
    assert {reason: after[reason] - before[reason] for reason in before} == {"backlog": 2, "too_large": 1}
    assert len(read_captures(captures, newest_rows=100)["timestamp"]) == 3 * 2
    assert os.listdir(traces) == []


def test_at_stop_the_converter_reads_every_file_left_and_writes_its_open_file(directories: tuple[Path, Path]) -> None:
    traces, captures = directories
    # Written as Triton exits: the file without an index, just now.
    (traces / "trace.json").write_bytes(trace_file(churn(1), churn(2)))
    stop = threading.Event()
    stop.set()

    _converter(traces, captures).run(stop)

    assert len(read_captures(captures, newest_rows=100)["timestamp"]) == 4
    assert os.listdir(traces) == []


def test_what_a_python_backend_model_lost_is_counted_once(directories: tuple[Path, Path]) -> None:
    traces, captures = directories
    converter = _converter(traces, captures)
    reasons = ("queue_full", "trace_write_error")
    before = {reason: _count("scaleml_capture_samples_dropped_total", reason=reason) for reason in reasons}

    (traces / ".model-7.json").write_text('{"queue_full": 3, "write_error": 2}')
    converter.convert()
    converter.convert()
    (traces / ".model-7.json").write_text('{"queue_full": 5, "write_error": 2}')
    (traces / ".model-8.json").write_text("not json")
    converter.convert()

    after = {reason: _count("scaleml_capture_samples_dropped_total", reason=reason) for reason in reasons}
    assert {reason: after[reason] - before[reason] for reason in reasons} == {"queue_full": 5, "trace_write_error": 2}
