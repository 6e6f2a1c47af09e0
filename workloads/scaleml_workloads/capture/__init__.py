"""Capture of live requests and responses: Triton traces a sample, a sidecar turns the traces into capture files.

`traces` reads Triton's trace files into samples, `converter` is the sidecar's loop (flushing
Triton's traces, converting them, bounding what waits, applying the retention), and the package
`files` defines the rotated files it writes and the drift monitor reads.
"""
