"""The drift monitor: tests windows of captured traffic against the training data, reports and serves the results."""
