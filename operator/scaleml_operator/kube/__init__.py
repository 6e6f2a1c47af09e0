"""Talking to the API server: clients and the few writes that are not kopf's."""
