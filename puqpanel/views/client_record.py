"""Staff client record: Summary, Profile, Addresses, Users, Notes, Custom fields, Activity tabs.

Every route loads its client through domain.clients.get_client (404 outside the caller's scope); sub-objects
are looked up together with the client id. State changes are POST-only routes calling domain functions.
"""
from __future__ import annotations

from typing import Any

from flask import abort, current_app, flash, redirect, request, url_for
from flask_appbuilder import BaseView, expose
from flask_appbuilder.security.decorators import has_access
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel import lazy_pgettext

from ..domain import DomainError, NotFound
from ..domain import activity as activity_domain
from ..domain import addresses as address_domain
from ..domain import client_users as user_domain
from ..domain import custom_fields as cf_domain
from ..domain import notes as note_domain
from ..domain import profile as profile_domain
from ..domain.clients import ADDRESS_FIELDS, get_client
from ..domain.directory import parse_page
from ..domain.validation import MAX_ID, countries, regions
from ..models import ADDRESS_TYPES, CLIENT_PERMISSIONS, ActivityLog, Client
from ..security import BILLING, BILLING_PERMS, CLIENT_PERMS, CLIENTS, has_perm
from .formatting import STATUS_LABELS

ACTIVITY_PAGE_SIZE = 50
# Route ids: anything beyond a 32-bit row id is a 404 before it reaches the database.
ID = f"int(max={MAX_ID})"
RECORD = f"/<{ID}:client_id>"

# With a context: "Billing" (the menu), "Service" (a client's service) and "Number" (a document number) are
# also nouns elsewhere, and some languages need other words there (pl "Rozliczenia" vs "rozliczeniowy").
ADDRESS_TYPE_LABELS = {
    "billing": lazy_pgettext("address type", "Billing"),
    "shipping": lazy_pgettext("address type", "Shipping"),
    "service": lazy_pgettext("address type", "Service"),
}
FIELD_TYPE_LABELS = {
    "text": _l("Text"), "number": lazy_pgettext("field type", "Number"), "select": _l("Select"),
    "bool": _l("Yes / no"), "date": _l("Date"),
}
# Actions whose `changes` hold a snapshot ({field: value}) rather than {field: [before, after]}.
_SNAPSHOT_SUFFIXES = (".create", ".delete", ".link", ".unlink")

# (key, endpoint, label) of the record's tabs; tabs whose view is not registered are not shown.
TABS = (
    ("summary", "ClientRecordView.summary", _l("Summary")),
    ("profile", "ClientRecordView.profile", _l("Profile")),
    ("addresses", "ClientRecordView.addresses", _l("Addresses")),
    ("users", "ClientRecordView.users", _l("Users")),
    ("services", "ClientServicesView.services", _l("Services")),
    ("invoices", "ClientInvoicesView.invoices", _l("Invoices")),
    ("transactions", "ClientLedgerView.transactions", _l("Transactions")),
    ("notes", "ClientRecordView.notes", _l("Notes")),
    ("custom_fields", "ClientRecordView.custom_fields", _l("Custom Fields")),
    ("activity", "ClientRecordView.activity", _l("Activity")),
)


def client_or_404(client_id: int) -> Client:
    """The client, or a 404 when it doesn't exist or is outside the caller's scope (the same answer)."""
    try:
        return get_client(client_id)
    except NotFound:
        abort(404)


def record_permissions() -> dict[str, bool]:
    """What the current staff user may do on a client record (templates hide what it may not)."""
    can = {
        "edit": has_perm("can_edit"),
        "manage_addresses": has_perm("can_manage_addresses"),
        "manage_users": has_perm("can_manage_users"),
        "write_note": has_perm("can_write_note"),
        "access_all": has_perm("can_access_all"),
    }
    can.update({perm[len("can_"):]: has_perm(perm, BILLING) for perm in BILLING_PERMS})
    can["billing"] = can.pop("show")
    return can


def render_record(view: BaseView, template: str, client: Client, tab: str, status: int = 200, **kwargs):
    """A client record tab page: `template` extends puqpanel/record/_layout.html."""
    tabs = [(key, endpoint, label) for key, endpoint, label in TABS if endpoint in current_app.view_functions]
    if not has_perm("can_show", BILLING):
        tabs = [t for t in tabs if t[0] not in ("services", "invoices", "transactions")]
    return (
        view.render_template(
            template, client=client, tab=tab, tabs=tabs, can=record_permissions(), status_labels=STATUS_LABELS,
            **kwargs,
        ),
        status,
    )


def _show(value: Any) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "—"
    return str(value)


def change_lines(entry: ActivityLog) -> list[str]:
    """The changes of one log row as readable lines: "field: before → after" (or "field: value")."""
    changes = entry.changes or {}
    snapshot = entry.action.endswith(_SNAPSHOT_SUFFIXES)
    lines = []
    for field, value in changes.items():
        if not snapshot and isinstance(value, list) and len(value) == 2:
            lines.append(f"{field}: {_show(value[0])} → {_show(value[1])}")
        elif value not in (None, "", []):  # a snapshot lists only the fields that hold something
            lines.append(f"{field}: {_show(value)}")
    return lines


def _form_dict() -> dict[str, Any]:
    data: dict[str, Any] = {k: v for k, v in request.form.items() if k != "csrf_token"}
    data["tag_ids"] = request.form.getlist("tag_ids")
    return data


class ClientRecordView(BaseView):
    route_base = "/clients"
    default_view = "summary"
    class_permission_name = CLIENTS
    base_permissions = list(CLIENT_PERMS)
    method_permission_name = {
        "summary": "show",
        "profile": "show",
        "addresses": "show",
        "users": "show",
        "notes": "show",
        "custom_fields": "show",
        "activity": "show",
        "profile_save": "edit",
        "custom_fields_save": "edit",
        "address_create": "manage_addresses",
        "address_update": "manage_addresses",
        "address_delete": "manage_addresses",
        "user_associate": "manage_users",
        "user_permissions": "manage_users",
        "user_transfer": "manage_users",
        "user_unlink": "manage_users",
        "note_add": "write_note",
    }

    # -- helpers -------------------------------------------------------------------------------------
    @staticmethod
    def _client(client_id: int) -> Client:
        return client_or_404(client_id)

    def _render(self, tab: str, client: Client, status: int = 200, **kwargs):
        return render_record(self, f"puqpanel/record/{tab}.html", client, tab, status, **kwargs)

    def _back(self, endpoint: str, client: Client):
        return redirect(url_for(f"{self.__class__.__name__}.{endpoint}", client_id=client.id))

    def _act(self, client: Client, endpoint: str, success: str, action, *args):
        """A one-click change answered by a redirect to the tab: an unknown sub-object is a 404, a refused
        change is flashed, success is flashed."""
        try:
            action(client, *args)
        except NotFound:
            abort(404)
        except DomainError as exc:
            flash(" ".join(exc.errors.values()), "danger")
        else:
            flash(success, "success")
        return self._back(endpoint, client)

    # -- Summary ------------------------------------------------------------------------------------
    @expose(RECORD)
    @has_access
    def summary(self, client_id: int):
        client = self._client(client_id)
        return self._render(
            "summary",
            client,
            finance=profile_domain.finance_summary(client),
            sticky_notes=note_domain.list_notes(client, sticky_only=True),
            parent_visible=profile_domain.parent_in_scope(client),
        )

    # -- Profile ------------------------------------------------------------------------------------
    def _render_profile(self, client: Client, form: dict, errors: dict | None = None, status: int = 200):
        return self._render(
            "profile",
            client,
            status=status,
            form=form,
            errors=errors or {},
            choices=profile_domain.form_choices(client),
            parent_visible=profile_domain.parent_in_scope(client),
        )

    @expose(f"{RECORD}/profile")
    @has_access
    def profile(self, client_id: int):
        client = self._client(client_id)
        return self._render_profile(client, profile_domain.profile_form_data(client))

    @expose(f"{RECORD}/profile/save", methods=["POST"])
    @has_access
    def profile_save(self, client_id: int):
        client = self._client(client_id)
        data = _form_dict()
        try:
            changes = profile_domain.update_profile(client, data)
        except DomainError as exc:
            return self._render_profile(client, data, exc.errors, status=200)
        flash(_("Profile saved.") if changes else _("Nothing changed."), "success" if changes else "info")
        return self._back("profile", client)

    # -- Addresses ----------------------------------------------------------------------------------
    def _render_addresses(self, client: Client, modal: dict | None = None, status: int = 200):
        return self._render(
            "addresses",
            client,
            status=status,
            addresses=address_domain.list_addresses(client),
            modal=modal,
            address_types=ADDRESS_TYPES,
            address_type_labels=ADDRESS_TYPE_LABELS,
            countries=countries(),
            regions=regions,
            address_values=lambda address: {name: getattr(address, name) for name in ADDRESS_FIELDS},
        )

    @expose(f"{RECORD}/addresses")
    @has_access
    def addresses(self, client_id: int):
        return self._render_addresses(self._client(client_id))

    @staticmethod
    def _address_form() -> dict[str, str]:
        return {name: request.form.get(name, "") for name in ADDRESS_FIELDS}

    @expose(f"{RECORD}/addresses/create", methods=["POST"])
    @has_access
    def address_create(self, client_id: int):
        client = self._client(client_id)
        data = self._address_form()
        try:
            address_domain.create_address(client, data)
        except DomainError as exc:
            return self._render_addresses(client, {"id": "new", "values": data, "errors": exc.errors})
        flash(_("Address added."), "success")
        return self._back("addresses", client)

    @expose(f"{RECORD}/addresses/<{ID}:address_id>/update", methods=["POST"])
    @has_access
    def address_update(self, client_id: int, address_id: int):
        client = self._client(client_id)
        data = self._address_form()
        try:
            address_domain.update_address(client, address_id, data)
        except NotFound:
            abort(404)
        except DomainError as exc:
            return self._render_addresses(client, {"id": address_id, "values": data, "errors": exc.errors})
        flash(_("Address saved."), "success")
        return self._back("addresses", client)

    @expose(f"{RECORD}/addresses/<{ID}:address_id>/delete", methods=["POST"])
    @has_access
    def address_delete(self, client_id: int, address_id: int):
        client = self._client(client_id)
        return self._act(client, "addresses", _("Address deleted."), address_domain.delete_address, address_id)

    # -- Users --------------------------------------------------------------------------------------
    def _render_users(self, client: Client, modal: dict | None = None, new_password: str = "", new_login: str = ""):
        return self._render(
            "users",
            client,
            rows=user_domain.list_client_users(client),
            permission_keys=CLIENT_PERMISSIONS,
            permission_labels=user_domain.PERMISSION_LABELS,
            modal=modal,
            new_password=new_password,
            new_login=new_login,
        )

    @expose(f"{RECORD}/users")
    @has_access
    def users(self, client_id: int):
        return self._render_users(self._client(client_id))

    @expose(f"{RECORD}/users/associate", methods=["POST"])
    @has_access
    def user_associate(self, client_id: int):
        client = self._client(client_id)
        form = {k: request.form.get(k, "") for k in ("mode", "email", "firstname", "lastname")}
        permissions = request.form.getlist("permissions")
        try:
            if form["mode"] == "new":
                link, password = user_domain.create_and_associate(
                    client, form["email"], form["firstname"], form["lastname"], permissions,
                    request.form.get("password", ""),
                )
                # The password is shown once, in this response (never put in a flash/session cookie).
                return self._render_users(client, new_password=password, new_login=link.user.email)
            user_domain.associate_existing(client, form["email"], permissions)
        except DomainError as exc:
            form["permissions"] = permissions
            return self._render_users(client, modal={"id": "new", "values": form, "errors": exc.errors})
        flash(_("User linked."), "success")
        return self._back("users", client)

    @expose(f"{RECORD}/users/<{ID}:link_id>/permissions", methods=["POST"])
    @has_access
    def user_permissions(self, client_id: int, link_id: int):
        client = self._client(client_id)
        permissions = request.form.getlist("permissions")
        return self._act(client, "users", _("Permissions saved."), user_domain.set_permissions, link_id, permissions)

    @expose(f"{RECORD}/users/<{ID}:link_id>/transfer", methods=["POST"])
    @has_access
    def user_transfer(self, client_id: int, link_id: int):
        client = self._client(client_id)
        return self._act(client, "users", _("Ownership transferred."), user_domain.transfer_ownership, link_id)

    @expose(f"{RECORD}/users/<{ID}:link_id>/unlink", methods=["POST"])
    @has_access
    def user_unlink(self, client_id: int, link_id: int):
        client = self._client(client_id)
        return self._act(client, "users", _("User unlinked."), user_domain.unlink, link_id)

    # -- Notes --------------------------------------------------------------------------------------
    def _render_notes(self, client: Client, form: dict | None = None, errors: dict | None = None):
        return self._render(
            "notes", client, notes=note_domain.list_notes(client), form=form or {}, errors=errors or {}
        )

    @expose(f"{RECORD}/notes")
    @has_access
    def notes(self, client_id: int):
        return self._render_notes(self._client(client_id))

    @expose(f"{RECORD}/notes/add", methods=["POST"])
    @has_access
    def note_add(self, client_id: int):
        client = self._client(client_id)
        form = {"body": request.form.get("body", ""), "sticky": bool(request.form.get("sticky"))}
        try:
            note_domain.add_note(client, form["body"], form["sticky"])
        except DomainError as exc:
            return self._render_notes(client, form, exc.errors)
        flash(_("Note added."), "success")
        return self._back("notes", client)

    # -- Custom fields ------------------------------------------------------------------------------
    def _render_custom_fields(self, client: Client, values: dict | None = None, errors: dict | None = None):
        rows = cf_domain.fields_with_values(client)
        if values is not None:
            rows = [(f, values.get(cf_domain.form_key(f), "")) for f, _v in rows]
        return self._render(
            "custom_fields",
            client,
            rows=rows,
            form_key=cf_domain.form_key,
            field_type_labels=FIELD_TYPE_LABELS,
            errors=errors or {},
        )

    @expose(f"{RECORD}/custom-fields")
    @has_access
    def custom_fields(self, client_id: int):
        return self._render_custom_fields(self._client(client_id))

    @expose(f"{RECORD}/custom-fields/save", methods=["POST"])
    @has_access
    def custom_fields_save(self, client_id: int):
        client = self._client(client_id)
        data = {k: v for k, v in request.form.items() if k.startswith("cf_")}
        try:
            changes = cf_domain.save_values(client, data)
        except DomainError as exc:
            return self._render_custom_fields(client, data, exc.errors)
        flash(_("Custom fields saved.") if changes else _("Nothing changed."), "success" if changes else "info")
        return self._back("custom_fields", client)

    # -- Activity -----------------------------------------------------------------------------------
    @expose(f"{RECORD}/activity")
    @has_access
    def activity(self, client_id: int):
        client = self._client(client_id)
        page = parse_page(request.args.get("page"))
        entries, has_next = activity_domain.client_activity(client.id, page, ACTIVITY_PAGE_SIZE)
        return self._render(
            "activity",
            client,
            entries=entries,
            change_lines=change_lines,
            page=page,
            has_next=has_next,
        )


def register(appbuilder) -> None:
    appbuilder.add_view_no_menu(ClientRecordView())
