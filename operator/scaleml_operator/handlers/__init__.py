"""kopf handlers. Importing this package registers them (`kopf run -m scaleml_operator.handlers`)."""

from scaleml_operator.handlers import (
    driftmonitor,
    inventory,
    login,
    modeldeployment,
    settings,
    trainingjob,
)

__all__ = ["driftmonitor", "inventory", "login", "modeldeployment", "settings", "trainingjob"]
