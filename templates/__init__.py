"""The templates and helper scripts the deploys put on hosts (package data, read as files)."""
