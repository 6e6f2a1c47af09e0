"""kopf handlers. Importing this package registers them (`kopf run -m scaleml_operator.handlers`)."""

from scaleml_operator.handlers import (
    acceptance,
    driftmonitor,
    inventory,
    login,
    modeldeployment,
    settings,
    trainingjob,
)

__all__ = ["acceptance", "driftmonitor", "inventory", "login", "modeldeployment", "settings", "trainingjob"]
