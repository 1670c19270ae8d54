"""`mats serve`: the FastAPI app (``create_app``), its micro-batching worker and the web page."""

from .app import Settings, create_app

__all__ = ["create_app", "Settings"]
