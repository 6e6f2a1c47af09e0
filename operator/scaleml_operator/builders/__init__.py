"""Pure functions from a spec to the manifests of the objects it needs (plain dicts, no API calls)."""
