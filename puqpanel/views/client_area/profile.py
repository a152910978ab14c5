"""Client area: profile (being built)."""


def register(appbuilder) -> None:
    """Adds this module's views (none yet)."""
