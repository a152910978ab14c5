"""FAB views. `register_views` adds puqpanel's menus and views to an AppBuilder."""


def register_views(appbuilder) -> None:
    from .clients import register as register_clients
    from .settings import register as register_settings

    register_clients(appbuilder)
    register_settings(appbuilder)
