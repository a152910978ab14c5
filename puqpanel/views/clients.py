"""Staff client directory (/clients/), its CSV export, and the create-client form (/clients/add).

Thin views: parse the request, let FAB check the permission, call puqpanel.domain (directory queries,
create_client). Row scoping is in the domain's queries (security.client_scope).
"""
from __future__ import annotations

import csv
import datetime as dt
import io

import pycountry
from flask import Response, current_app, jsonify, request, stream_with_context, url_for
from flask_appbuilder import BaseView, expose
from flask_appbuilder.security.decorators import has_access
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import PasswordField, SelectField, SelectMultipleField, StringField
from wtforms.validators import Length, Optional

from ..domain import DomainError, directory
from ..domain.clients import NewClient, create_client
from ..domain.validation import check_country, countries, regions
from ..models import CLIENT_STATUSES
from ..security import CLIENT_PERMS, CLIENTS, current_user_id, has_perm
from .formatting import STATUS_LABELS


def record_url(client_id: int) -> str:
    return url_for("ClientRecordView.summary", client_id=client_id)


def country_name(code: str | None) -> str:
    if not code:
        return ""
    country = pycountry.countries.get(alpha_2=code)
    return country.name if country else code


def csv_cell(value) -> str:
    """Text for a CSV cell; text that a spreadsheet would run as a formula gets a leading quote."""
    if value is None:
        return ""
    text = str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


def _opt_int(value):
    """Coerce for optional id selects: blank (and the unset default None) is 0, the "—" choice."""
    return 0 if value in (None, "") else int(value)


class ClientCreateForm(FlaskForm):
    """Field names are NewClient's, so a DomainError's keys land under their fields."""

    email = StringField(_l("Owner email"), validators=[Length(max=255)])
    password = PasswordField(
        _l("Password"), validators=[Optional(), Length(max=128)], description=_l("Leave blank to generate one.")
    )
    firstname = StringField(_l("First name"), validators=[Length(max=100)])
    lastname = StringField(_l("Last name"), validators=[Length(max=100)])
    company_name = StringField(_l("Company"), validators=[Length(max=200)], description=_l("Optional."))
    tax_id = StringField(_l("Tax ID"), validators=[Length(max=50)], description=_l("VAT / GST / BN, checked per country."))
    phone = StringField(_l("Phone"), validators=[Length(max=40)], description=_l("With country code, e.g. +49 30 123456."))
    language = SelectField(_l("Language"))
    currency_id = SelectField(_l("Currency"), coerce=_opt_int)
    status = SelectField(_l("Status"), default="new")
    group_id = SelectField(_l("Group"), coerce=_opt_int)
    manager_id = SelectField(_l("Manager"), coerce=_opt_int)
    tag_ids = SelectMultipleField(_l("Tags"), coerce=int)
    address1 = StringField(_l("Address 1"), validators=[Length(max=200)])
    address2 = StringField(_l("Address 2"), validators=[Length(max=200)])
    city = StringField(_l("City"), validators=[Length(max=100)])
    postcode = StringField(_l("Postcode"), validators=[Length(max=20)])
    country = SelectField(_l("Country"), validate_choice=False)
    region = SelectField(_l("State / Region"), validate_choice=False)

    REQUIRED = ("email", "firstname", "lastname", "address1", "city", "country", "currency_id", "status")
    CLIENT_FIELDS = ("email", "password", "firstname", "lastname", "company_name", "tax_id", "phone",
                     "language", "currency_id", "status", "group_id", "manager_id", "tag_ids")
    ADDRESS_FIELDS = ("address1", "address2", "city", "postcode", "country", "region")

    def fill_choices(self, can_assign_any_manager: bool) -> None:
        none = (0, "—")
        self.language.choices = [
            (code, info.get("name", code)) for code, info in current_app.config.get("LANGUAGES", {"en": {}}).items()
        ]
        currencies = directory.currencies()
        self.currency_id.choices = [(cid, code) for cid, code, _default in currencies]
        if self.currency_id.data in (None, 0) and currencies and request.method == "GET":
            self.currency_id.data = next((cid for cid, _c, default in currencies if default), currencies[0][0])
        self.status.choices = [(s, STATUS_LABELS[s]) for s in CLIENT_STATUSES]
        self.group_id.choices = [none] + [(gid, name) for gid, name, _color in directory.groups()]
        if can_assign_any_manager:
            self.manager_id.choices = [none] + directory.staff_users()
        else:  # a Manager-role user creates clients it manages itself
            me = current_user_id()
            self.manager_id.choices = [(uid, label) for uid, label in directory.staff_users() if uid == me]
            self.manager_id.data = me
        self.tag_ids.choices = [(tid, name) for tid, name, _color in directory.tags()]
        self.country.choices = [("", "—")] + countries()
        self.region.choices = [("", "—")] + (regions(self.country.data) if self.country.data else [])

    def to_new_client(self) -> NewClient:
        return NewClient(
            email=self.email.data or "",
            password=self.password.data or "",
            firstname=self.firstname.data or "",
            lastname=self.lastname.data or "",
            company_name=self.company_name.data or "",
            tax_id=self.tax_id.data or "",
            phone=self.phone.data or "",
            language=self.language.data or "en",
            currency_id=self.currency_id.data or None,
            status=self.status.data or "new",
            group_id=self.group_id.data or None,
            manager_id=self.manager_id.data or None,
            tag_ids=list(self.tag_ids.data or []),
            address1=self.address1.data or "",
            address2=self.address2.data or "",
            city=self.city.data or "",
            postcode=self.postcode.data or "",
            country=self.country.data or "",
            region=self.region.data or "",
        )

    def add_domain_errors(self, errors: dict[str, str]) -> list[str]:
        """Put each message under its field; returns the form-level ones."""
        general = []
        for name, message in errors.items():
            field = self._fields.get(name) if name else None
            if field is None or name == "csrf_token":
                general.append(message)
            else:
                field.errors = list(field.errors or []) + [message]
        return general


class ClientDirectoryView(BaseView):
    route_base = "/clients"
    default_view = "list"
    class_permission_name = CLIENTS
    base_permissions = list(CLIENT_PERMS)
    method_permission_name = {
        "list": "list",
        "export": "export",
        "add": "add",
        "regions": "show",
    }

    # --- directory --------------------------------------------------------------------------------------

    def _page_sizes(self) -> tuple[list[int], int]:
        default = int(current_app.config.get("PUQPANEL_DEFAULT_PAGE_SIZE", 25))
        sizes = [int(s) for s in current_app.config.get("PUQPANEL_PAGE_SIZES", (default,))]
        if default not in sizes:
            sizes = sorted(set(sizes) | {default})
        return sizes, default

    @expose("/")
    @has_access
    def list(self):
        filters, errors = directory.parse_filters(request.args)
        sort, direction = directory.parse_sort(request.args.get("sort"), request.args.get("dir"))
        sizes, default_size = self._page_sizes()
        page_size = directory.parse_page_size(request.args.get("page_size"), sizes, default_size)
        result = directory.search_clients(
            filters, sort, direction, page=directory.parse_page(request.args.get("page")), page_size=page_size
        )
        # Only the directory's own arguments go back into links (never url_for's _external, _anchor, ...).
        args = {
            k: request.args[k]
            for k in directory.ARG_KEYS
            if request.args.get(k) not in ("", None) and k not in errors
        }

        def url_with(**changes):
            merged = dict(args)
            for key, value in changes.items():
                if value is None:
                    merged.pop(key, None)
                else:
                    merged[key] = value
            return url_for(".list", **merged)

        def sort_url(key):
            new_dir = "desc" if result.sort == key and result.direction == "asc" else "asc"
            if result.sort != key and key in ("created", "balance", "services", "outstanding", "last_login"):
                new_dir = "desc"
            return url_with(sort=key if key in directory.SORTS else None, dir=new_dir, page=None)

        export_args = {k: v for k, v in args.items() if k not in ("page", "page_size")}
        return self.render_template(
            "puqpanel/clients/list.html",
            title=_("Manage Clients"),
            result=result,
            filters=filters,
            filter_errors=errors,
            args=args,
            url_with=url_with,
            sort_url=sort_url,
            export_url=url_for(".export", **export_args),
            page_sizes=sizes,
            statuses=[(s, STATUS_LABELS[s]) for s in CLIENT_STATUSES],
            groups=directory.groups(),
            tags=directory.tags(),
            managers=directory.staff_users(),
            currencies=directory.currencies(),
            countries=countries(),
            country_name=country_name,
            record_url=record_url,
            can_add=has_perm("can_add"),
            can_export=has_perm("can_export"),
            filters_open=bool(set(args) - {"q", "sort", "dir", "page", "page_size"}) or bool(errors),
        )

    @expose("/export.csv")
    @has_access
    def export(self):
        filters, _errors = directory.parse_filters(request.args)
        sort, direction = directory.parse_sort(request.args.get("sort"), request.args.get("dir"))
        rows = directory.iter_clients(filters, sort, direction)
        header = [
            _("ID"), _("Owner email"), _("First name"), _("Last name"), _("Company"), _("Phone"), _("Status"),
            _("Blocked"), _("City"), _("Country"), _("Created"), _("Currency"), _("Balance"), _("Group"),
            _("Tags"), _("Manager"), _("Active services"), _("Outstanding"), _("Last login"),
        ]

        def generate():
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            buffer.write("\ufeff")
            writer.writerow(header)
            for i, row in enumerate(rows, 1):
                writer.writerow([
                    row.id,
                    csv_cell(row.owner_email),
                    csv_cell(row.firstname),
                    csv_cell(row.lastname),
                    csv_cell(row.company_name),
                    csv_cell(row.phone),
                    row.status,
                    "yes" if row.blocked else "no",
                    csv_cell(row.city),
                    row.country or "",
                    row.created_at.strftime("%Y-%m-%d %H:%M:%S") if row.created_at else "",
                    row.currency_code,
                    str(row.balance),  # plain exact decimals for spreadsheets
                    csv_cell(row.group_name),
                    csv_cell(", ".join(name for name, _color in row.tags)),
                    csv_cell(row.manager_name),
                    row.services,
                    str(row.outstanding),
                    row.last_login.strftime("%Y-%m-%d %H:%M:%S") if row.last_login else "",
                ])
                if i % 200 == 0:
                    yield buffer.getvalue()
                    buffer.seek(0)
                    buffer.truncate()
            yield buffer.getvalue()

        filename = f"clients-{dt.date.today().isoformat()}.csv"
        return Response(
            stream_with_context(generate()),
            mimetype="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"},
        )

    # --- create -----------------------------------------------------------------------------------------

    @expose("/add", methods=["GET", "POST"])
    @has_access
    def add(self):
        form = ClientCreateForm()
        form.fill_choices(can_assign_any_manager=has_perm("can_access_all"))
        general_errors: list[str] = []
        if request.method == "POST" and form.validate():
            data = form.to_new_client()
            try:
                client, password = create_client(data)
            except DomainError as exc:
                general_errors = form.add_domain_errors(exc.errors)
            else:
                # Shown on this response only: never flashed, so it is never in the session cookie.
                response = current_app.make_response(self.render_template(
                    "puqpanel/clients/created.html",
                    title=_("Client created"),
                    client=client,
                    owner_email=next((link.user.email for link in client.users if link.is_owner), ""),
                    password=None if form.password.data else password,
                    record_url=record_url(client.id),
                ))
                response.headers["Cache-Control"] = "no-store"
                return response
        elif request.method == "POST":
            general_errors = list(form.csrf_token.errors) if hasattr(form, "csrf_token") else []
        return self.render_template(
            "puqpanel/clients/create.html",
            title=_("Create Client"),
            form=form,
            general_errors=general_errors,
            required=ClientCreateForm.REQUIRED,
            regions_url=url_for(".regions", country="XX"),
        )

    @expose("/regions/<country>")
    @has_access
    def regions(self, country: str):
        """The ISO 3166-2 subdivisions of a country for every address form (static/puqpanel/regions.js).

        {"country": "PL", "regions": [{"code": "PL-14", "name": "Mazowieckie"}, ...]}; ISO data, no client
        data, so anyone who may view client records may read it.
        """
        try:
            code = check_country(country)
        except DomainError:
            return jsonify({"country": country, "regions": [], "error": _("Choose a valid country.")}), 404
        return jsonify({"country": code, "regions": [{"code": c, "name": n} for c, n in regions(code)]})


def register(appbuilder) -> None:
    appbuilder.add_view(
        ClientDirectoryView,
        "Manage Clients",
        label=_l("Manage Clients"),
        icon="fa-address-book",
        category="Clients",
        category_label=_l("Clients"),
        category_icon="fa-users",
    )
