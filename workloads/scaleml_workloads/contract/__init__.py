"""What the operator and the workloads agree on: the specs users write, free of torch and kopf.

The operator validates a spec with these models before it starts any pod, generates the CRDs from
them, and renders the spec into the pods; the workloads parse it with the same models.
"""
