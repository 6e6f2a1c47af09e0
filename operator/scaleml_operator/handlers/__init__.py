"""kopf handlers. Importing this package registers them (`kopf run -m scaleml_operator.handlers`)."""

from scaleml_operator.handlers import (
    driftmonitor,
    inventory,
    login,
    loop,
    modeldeployment,
    settings,
    trainingjob,
)

__all__ = ["driftmonitor", "inventory", "login", "loop", "modeldeployment", "settings", "trainingjob"]
