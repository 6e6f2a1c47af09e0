"""`scaleml demo`: the whole loop on this machine, from the demo's own YAML (package data, in manifests/).

`scenario` tells the story (apply, wait, shift, retrain), `traffic` sends the requests and scores
the answers against the true labels, `view` draws the live table and the summary.
"""

from scaleml_local.demo.scenario import MANIFESTS, DemoError, Result, Settings, dataset, main, run

__all__ = ["MANIFESTS", "DemoError", "Result", "Settings", "dataset", "main", "run"]
