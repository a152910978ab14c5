"""FAB views. `register_views` adds puqpanel's menus and views to an AppBuilder."""


def register_views(appbuilder) -> None:
    from . import (
        account,
        auth,
        billing_settings,
        catalog,
        client_area,
        client_record,
        clients,
        gateways,
        impersonation,
        invoices,
        ledger,
        services,
        settings,
    )

    clients.register(appbuilder)
    client_record.register(appbuilder)
    settings.register(appbuilder)
    ledger.register(appbuilder)
    catalog.register(appbuilder)
    services.register(appbuilder)
    billing_settings.register(appbuilder)
    invoices.register(appbuilder)
    gateways.register(appbuilder)
    client_area.register(appbuilder)
    account.register(appbuilder)
    auth.register(appbuilder)
    impersonation.register(appbuilder)
