"""Drift statistics: live windows of model inputs against the reference profile of the training data.

`statistics` holds the tests as pure functions over many features at once, `reference` what a
window is compared with, `detector` the detector the monitor builds once and checks every window
with. The detector reads windows with `window`, compares them with the reference side `prepared`
once, runs the tests the `registry` names, and returns `results`.
"""
