"""kopf handlers. Importing this package registers them (`kopf run -m scaleml_operator.handlers`)."""

from scaleml_operator.handlers import acceptance, inventory, login, modeldeployment, settings, trainingjob

__all__ = ["acceptance", "inventory", "login", "modeldeployment", "settings", "trainingjob"]
