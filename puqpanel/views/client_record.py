"""Staff client record: Summary, Profile, Addresses, Users, Notes, Custom fields, Activity tabs.

Every route loads its client through domain.clients.get_client (404 outside the caller's scope); sub-objects
are looked up together with the client id. State changes are POST-only routes calling domain functions.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from flask import abort, flash, jsonify, redirect, request, url_for
from flask_appbuilder import BaseView, expose
from flask_appbuilder.security.decorators import has_access
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from ..domain import DomainError, NotFound
from ..domain import addresses as address_domain
from ..domain import client_users as user_domain
from ..domain import custom_fields as cf_domain
from ..domain import notes as note_domain
from ..domain import profile as profile_domain
from ..domain.clients import ADDRESS_FIELDS, get_client
from ..domain.session import get_session
from ..domain.validation import check_country, countries, regions
from ..models import ADDRESS_TYPES, CLIENT_PERMISSIONS, ActivityLog, Client
from ..security import CLIENT_PERMS, CLIENTS, has_perm

ACTIVITY_PAGE_SIZE = 50

STATUS_LABELS = {
    "new": _l("New"),
    "active": _l("Active"),
    "inactive": _l("Inactive"),
    "suspended": _l("Suspended"),
    "closed": _l("Closed"),
    "fraud": _l("Fraud"),
}
STATUS_CLASSES = {
    "new": "info",
    "active": "success",
    "inactive": "default",
    "suspended": "warning",
    "closed": "default",
    "fraud": "danger",
}
ADDRESS_TYPE_LABELS = {"billing": _l("Billing"), "shipping": _l("Shipping"), "service": _l("Service")}
FIELD_TYPE_LABELS = {
    "text": _l("Text"), "number": _l("Number"), "select": _l("Select"), "bool": _l("Yes / no"), "date": _l("Date"),
}
# Actions whose `changes` hold a snapshot ({field: value}) rather than {field: [before, after]}.
_SNAPSHOT_SUFFIXES = (".create", ".delete", ".link", ".unlink")

TABS = (
    ("summary", _l("Summary")),
    ("profile", _l("Profile")),
    ("addresses", _l("Addresses")),
    ("users", _l("Users")),
    ("notes", _l("Notes")),
    ("custom_fields", _l("Custom Fields")),
    ("activity", _l("Activity")),
)


def money(amount: Decimal | None, currency=None) -> str:
    amount = Decimal(amount or 0)
    text = f"{amount:,.2f}"
    if currency is not None:
        return f"{currency.prefix}{text}{currency.suffix}" if (currency.prefix or currency.suffix) else f"{text} {currency.code}"
    return text


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
        "regions": "show",
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
        try:
            return get_client(client_id)
        except NotFound:
            abort(404)

    def _render(self, tab: str, client: Client, status: int = 200, **kwargs):
        can = {
            "edit": has_perm("can_edit"),
            "manage_addresses": has_perm("can_manage_addresses"),
            "manage_users": has_perm("can_manage_users"),
            "write_note": has_perm("can_write_note"),
        }
        return (
            self.render_template(
                f"puqpanel/record/{tab}.html",
                client=client,
                tab=tab,
                tabs=TABS,
                can=can,
                money=money,
                status_labels=STATUS_LABELS,
                status_classes=STATUS_CLASSES,
                **kwargs,
            ),
            status,
        )

    def _back(self, endpoint: str, client: Client):
        return redirect(url_for(f"{self.__class__.__name__}.{endpoint}", client_id=client.id))

    # -- Summary ------------------------------------------------------------------------------------
    @expose("/<int:client_id>")
    @has_access
    def summary(self, client_id: int):
        client = self._client(client_id)
        return self._render(
            "summary",
            client,
            finance=profile_domain.finance_summary(client),
            sticky_notes=note_domain.list_notes(client, sticky_only=True),
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
        )

    @expose("/<int:client_id>/profile")
    @has_access
    def profile(self, client_id: int):
        client = self._client(client_id)
        return self._render_profile(client, profile_domain.profile_form_data(client))

    @expose("/<int:client_id>/profile/save", methods=["POST"])
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
        )

    @expose("/<int:client_id>/addresses")
    @has_access
    def addresses(self, client_id: int):
        return self._render_addresses(self._client(client_id))

    @expose("/<int:client_id>/regions/<string:cc>")
    @has_access
    def regions(self, client_id: int, cc: str):
        self._client(client_id)
        try:
            country = check_country(cc)
        except DomainError:
            abort(404)
        return jsonify([{"code": code, "name": name} for code, name in regions(country)])

    @staticmethod
    def _address_form() -> dict[str, str]:
        return {name: request.form.get(name, "") for name in ADDRESS_FIELDS}

    @expose("/<int:client_id>/addresses/create", methods=["POST"])
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

    @expose("/<int:client_id>/addresses/<int:address_id>/update", methods=["POST"])
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

    @expose("/<int:client_id>/addresses/<int:address_id>/delete", methods=["POST"])
    @has_access
    def address_delete(self, client_id: int, address_id: int):
        client = self._client(client_id)
        try:
            address_domain.delete_address(client, address_id)
        except NotFound:
            abort(404)
        except DomainError as exc:
            flash(" ".join(exc.errors.values()), "danger")
            return self._back("addresses", client)
        flash(_("Address deleted."), "success")
        return self._back("addresses", client)

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

    @expose("/<int:client_id>/users")
    @has_access
    def users(self, client_id: int):
        return self._render_users(self._client(client_id))

    @expose("/<int:client_id>/users/associate", methods=["POST"])
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

    @expose("/<int:client_id>/users/<int:link_id>/permissions", methods=["POST"])
    @has_access
    def user_permissions(self, client_id: int, link_id: int):
        client = self._client(client_id)
        try:
            user_domain.set_permissions(client, link_id, request.form.getlist("permissions"))
        except NotFound:
            abort(404)
        except DomainError as exc:
            flash(" ".join(exc.errors.values()), "danger")
            return self._back("users", client)
        flash(_("Permissions saved."), "success")
        return self._back("users", client)

    @expose("/<int:client_id>/users/<int:link_id>/transfer", methods=["POST"])
    @has_access
    def user_transfer(self, client_id: int, link_id: int):
        client = self._client(client_id)
        try:
            user_domain.transfer_ownership(client, link_id)
        except NotFound:
            abort(404)
        except DomainError as exc:
            flash(" ".join(exc.errors.values()), "danger")
            return self._back("users", client)
        flash(_("Ownership transferred."), "success")
        return self._back("users", client)

    @expose("/<int:client_id>/users/<int:link_id>/unlink", methods=["POST"])
    @has_access
    def user_unlink(self, client_id: int, link_id: int):
        client = self._client(client_id)
        try:
            user_domain.unlink(client, link_id)
        except NotFound:
            abort(404)
        except DomainError as exc:
            flash(" ".join(exc.errors.values()), "danger")
            return self._back("users", client)
        flash(_("User unlinked."), "success")
        return self._back("users", client)

    # -- Notes --------------------------------------------------------------------------------------
    def _render_notes(self, client: Client, form: dict | None = None, errors: dict | None = None):
        return self._render(
            "notes", client, notes=note_domain.list_notes(client), form=form or {}, errors=errors or {}
        )

    @expose("/<int:client_id>/notes")
    @has_access
    def notes(self, client_id: int):
        return self._render_notes(self._client(client_id))

    @expose("/<int:client_id>/notes/add", methods=["POST"])
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

    @expose("/<int:client_id>/custom-fields")
    @has_access
    def custom_fields(self, client_id: int):
        return self._render_custom_fields(self._client(client_id))

    @expose("/<int:client_id>/custom-fields/save", methods=["POST"])
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
    @expose("/<int:client_id>/activity")
    @has_access
    def activity(self, client_id: int):
        client = self._client(client_id)
        page = max(request.args.get("page", 1, type=int) or 1, 1)
        # One query a page: actor and impersonator are joined eagerly (lazy="joined" on the model); one
        # extra row tells whether a next page exists, so no COUNT is needed.
        rows = list(
            get_session().scalars(
                select(ActivityLog)
                .where(ActivityLog.client_id == client.id)
                .order_by(ActivityLog.created_at.desc(), ActivityLog.id.desc())
                .limit(ACTIVITY_PAGE_SIZE + 1)
                .offset((page - 1) * ACTIVITY_PAGE_SIZE)
            ).unique()
        )
        has_next = len(rows) > ACTIVITY_PAGE_SIZE
        return self._render(
            "activity",
            client,
            entries=rows[:ACTIVITY_PAGE_SIZE],
            change_lines=change_lines,
            page=page,
            has_next=has_next,
        )


def register(appbuilder) -> None:
    appbuilder.add_view_no_menu(ClientRecordView())
