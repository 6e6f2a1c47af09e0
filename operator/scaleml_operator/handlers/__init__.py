"""kopf handlers. Importing this package registers them (`kopf run -m scaleml_operator.handlers`)."""

from scaleml_operator.handlers import (
    background,
    cache,
    driftmonitor,
    inventory,
    login,
    loop,
    modeldeployment,
    resync,
    settings,
    trainingjob,
)

__all__ = [
    "background",
    "cache",
    "driftmonitor",
    "inventory",
    "login",
    "loop",
    "modeldeployment",
    "resync",
    "settings",
    "trainingjob",
]
