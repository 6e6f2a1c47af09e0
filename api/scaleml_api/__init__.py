"""ScaleML's API: what users write, what the operator hands to the pods, and the files the workloads share.

- `v1alpha1/<kind>.py`: one module per kind, with its spec, its status, its condition types and
  reasons, and the `Kind` that names it; the CRDs (`crdgen`) and the field reference (`reference`)
  are generated from them.
- `runtime.py`: the hand-off from the operator to a pod (paths, ports, exit codes, the run configs).
- `profile.py`: the reference profile of training data, written by training, read by the monitor.

Free of torch, kopf and the Kubernetes client: the operator and the workloads both import it.
"""
