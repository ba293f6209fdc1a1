"""pyinfra deploys of ollastack: one component per module, composed by ``deploy/site.py``."""
