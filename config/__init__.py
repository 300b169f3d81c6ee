"""Settings and Celery configuration. Imports neither ``gateways`` nor ``worker``."""
