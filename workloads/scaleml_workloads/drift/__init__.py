"""Drift statistics: live windows of model inputs against the reference profile of the training data.

`statistics` holds the tests as pure functions over many features at once, `reference` what a
window is compared with, `detector` the detector the monitor builds once and checks every window
with. The detector reads windows with `window`, compares them with the reference side `prepared`
once, runs the tests the `registry` names (the distances with p-values from their `nulls`),
judges the window's tests together (`verdict`, the stated error rate), scores it (`score`), and
returns `results`. `tables` reads tables of named columns into a window (`DriftDetector.check_table`);
`comparison` compares two tables, or a table with a profile, for Python callers and for
`scaleml drift` (`command`, reading its files with `sources` and printing with `output`).
"""
