"""Roles, permissions and row scoping.

Staff permissions are ordinary FAB permissions on a few view menus (below), so an admin can compose new
staff roles in FAB's role screens. The built-in roles are synced in code by `puqpanel init`
(`sync_roles`), the way Superset syncs its role definitions: explicit, idempotent, never at worker start.
"""
from __future__ import annotations

from flask import current_app, g, has_request_context
from flask_appbuilder.security.sqla.manager import SecurityManager
from flask_appbuilder.security.utils import is_null_password
from werkzeug.security import check_password_hash
from sqlalchemy import false, select, true

# Permission view menus (class_permission_name); distinct from menu names, whose menu_access FAB
# would otherwise delete when it syncs the view permissions.
CLIENTS = "Client"
CLIENT_GROUPS = "ClientGroup"
TAGS = "ClientTag"
CUSTOM_FIELDS = "CustomField"
BILLING = "ClientBilling"  # the money side of a client record (services, invoices, ledger)
PRODUCTS = "Product"
CURRENCIES = "Currency"
HOME_COMPANIES = "HomeCompany"
TAX_RULES = "TaxRule"
AUTOMATION = "Automation"  # the billing engine's Automation status page
CLIENT_AREA = "ClientArea"  # the client area (client logins; staff only by impersonation)
ACCOUNT = "Account"  # My Account, password, Verification Center, 2FA: every login's own settings
IMPERSONATION = "Impersonation"  # staff "Login as Client"
USER_SECURITY = "UserSecurity"  # staff tools on other logins' security (2FA reset)

# Permissions of the client record. Everything a staff user may do to a client is one of these.
CLIENT_PERMS = (
    "can_list",  # client directory
    "can_show",  # client record, all its read-only tabs
    "can_add",  # create a client
    "can_edit",  # profile, custom field values
    "can_export",  # CSV export of the directory
    "can_write_note",  # append notes
    "can_manage_addresses",
    "can_manage_users",  # link / create / unlink client users, transfer ownership
    "can_access_all",  # without it a staff user reaches only the clients it manages
)

# Permissions on a client's services, invoices and ledger (view menu BILLING). Client scope still applies.
BILLING_PERMS = (
    "can_show",  # Services, Invoices, Transactions tabs, invoice detail and PDF, number series report
    "can_manage_services",  # add a service, activate / suspend / unsuspend / terminate / cancel / retry
    "can_suspend_all",  # suspend every active service of a client (asks for the staff password)
    "can_manage_invoices",  # new invoice, add-funds proforma, publish, cancel, delete drafts
    "can_record_payment",
    "can_refund",
    "can_adjust",  # manual ledger adjustments
)
# Permissions of the Automation status page (view menu AUTOMATION).
AUTOMATION_PERMS = (
    "can_show",  # jobs, last / next runs, failures, run history and run details
    "can_run",  # "Run now" for a job or the billing cycle
)
IMPERSONATION_PERMS = ("can_impersonate",)
USER_SECURITY_PERMS = ("can_reset_2fa",)
_MODEL_PERMS = ("can_list", "can_show", "can_add", "can_edit", "can_delete")
_BILLING_MENUS = [
    ("menu_access", "Billing"), ("menu_access", "Products"), ("menu_access", "Currencies"),
    ("menu_access", "Home Companies"), ("menu_access", "Tax Rules"), ("menu_access", "Number Series"),
]
ADMIN_ROLE = "Admin"
CLIENT_ROLE = "Client"

# Every login's own account pages. FAB's own "reset my password" / "edit my info" forms are not granted: they
# skip the current password and the password policy; puqpanel's Account pages replace them.
_SELF_SERVICE = [("can_access", ACCOUNT), ("menu_access", "My Account")]
_CLIENT_MENUS = [("menu_access", "Clients"), ("menu_access", "Manage Clients")]
CLIENT_AREA_MENU = ("menu_access", "Client Area")  # client logins' menu entry; staff have no client area
_AUTOMATION_MENU = ("menu_access", "Automation Status")


def _perms(view: str, names) -> list[tuple[str, str]]:
    return [(name, view) for name in names]


# Built-in roles (Admin gets every permission). Later issues extend these lists.
ROLE_DEFINITIONS: dict[str, list[tuple[str, str]]] = {
    "Support": _SELF_SERVICE
    + _CLIENT_MENUS
    + _perms(CLIENTS, ("can_list", "can_show", "can_write_note", "can_access_all"))
    + _perms(BILLING, ("can_show",))
    + _perms(CLIENT_GROUPS, ("can_list", "can_show"))
    + _perms(TAGS, ("can_list", "can_show"))
    # sees every client anyway (can_access_all): may watch the automation, not start it
    + _perms(AUTOMATION, ("can_show",)) + [("menu_access", "Billing"), _AUTOMATION_MENU]
    + _perms(IMPERSONATION, IMPERSONATION_PERMS),
    "Billing": _SELF_SERVICE
    + _CLIENT_MENUS
    + [("menu_access", "Client Groups"), ("menu_access", "Tags")]
    + _perms(CLIENTS, CLIENT_PERMS)
    + _perms(BILLING, BILLING_PERMS)
    + _BILLING_MENUS
    + [p for view in (PRODUCTS, CURRENCIES, HOME_COMPANIES, TAX_RULES) for p in _perms(view, _MODEL_PERMS)]
    + _perms(CLIENT_GROUPS, ("can_list", "can_show"))
    + _perms(TAGS, ("can_list", "can_show"))
    + _perms(AUTOMATION, AUTOMATION_PERMS) + [_AUTOMATION_MENU],
    # Manager: no Automation access — it reaches only the clients it manages, and the page shows
    # provider-wide run totals (amounts charged across all clients) and errors.
    "Manager": _SELF_SERVICE
    + _CLIENT_MENUS
    + _perms(CLIENTS, [p for p in CLIENT_PERMS if p != "can_access_all"])
    + _perms(BILLING, ("can_show", "can_manage_services", "can_manage_invoices", "can_record_payment"))
    + _perms(CLIENT_GROUPS, ("can_list", "can_show"))
    + _perms(TAGS, ("can_list", "can_show")),
    CLIENT_ROLE: _SELF_SERVICE + [("can_access", CLIENT_AREA), CLIENT_AREA_MENU],
}


def sync_roles() -> list[str]:
    """Create every view permission, then make the built-in roles hold exactly their definition."""
    appbuilder = current_app.appbuilder
    sm = appbuilder.sm
    sm.find_role(ADMIN_ROLE) or sm.add_role(ADMIN_ROLE)  # FAB grants new permissions to it while adding them
    appbuilder.add_permissions(update_perms=True)
    session = sm.session
    synced = [ADMIN_ROLE]
    for role_name, wanted in ROLE_DEFINITIONS.items():
        role = sm.find_role(role_name) or sm.add_role(role_name)
        pvs = []
        for perm_name, view_name in wanted:
            pv = sm.find_permission_view_menu(perm_name, view_name)
            if pv is None:  # menu entries exist only once registered; create them explicitly
                pv = sm.add_permission_view_menu(perm_name, view_name)
            pvs.append(pv)
        role.permissions = pvs
        synced.append(role_name)
    admin = sm.find_role(ADMIN_ROLE) or sm.add_role(ADMIN_ROLE)
    admin.permissions = [  # everything but the client logins' menu entry (it would lead Admin to a 404)
        pv for pv in session.scalars(select(sm.permissionview_model))
        if (pv.permission.name, pv.view_menu.name) != CLIENT_AREA_MENU
    ]
    sm.find_role(current_app.config.get("AUTH_ROLE_PUBLIC", "Public")) or sm.add_role("Public")
    session.commit()
    return synced


def has_perm(permission: str, view: str = CLIENTS) -> bool:
    return current_app.appbuilder.sm.has_access(permission, view)


def current_user_id() -> int | None:
    user = getattr(g, "user", None)
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return user.id


def client_scope():
    """SQL condition on Client selecting the rows the current user may reach.

    Staff with Clients.can_access_all see every client; other staff only the clients they manage.
    Outside a request (CLI, Celery) nothing is filtered: those callers act as the system. In a request
    without a logged-in user nothing is reachable.
    """
    from .models import Client

    user_id = current_user_id()
    if user_id is None:
        return false() if has_request_context() else true()
    if has_perm("can_access_all"):
        return true()
    return Client.manager_id == user_id


class PuqSecurityManager(SecurityManager):
    """FAB's security manager with puqpanel's login: the form login (views.auth.PuqAuthDBView: throttling,
    the 2FA step, server-side sessions) and the JSON API login (views.auth.PuqSecurityApi: the same
    throttling, a token only with the second factor)."""

    # Properties rather than class attributes: the views import this module.
    @property
    def authdbview(self):
        from .views.auth import PuqAuthDBView

        return PuqAuthDBView

    @property
    def security_api(self):
        from .views.auth import PuqSecurityApi

        return PuqSecurityApi

    def check_password_db(self, username: str, password: str):
        """FAB's auth_user_db without counting a successful login: the user, or None (unknown, inactive or
        a wrong password; the failure is counted on the user as FAB does). The caller counts the login
        (update_user_auth_stat) once it is complete, i.e. after the second factor."""
        if not username:
            return None
        if is_null_password(password):
            return None
        first_user = self.get_first_user()
        user = self.find_user(username=username)
        if user is None:
            user = self.find_user(email=username)
        else:
            _ = self.find_user(email=username)  # balance failure and success (as FAB)
        if user is None or not user.is_active:
            check_password_hash(current_app.config["AUTH_DB_FAKE_PASSWORD_HASH_CHECK"], "password")
            if first_user:
                self.noop_user_update(first_user)
            return None
        if check_password_hash(user.password, password):
            return user
        self.update_user_auth_stat(user, False)
        return None
