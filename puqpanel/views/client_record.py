"""Staff client record (tabs). Being written."""


def register(appbuilder) -> None:
    pass
