"""The capture proxy: a sidecar in front of Triton that writes a sample of live requests and responses.

`proxy` forwards the KServe v2 protocol to the local Triton server untouched (`http_proxy`,
`grpc_proxy`, within `limits`), `kserve` decodes sampled inferences into tensors, `writer` writes
them from a background thread into the rotated files that the package `files` defines (and reads
back, for the drift monitor).
"""
