"""Capture files: what the capture converter writes and the drift monitor reads.

A captures directory (a ModelDeployment's own, `<claim>/<name>`, on the claim of its `spec.capture`,
which other ModelDeployments may share) holds complete files named

    captures-<UTC time of the first row>-<instance>-<sequence>.<parquet|npz>
    e.g. captures-20250101T120000.123456Z-churn-7d9f8c-x2x4q-000003.parquet

so that names sort by time; <instance> is the writer's pod ($POD_NAME, else the host name),
<sequence> counts the files of one writer process from 000001. A file is written under its name
with a leading dot, synced, and renamed into place once complete: readers ignore hidden files, and
a writer that starts removes the hidden files its pod left behind. Files are created with mode
0640 whatever the umask, and the directory, when the writer makes it, with 0750: captured requests
are user data, for the pods' group (the fsGroup of the serving and monitor pods) and nobody else.
`retention` deletes them again.

One row per row of a captured request's batch (the first dimension of its tensors), in the order
the requests were sampled:

    column           Parquet type                         meaning
    timestamp        double                               when Triton received the request, epoch seconds
    model            string                               the model that answered
    model_version    string                               its version
    request_id       string                               the request's `id`, empty unless the capture
                                                          keeps ids (spec.capture.requestIds)
    <tensor name>    fixed_size_list<T>[prod(shape)]      one column per input and per output tensor
                                                          (inputs first, each sorted by name), named after
                                                          it (INPUT__0, OUTPUT__0, ...): the row's values,
                                                          flattened in C order

T follows the KServe datatype: bool, int8...int64, uint8...uint64, halffloat (FP16), float (FP32),
double (FP64), binary (BYTES). The schema's key-value metadata `scaleml.capture` describes the
tensors as JSON, `shape` being the shape of one row:

    {"version": 1, "tensors": [{"name": "INPUT__0", "role": "input", "datatype": "FP32", "shape": [5]},
                               {"name": "OUTPUT__0", "role": "output", "datatype": "FP32", "shape": [2]}]}

NPZ files (compressed) hold the same columns as arrays of the same names: `timestamp` float64,
the three strings as unicode arrays, each tensor shaped (rows, *shape); BYTES tensors as
fixed-width byte strings (NumPy drops their trailing NUL bytes), and the metadata JSON as the 0-d
string array `scaleml.capture`.

All rows of a file share one layout (tensor names, datatypes, row shapes): the writer starts a new
file when the layout changes, when the file holds `rows_per_file` rows or `max_bytes` of tensor
data (a request's batch is never split, so one larger batch makes a larger file), or when its
first row is `seconds_per_file` old.

`read_captures` returns the newest rows of a directory as NumPy arrays by column name, and
`read_window` the same, of one directory or several, with what it skipped: it reads at most
`max_bytes` of columns, checked against each file's metadata before its data is read, skips (and
names) any file it cannot read, whatever it holds, and can keep only the rows of one model and
version.

This package is that format's API, its names imported from here; they live in `layout` (the
columns, datatypes and samples, and the metadata), `names` (file names, listing a directory),
`writing` (CaptureFiles: rotated files, written atomically), `reading` (one file, bounded) and
`window` (the newest rows of a directory).
"""

from scaleml_workloads.capture.files.layout import (
    BYTES,
    DATATYPES,
    METADATA_KEY,
    METADATA_VERSION,
    MODEL,
    MODEL_VERSION,
    REQUEST_ID,
    RESERVED_NAMES,
    TIMESTAMP,
    Array,
    Role,
    Sample,
    Tensor,
    TensorSpec,
)
from scaleml_workloads.capture.files.names import (
    INSTANCE_ENV,
    PREFIX,
    SUFFIXES,
    capture_files,
    file_name,
    first_row_time,
    this_instance,
)
from scaleml_workloads.capture.files.reading import TooLargeError, read_capture_file, read_layout
from scaleml_workloads.capture.files.window import CaptureWindow, Skipped, SkipReason, read_captures, read_window
from scaleml_workloads.capture.files.writing import (
    DEFAULT_MAX_FILE_BYTES,
    DIRECTORY_MODE,
    FILE_MODE,
    CaptureFiles,
    Flushed,
)

__all__ = [
    "BYTES",
    "DATATYPES",
    "DEFAULT_MAX_FILE_BYTES",
    "DIRECTORY_MODE",
    "FILE_MODE",
    "INSTANCE_ENV",
    "METADATA_KEY",
    "METADATA_VERSION",
    "MODEL",
    "MODEL_VERSION",
    "PREFIX",
    "REQUEST_ID",
    "RESERVED_NAMES",
    "SUFFIXES",
    "TIMESTAMP",
    "Array",
    "CaptureFiles",
    "CaptureWindow",
    "Flushed",
    "Role",
    "Sample",
    "SkipReason",
    "Skipped",
    "Tensor",
    "TensorSpec",
    "TooLargeError",
    "capture_files",
    "file_name",
    "first_row_time",
    "read_capture_file",
    "read_captures",
    "read_layout",
    "read_window",
    "this_instance",
]
