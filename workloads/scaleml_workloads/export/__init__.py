"""Writing trained models into a Triton model repository: numbered versions, model cards, profiles.

`scaleml_workloads.export.version.export_version` is the entry point; `repository` holds the layout.
"""
