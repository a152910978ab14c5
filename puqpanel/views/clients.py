"""Staff client management (placeholder until the directory and record views land)."""


def register(appbuilder) -> None:
    pass
