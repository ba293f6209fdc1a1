"""The checkout the tests run from: its top-level deploy/, inventories/, templates/ and docs."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
