"""Triton's trace files, read as capture samples.

With `--trace-config level=TIMESTAMPS --trace-config level=TENSORS` Triton traces one request in
every `rate` and writes finished traces as one JSON array, `<file>.<index>`; a python-backend model
ScaleML exports writes the same form itself. Three kinds of entry matter here, all keyed by the
trace's `id`:

    {"id":1,"model_name":"churn","model_version":1,"request_id":"r-7"}
    {"id":1,"timestamps":[{"name":"HTTP_RECV_START","ns":32604533203021}]}
    {"id":1,"activity":"TENSOR_QUEUE_INPUT","tensor":{"name":"INPUT__0","data":"0.5,1.25","shape":"1,2","dtype":"FP32"}}

`TENSOR_QUEUE_INPUT` holds a request's inputs as Triton received them, `TENSOR_BACKEND_OUTPUT` the
outputs of its response; timestamps are Triton's monotonic clock in nanoseconds, and a sample's
time is its REQUEST_START. A trace with a `parent_id` is a composing model's part of another
request (an ensemble step) and is not a sample.

Triton prints tensor data as text, which is where this reader is careful:

- numbers as C++ streams print them: integers exactly, FP32 and FP64 to 6 significant digits;
- INT8 and UINT8 elements as raw bytes (characters), and BYTES elements as raw bytes between
  `\\"` and `\\"`, neither escaped, so a file may not be valid JSON;
- FP16 and BF16 not at all (empty data): such a tensor is left out of its sample and counted.

So entries are matched by their exact form rather than parsed as JSON, raw data is cut out by the
lengths the shape implies, and an entry that cannot be read costs its own trace, never the file.

A request's id and its BYTES elements are the client's, and Triton writes them unescaped: an id
holding `"},{"id":...` can write entries of its own, whole traces even. So a trace whose entries
do not look as Triton writes them is dropped: its entries are one run (Triton writes a trace
whole), with one model entry, one REQUEST_START and one tensor of each name and activity; a second
run of an id drops it with every trace that began inside its run, and text between entries that
is none, or an id longer than MAX_RAW_ID_BYTES, drops the traces around it, so a client can forge
no sample. Reading is linear in the file's size, whatever its text: where a tensor's data ends
is looked up among the places where one can end, found in one pass.
"""

from __future__ import annotations

import bisect
import math
import re
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from scaleml_workloads.capture.files import BYTES, DATATYPES, Array, Sample, Tensor

INPUT_ACTIVITY: Final = b"TENSOR_QUEUE_INPUT"
OUTPUT_ACTIVITY: Final = b"TENSOR_BACKEND_OUTPUT"
# Datatypes Triton's traces carry no data of.
UNTRACED: Final = frozenset({"FP16", "BF16"})
MAX_ID_CHARS: Final = 64
MAX_NAME_CHARS: Final = 128
# The longest request id a trace is read with: the model entry's match scans no further for its end.
MAX_RAW_ID_BYTES: Final = 1024
_ENTRY_END: Final = rb"(?=,\{|\]\Z)"
_MODEL: Final = re.compile(
    rb'\{"id":(\d+),"model_name":"([^"\\]*)","model_version":(-?\d+)'
    rb'(?:,"request_id":"(.{0,%d}?)")?(?:,"parent_id":(\d+))?\}' % MAX_RAW_ID_BYTES + _ENTRY_END,
    re.DOTALL,
)
# Each timestamp exactly as Triton writes it: a looser form (any text up to a bracket) would let an
# entry forged in a BYTES element swallow the rest of the real trace it was cut into.
_TIMESTAMP: Final = rb'\{"name":"[A-Z0-9_]+","ns":\d+\}'
_TIMESTAMPS: Final = re.compile(
    rb'\{"id":(\d+),"timestamps":\[((?:%s(?:,%s)*)?)\]\}' % (_TIMESTAMP, _TIMESTAMP) + _ENTRY_END
)
# A tensor entry is its head, its raw data, and its tail, which is where the data ends: the first
# place after the head where a tail matches (found by `_Tails`).
_TENSOR_HEAD: Final = re.compile(rb'\{"id":(\d+),"activity":"([A-Z_]+)","tensor":\{"name":"([^"\\]*)","data":"')
_TENSOR_TAIL: Final = re.compile(rb'","shape":"(\d+(?:,\d+)*|)","dtype":"([A-Z0-9]+)"\}\}' + _ENTRY_END)
_ID: Final = re.compile(rb'\{"id":(\d+),')
# When Triton took the request: a gRPC trace's first timestamp (GRPC_WAITREAD_START) is when the
# server began waiting for a call, which may be long before the client made it.
_REQUEST_START: Final = re.compile(rb'\{"name":"REQUEST_START","ns":(\d+)\}')
_NEXT_ENTRY: Final = b',{"id":'
_OUT_OF_RUN: Final = "entries apart from the rest of its trace (a request id that writes entries)"
_BYTES_QUOTE: Final = b'\\"'
_BYTES_SEPARATOR: Final = b'\\",\\"'


class UnreadableError(ValueError):
    """Tensor data that does not match its datatype and shape."""


@dataclass
class _Trace:
    model: str = ""
    version: str = ""
    request_id: str = ""
    child: bool = False
    started_ns: int | None = None
    inputs: list[Tensor] = field(default_factory=list)
    outputs: list[Tensor] = field(default_factory=list)
    untraced: list[str] = field(default_factory=list)
    broken: str = ""


@dataclass
class TraceFile:
    """What one trace file held: its samples, in the order Triton finished them, and what could not become one.

    `unreadable` maps each trace that was dropped to why; `untraced` counts tensors left out of
    their samples by datatype (FP16 and BF16, which Triton does not print). A file that is not
    `complete` was cut off (by a Triton that died while writing it).
    """

    complete: bool = True
    samples: list[Sample] = field(default_factory=list)
    unreadable: dict[int, str] = field(default_factory=dict)
    untraced: Counter[str] = field(default_factory=Counter)


def read_trace_file(
    data: bytes, wall_time: Callable[[int], float], request_ids: bool = False, read_at: float = math.inf
) -> TraceFile:
    """The samples of one trace file's `data`.

    `wall_time` turns Triton's monotonic nanoseconds into epoch seconds. Request ids are kept (at
    most MAX_ID_CHARS) only with `request_ids`. A file cut off before its closing bracket yields the
    traces whose entries are all there. A trace that says it started after `read_at` (the epoch
    second the file was read) was not written by Triton: a sample dated in the future would stay the
    newest, and keep the drift monitor from seeing a new window, until that time came.
    """
    traces: dict[int, _Trace] = {}
    body = data.strip()
    if body.startswith(b"["):
        body = body[1:]
    complete = body.endswith(b"]")
    if not complete:
        # Whatever follows the last whole entry was cut off: end the text where that entry ends.
        cut = body.rfind(_NEXT_ENTRY)
        body = body[:cut] + b"]" if cut >= 0 else b"]"
    reading = _Reading(traces, _Tails(body))
    position = 0
    end = len(body) - 1
    while position < end:
        position = reading.entry(body, position)
        if body[position : position + 1] == b",":
            position += 1
    reading.drop_nested()
    if not complete and traces:
        # Traces are written whole, one after the other: only the last can be missing entries.
        traces[next(reversed(traces))].broken = "cut off at the end of an incomplete file"
    result = TraceFile(complete)
    for trace_id, trace in traces.items():
        if trace.child:
            continue
        if trace.broken:
            result.unreadable[trace_id] = trace.broken
            continue
        if trace.started_ns is None:
            result.unreadable[trace_id] = "no REQUEST_START timestamp: not traced at level TIMESTAMPS"
            continue
        result.untraced.update(trace.untraced)
        if trace.untraced and not (trace.inputs or trace.outputs):
            result.unreadable[trace_id] = (
                f"only {'/'.join(sorted(set(trace.untraced)))} tensors, not in Triton's traces"
            )
            continue
        if wall_time(trace.started_ns) > read_at:
            result.unreadable[trace_id] = "a REQUEST_START after the file was read"
            continue
        try:
            sample = Sample(
                timestamp=wall_time(trace.started_ns),
                model=trace.model[:MAX_NAME_CHARS],
                model_version=trace.version[:MAX_NAME_CHARS],
                request_id=trace.request_id[:MAX_ID_CHARS] if request_ids else "",
                inputs=tuple(trace.inputs),
                outputs=tuple(trace.outputs),
            )
        except ValueError as error:
            result.unreadable[trace_id] = str(error)
            continue
        result.samples.append(sample)
    return result


class _Tails:
    """Where tensor data can end in a file: the starts of every tensor entry's tail, in order, found in one pass."""

    def __init__(self, body: bytes) -> None:
        self._body = body
        self._starts = [match.start() for match in _TENSOR_TAIL.finditer(body)]

    def after(self, position: int) -> re.Match[bytes] | None:
        """The first tail at or after `position`."""
        index = bisect.bisect_left(self._starts, position)
        return _TENSOR_TAIL.match(self._body, self._starts[index]) if index < len(self._starts) else None


@dataclass
class _Reading:
    """The traces of a file as its entries are read, and the checks that each trace is as Triton writes it."""

    traces: dict[int, _Trace]
    tails: _Tails
    current: int | None = None
    # Traces whose run of entries ended (another trace's entry came): none may come again.
    ended: set[int] = field(default_factory=set)
    # Per trace, the (activity, name) of its tensors, and whether its REQUEST_START came.
    tensors: dict[int, set[tuple[bytes, bytes]]] = field(default_factory=dict)
    # Per trace, its place in the file; and the spans of places (from, to) inside a trace's text.
    order: dict[int, int] = field(default_factory=dict)
    nested: list[tuple[int, int]] = field(default_factory=list)

    def drop_nested(self) -> None:
        """Marks every trace inside another's text, in one pass however many spans overlap."""
        steps = [0] * (len(self.traces) + 1)
        for start, end in self.nested:
            steps[start] += 1
            steps[end] -= 1
        depth = 0
        for step, trace in zip(steps, self.traces.values(), strict=False):
            depth += step
            if depth:
                trace.broken = trace.broken or _OUT_OF_RUN

    def trace(self, trace_id: int) -> _Trace:
        """The trace an entry of `trace_id` adds to; an entry apart from its trace's run breaks that trace and
        every trace since (`drop_nested`)."""
        if trace_id not in self.traces:
            self.order[trace_id] = len(self.traces)
        trace = self.traces.setdefault(trace_id, _Trace())
        if trace_id != self.current:
            if trace_id in self.ended:
                # Every trace that began since this one did lies inside its text (a request id, or a
                # BYTES element, can write whole traces, and one more to end on): all are dropped.
                self.nested.append((self.order[trace_id], len(self.traces)))
            if self.current is not None:
                self.ended.add(self.current)
            self.current = trace_id
        return trace

    def entry(self, body: bytes, position: int) -> int:
        """Reads the entry at `position` into its trace; returns where the entry ends."""
        if head := _TENSOR_HEAD.match(body, position):
            tail = self.tails.after(head.end())
            if tail is not None:
                self._tensor(int(head[1]), head[2], head[3], body[head.end() : tail.start()], tail)
                return tail.end()
        elif match := _MODEL.match(body, position):
            trace = self.trace(int(match[1]))
            if trace.model or trace.version:
                trace.broken = "a second model entry (a request id that writes entries)"
            trace.model = match[2].decode(errors="replace")
            trace.version = match[3].decode()
            trace.request_id = (match[4] or b"").decode(errors="replace")
            trace.child = match[5] is not None and int(match[5]) != 0
            return match.end()
        elif match := _TIMESTAMPS.match(body, position):
            trace = self.trace(int(match[1]))
            if start := _REQUEST_START.search(match[2]):
                if trace.started_ns is not None:
                    trace.broken = "a second REQUEST_START (a request id that writes entries)"
                trace.started_ns = int(start[1])
            return match.end()
        # An entry of a form not known here, mangled, or text that is no entry: its trace is dropped
        # (the one it names, else the one it is among), and reading goes on at the next entry.
        if match := _ID.match(body, position):
            self.trace(int(match[1])).broken = "an entry that is not one Triton writes"
        elif self.current is not None:
            self.traces[self.current].broken = "text between its entries that is no entry"
        following = body.find(_NEXT_ENTRY, position + 1)
        return following if following >= 0 else len(body) - 1

    def _tensor(self, trace_id: int, activity: bytes, name: bytes, data: bytes, tail: re.Match[bytes]) -> None:
        trace = self.trace(trace_id)
        datatype = tail[2].decode()
        seen = self.tensors.setdefault(trace_id, set())
        if (activity, name) in seen:
            trace.broken = "a second tensor of one name (a request id that writes entries)"
        seen.add((activity, name))
        if datatype in UNTRACED:
            trace.untraced.append(datatype)
        elif activity in (INPUT_ACTIVITY, OUTPUT_ACTIVITY):
            tensors = trace.inputs if activity == INPUT_ACTIVITY else trace.outputs
            shape = tuple(int(dim) for dim in tail[1].split(b",")) if tail[1] else ()
            try:
                tensor = _tensor(name.decode(), datatype, data, shape)
            except (UnreadableError, UnicodeDecodeError) as error:
                trace.broken = trace.broken or f"tensor {name.decode(errors='replace')}: {error}"
            else:
                tensors.append(tensor)


def _tensor(name: str, datatype: str, data: bytes, shape: tuple[int, ...]) -> Tensor:
    count = math.prod(shape)
    if datatype not in DATATYPES:
        raise UnreadableError(f"datatype {datatype} is not captured")
    return Tensor(name, datatype, _values(datatype, data, count).reshape(shape))


def _values(datatype: str, data: bytes, count: int) -> Array:
    dtype = DATATYPES[datatype]
    if count == 0:
        if data:
            raise UnreadableError(f"data for an empty shape: {len(data)} bytes")
        return np.empty(0, dtype=dtype)
    if datatype in ("INT8", "UINT8"):
        # One raw byte per element, a comma after every one but the last.
        if len(data) != 2 * count - 1 or data[1::2].strip(b",") != b"":
            raise UnreadableError(f"{len(data)} bytes are not {count} {datatype} elements")
        return np.frombuffer(data[0::2], dtype=np.uint8).view(dtype).copy()
    if datatype == BYTES:
        if not (data.startswith(_BYTES_QUOTE) and data.endswith(_BYTES_QUOTE) and len(data) >= 2 * len(_BYTES_QUOTE)):
            raise UnreadableError("BYTES elements not between quotes")
        elements = data[len(_BYTES_QUOTE) : -len(_BYTES_QUOTE)].split(_BYTES_SEPARATOR)
        if len(elements) != count:
            raise UnreadableError(f"{len(elements)} BYTES elements for {count}")
        array = np.empty(count, dtype=np.object_)
        array[:] = elements
        return array
    # Parsed by NumPy straight from the text: a Python object per value would take ten times the memory.
    with warnings.catch_warnings():
        # NumPy warns, and stops, where the text is not a number.
        warnings.simplefilter("error", DeprecationWarning)
        try:
            values = np.fromstring(data, dtype=np.int8 if dtype.kind == "b" else dtype, sep=",")
        except (DeprecationWarning, ValueError) as error:
            raise UnreadableError(f"not {datatype} numbers: {error}") from None
    if values.size != count:
        raise UnreadableError(f"{values.size} values for {count} elements")
    if dtype.kind == "b":
        if not np.isin(values, (0, 1)).all():
            raise UnreadableError("BOOL values other than 0 and 1")
        return values.astype(np.bool_)
    return values
