"""The package version, in one place: pyproject.toml reads it for the build (dynamic version), the
server reports it, and CHANGELOG.md has a section for it."""

__version__ = "0.2.0"
