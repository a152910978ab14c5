"""The client area: what a client's own users see after login (dashboard, services, invoices, transactions,
add funds, company profile, users).

Every page is a `ClientAreaView` route decorated with `client_page(...)`:
- FAB permission: the view menu CLIENT_AREA, one permission `can_access` (the Client role has it, staff roles
  don't; staff reach a client's area only by impersonation);
- the current client (domain.client_area.current_link) is resolved from the session and the user's links and
  passed to the route as `link` (a ClientLink: .client, .link, .can(key)); a login without links gets 404;
- an optional client permission key (CLIENT_PERMISSIONS) the link must hold, else 403.
Routes look rows up together with `link.client` (billing.* / domain.* getters taking the client), so another
client's id is a 404. State changes are POST routes (CSRF checked by CSRFProtect).
"""
from __future__ import annotations

from functools import wraps

from flask import abort, current_app, g, session
from flask_babel import lazy_gettext as _l
from flask_appbuilder import BaseView
from flask_appbuilder.security.decorators import has_access

from ...domain import NotFound
from ...domain import client_area as area
from ...security import CLIENT_AREA, current_user_id

TEMPLATES = "puqpanel/client_area"
SESSION_CLIENT = "puq_client_id"  # the client the user last switched to

# (key, endpoint, label, client permission key or None) of the client area's navigation, in order.
NAV = (
    ("dashboard", "ClientDashboardView.dashboard", _l("Dashboard"), None),
    ("services", "ClientAreaServicesView.services", _l("Services"), "manage_services"),
    ("invoices", "ClientAreaInvoicesView.invoices", _l("Invoices"), "manage_invoices"),
    ("transactions", "ClientAreaTransactionsView.transactions", _l("Transactions"), "manage_invoices"),
    ("add_funds", "ClientAddFundsView.add_funds", _l("Add Funds"), "manage_invoices"),
    ("profile", "ClientCompanyProfileView.profile", _l("Company Profile"), "modify_profile"),
    ("users", "ClientAreaUsersView.users", _l("Users"), "manage_users"),
)


def current_link() -> area.ClientLink:
    """The request's ClientLink (cached on g), else 404."""
    cached = getattr(g, "puq_client_link", None)
    if cached is not None:
        return cached
    user_id = current_user_id()
    if user_id is None:
        abort(404)
    try:
        link = area.current_link(user_id, session.get(SESSION_CLIENT))
    except NotFound:
        abort(404)
    g.puq_client_link = link
    return link


def client_page(permission: str | None = None):
    """Route decorator: FAB access check, then the current link (passed as `link`), then the client
    permission key if given (403 without it)."""

    def decorator(fn):
        @wraps(fn)
        def wrapper(self, *args, **kwargs):
            link = current_link()
            if permission is not None and not link.can(permission):
                abort(403)
            return fn(self, link, *args, **kwargs)

        return has_access(wrapper)

    return decorator


class ClientAreaView(BaseView):
    """Base of every client-area view: one FAB permission (CLIENT_AREA.can_access) for all its routes."""

    class_permission_name = CLIENT_AREA
    base_permissions = ["can_access"]

    def __init__(self):
        exposed = (name for name in dir(type(self)) if hasattr(getattr(type(self), name, None), "_urls"))
        self.method_permission_name = {name: "access" for name in exposed}
        super().__init__()

    def render_area(self, template: str, link: area.ClientLink, active: str, **context):
        """Render a client-area page (templates extend client_area/_layout.html, which shows the header,
        the client switcher and the navigation for `active`)."""
        return self.render_template(f"{TEMPLATES}/{template}", link=link, client=link.client, active=active,
                                    **context)


def _links_for_template() -> list[area.ClientLink]:
    user_id = current_user_id()
    return area.links_of(user_id) if user_id is not None else []


def _has_endpoint(endpoint: str) -> bool:
    return endpoint in current_app.view_functions


def register(appbuilder) -> None:
    from . import add_funds, dashboard, invoices, profile, services, switch, transactions, users

    current_app.jinja_env.globals.update(
        puq_client_nav=lambda: NAV, puq_client_links=_links_for_template, puq_has_endpoint=_has_endpoint,
    )
    for module in (switch, dashboard, services, invoices, transactions, add_funds, profile, users):
        module.register(appbuilder)
    appbuilder.add_link("Client Area", href="ClientDashboardView.dashboard", label=_l("Client Area"), icon="fa-home")
