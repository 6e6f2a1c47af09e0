"""Serving with NVIDIA Triton: the model configuration, the model agent that keeps a pod's repository in
step with the exported versions, the Python-backend model, and a Triton server for local use."""
