"""FAB views. `register_views` adds puqpanel's menus and views to an AppBuilder."""


def register_views(appbuilder) -> None:
    from . import client_record, clients, settings

    clients.register(appbuilder)
    client_record.register(appbuilder)
    settings.register(appbuilder)
    from . import ledger
    ledger.register(appbuilder)
    from . import catalog, services
    catalog.register(appbuilder)
    services.register(appbuilder)
    from . import billing_settings; billing_settings.register(appbuilder)  # noqa: E702
    from . import gateways, invoices
    invoices.register(appbuilder); gateways.register(appbuilder)
