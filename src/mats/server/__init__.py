"""`mats serve`: the FastAPI app (``create_app``), its micro-batching worker and the web page.

    from mats.server import create_app, Settings
"""

from .settings import Settings

__all__ = ["create_app", "Settings"]


def __getattr__(name):
    # FastAPI is imported when an app is made, not when `mats --help` lists the serve command.
    if name == "create_app":
        from .app import create_app
        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
