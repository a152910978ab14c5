"""puqpanel: client management and prepaid billing for hosting and cloud providers (a FAB plugin)."""
__version__ = "0.1.0"


def __getattr__(name):  # lazy, so `import puqpanel.models` does not build an app
    if name == "PuqPanel":
        from .plugin import PuqPanel

        return PuqPanel
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(name)
