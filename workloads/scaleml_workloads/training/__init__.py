"""The training workload: what runs in each worker pod of a TrainingJob (see `__main__`)."""
