"""Nightly WhatsApp conversation-start billing: rules, pricing, audit, publish."""

from pathlib import Path


def shipped(name: str) -> Path:
    """`sql` or `expectations`: top-level folders of the repository, shipped inside the package by
    the wheel (pyproject.toml), so a worker that pip-installs the package has them too."""
    here = Path(__file__).resolve().parent
    return here / name if (here / name).is_dir() else here.parent / name
