"""The reconcile loop (`loop`) and each kind's part of it: its reads and the pure functions around them.

The kopf handlers only register triggers and call `loop.run`; local mode shares the pure parts.
"""
