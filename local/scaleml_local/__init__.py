"""Local mode: the TrainingJob, ModelDeployment and DriftMonitor YAML of a cluster, run as local processes.

The specs are validated with the API's own models and turned into run configs by the operator's
pure builders; the workloads run as they do in pods (torchrun on the CPU, the model agent with a
Triton server from the nvidia-pytriton wheel, the capture converter, the drift monitor), with volumes
as folders under a state directory. A supervisor process per state directory does what the
operator does on a cluster.
"""
