"""pyinfra inventories, one per provider: ``pyinfra inventories/<provider>.py deploy/site.py``."""
