"""Staff billing settings (menu "Billing"): Currencies, Home Companies, Tax Rules (+ one-click EU / Canada
rule sets) and the Number Series report.

The ModelViews' add / edit forms are validated by the billing domain (billing.reference / billing.tax) inside
the form's `validate`, so a bad value is a form error on its field and nothing is written — FAB would
otherwise flash an exception from pre_add / pre_update after populating (and leaving dirty) the row.
"""
from __future__ import annotations

import re
from decimal import Decimal

from flask import abort, current_app, flash, redirect, request, url_for
from flask_appbuilder import BaseView, ModelView, expose
from flask_appbuilder.fieldwidgets import BS3TextAreaFieldWidget, BS3TextFieldWidget, Select2Widget
from flask_appbuilder.forms import DynamicForm
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_appbuilder.security.decorators import has_access, permission_name
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf.file import FileField
from markupsafe import Markup, escape
from sqlalchemy import select
from werkzeug.datastructures import FileStorage
from wtforms import BooleanField, SelectField, StringField, TextAreaField
from wtforms.widgets import FileInput

from ..billing import clock, numbering, reference, tax, tax_rulesets
from ..domain import DomainError
from ..domain.session import get_session, transaction
from ..domain.validation import MAX_ID, countries, parse_id, regions
from ..models import INVOICE_TYPES, NUMBER_RESETS, Currency, HomeCompany, TaxRule
from ..security import BILLING, BILLING_PERMS, CURRENCIES, HOME_COMPANIES, TAX_RULES, has_perm

DOC_TYPE_LABELS = {"proforma": _l("Proforma"), "invoice": _l("Invoice"), "credit_note": _l("Credit note")}
RESET_LABELS = {"never": _l("Never"), "monthly": _l("Monthly"), "yearly": _l("Yearly")}
TEMPLATES = "puqpanel/billing_settings"


# --- shared form machinery ------------------------------------------------------------------------------


class DomainForm(DynamicForm):
    """A FAB form whose validate() also runs `domain_check(data, current)`; its field errors land on the
    form's fields (or `main_field`), and its normalised values replace the submitted ones before FAB
    populates the row."""

    model = None
    main_field = ""

    def current_row(self):
        row_id = getattr(self, "_id", None)  # FAB sets it on the edit form
        return get_session().get(self.model, row_id) if row_id is not None else None

    def domain_check(self, current):  # pragma: no cover - abstract
        raise NotImplementedError

    def validate(self, extra_validators=None):
        ok = super().validate(extra_validators)
        try:
            values = self.domain_check(self.current_row())
        except DomainError as exc:
            for name, message in exc.errors.items():
                field = self._fields.get(name) or self._fields[self.main_field]
                # FAB prints each error through Jinja's gettext, which %-formats it: a literal % (e.g. an
                # email validator quoting the bad character) would raise there, so it is doubled.
                field.errors = [*field.errors, str(message).replace("%", "%%")]
            return False
        for name, value in values.items():
            if name in self._fields:
                self._fields[name].data = value
        return ok

    def raw(self) -> dict:
        return {name: field.data for name, field in self._fields.items()}


class PlainDecimalField(StringField):
    """A Decimal shown without trailing zeros (9.9750 → 9.975); parsed by the domain."""

    def _value(self):
        if isinstance(self.data, Decimal):
            return tax.format_rate(self.data)
        return super()._value()


def _text(label, description="", **kw):
    return StringField(label, description=description, widget=BS3TextFieldWidget(), **kw)


def _select(label, css="", description=""):
    return SelectField(label, description=description, choices=[], validate_choice=False,
                       widget=Select2Widget(extra_classes=css or None))


def _regions_url() -> str | None:
    if "ClientDirectoryView.regions" in current_app.view_functions:
        return url_for("ClientDirectoryView.regions", country="XX")
    return None


def _country_region_choices(form, no_country: str, no_region: str) -> None:
    """Country options, and the region options of the chosen country (regions.js refreshes them)."""
    form.country.choices = [("", no_country)] + countries()
    form.region.choices = [("", no_region)] + (regions(form.country.data) if form.country.data else [])
    url = _regions_url()
    if url:
        form.country.render_kw = {"data-regions-url": url}


class SettingsModelView(ModelView):
    """A settings ModelView: delete only by POST (FAB also accepts a cross-site GET), no file download or
    bulk-action routes (nothing here uses them). Before any route, FAB's raw inputs are checked, since FAB
    passes them to the database as they come (PostgreSQL then fails with a 500): a row id in the path must
    be a number within the id range (else 404), page_* / psize_* arguments small non-negative numbers
    (FAB's int() raises on "abc"; a negative page is a negative OFFSET) and a filter on a boolean column
    "y" (FAB compares anything else as text with the boolean column) — else 400."""

    exclude_route_methods = {"download", "action", "action_post"}
    max_page_size = 1000

    def create_blueprint(self, appbuilder, endpoint=None, static_folder=None):
        blueprint = super().create_blueprint(appbuilder, endpoint, static_folder)
        blueprint.before_request(self._check_fab_arguments)
        return blueprint

    def _check_fab_arguments(self):
        pk = (request.view_args or {}).get("pk")
        if isinstance(pk, str) and (not re.fullmatch(r"[0-9]{1,10}", pk) or int(pk) > MAX_ID):
            abort(404)
        for name, value in request.args.items(multi=True):
            if name.startswith(("page_", "psize_")):
                if not re.fullmatch(r"[0-9]{1,7}", value) or (
                    name.startswith("psize_") and int(value) > self.max_page_size
                ):
                    abort(400)
            elif name.startswith("_flt_"):
                column = name.split("_", 3)[-1]
                if column in self.datamodel.list_properties and self.datamodel.is_boolean(column) and value != "y":
                    abort(400)

    @expose("/delete/<pk>", methods=["POST"])
    @has_access
    def delete(self, pk):
        self._delete(self._deserialize_pk_if_composite(pk))
        return self.post_delete_redirect()


# --- currencies -----------------------------------------------------------------------------------------


class CurrencyForm(DomainForm):
    model = Currency
    main_field = "code"

    code = _text(_l("Code"), _l("ISO 4217, e.g. EUR, USD, CAD."))
    prefix = _text(_l("Prefix"), _l("Printed before amounts, e.g. $ or CA$."))
    suffix = _text(_l("Suffix"), _l("Printed after amounts, e.g. \" €\" (with its space)."))
    minor_units = _text(_l("Minor units"), _l("Decimal places of the currency: 2 for most, 0 for JPY."), default="2")
    exchange_rate = PlainDecimalField(
        _l("Exchange rate"), widget=BS3TextFieldWidget(),
        description=_l("Units of this currency per 1 unit of the default currency (up to 4 decimals). "
                       "Making a currency the default sets its rate to 1 and re-expresses the others."),
    )
    is_default = BooleanField(_l("Default currency"))

    def domain_check(self, current):
        return reference.check_currency(self.raw(), current)


class CurrencyView(SettingsModelView):
    datamodel = SQLAInterface(Currency)
    class_permission_name = CURRENCIES
    list_title = _l("Currencies")
    add_title = _l("Add Currency")
    edit_title = _l("Edit Currency")
    show_title = _l("Currency")
    add_form = edit_form = CurrencyForm
    list_columns = ["code", "prefix", "suffix", "minor_units", "exchange_rate", "is_default"]
    add_columns = edit_columns = show_columns = list_columns
    order_columns = ["code", "exchange_rate"]
    search_columns = ["code"]
    base_order = ("code", "asc")
    label_columns = {
        "code": _l("Code"), "prefix": _l("Prefix"), "suffix": _l("Suffix"), "minor_units": _l("Minor units"),
        "exchange_rate": _l("Exchange rate"), "is_default": _l("Default currency"),
    }
    formatters_columns = {"exchange_rate": lambda rate: tax.format_rate(rate) if rate is not None else ""}

    def pre_add(self, item):
        if item.is_default:
            try:
                reference.make_default_currency(item)
            except DomainError:
                self.datamodel.session.rollback()  # FAB flashes the refusal; the form's changes must not linger
                raise

    def pre_update(self, item):
        self.pre_add(item)

    def pre_delete(self, item):
        reference.refuse_delete_currency(item)


# --- home companies -------------------------------------------------------------------------------------

_NUMBER_HELP = _l("Tokens {YEAR} {MONTH} {DAY} {NUMBER}; {NUMBER} exactly once. A yearly reset needs {YEAR}, "
                  "a monthly one {YEAR} and {MONTH}.")


def _column_default(name: str):
    return HomeCompany.__table__.c[name].default.arg


def _numbering_fields() -> dict:
    """Format, padding and reset of each document type; a new company starts from the model's defaults."""
    fields = {}
    for doc_type in INVOICE_TYPES:
        label = DOC_TYPE_LABELS[doc_type]
        fields[f"{doc_type}_format"] = StringField(
            _l("%(type)s number format", type=label), description=_NUMBER_HELP,
            widget=BS3TextFieldWidget(), render_kw={"data-puq-example": doc_type},
            default=_column_default(f"{doc_type}_format"),
        )
        fields[f"{doc_type}_padding"] = StringField(
            _l("%(type)s number padding", type=label),
            description=_l("Digits of {NUMBER}, zero-padded (0–%(n)s).", n=numbering.MAX_PADDING),
            widget=BS3TextFieldWidget(), default=str(_column_default(f"{doc_type}_padding")),
        )
        fields[f"{doc_type}_reset"] = SelectField(
            _l("%(type)s number reset", type=label), choices=[(r, RESET_LABELS[r]) for r in NUMBER_RESETS],
            validate_choice=False, widget=Select2Widget(), default=_column_default(f"{doc_type}_reset"),
        )
    return fields


class HomeCompanyForm(DomainForm):
    model = HomeCompany
    main_field = "name"

    name = _text(_l("Name"), _l("How staff screens name it (unique)."))
    company_name = _text(_l("Legal name"), _l("Printed on documents."))
    address1 = _text(_l("Address"))
    address2 = _text(_l("Address line 2"))
    city = _text(_l("City"))
    postcode = _text(_l("Postcode"))
    country = _select(_l("Country"), css="puq-country")
    region = _select(_l("Region"), css="puq-region")
    tax_id = _text(_l("Tax ID"), _l("VAT / GST number, checked for the country."))
    bank_details = TextAreaField(_l("Bank details"), widget=BS3TextAreaFieldWidget())
    pdf_footer = TextAreaField(_l("PDF footer"), widget=BS3TextAreaFieldWidget(),
                               description=_l("Registration, court, directors… printed at the foot of each page."))
    email = _text(_l("Email"))
    phone = _text(_l("Phone"), _l("With country code, e.g. +49 30 123456."))
    website = _text(_l("Website"))
    logo = FileField(_l("Logo"), widget=FileInput(),
                     description=_l("PNG, JPEG or SVG, at most %(kb)s KB; leave empty to keep the current one.",
                                    kb=reference.LOGO_MAX_BYTES // 1024))
    remove_logo = BooleanField(_l("Remove the logo"))
    is_default = BooleanField(_l("Default home company"),
                              description=_l("Bills every client no tax rule assigns to another company."))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _country_region_choices(self, _("Choose a country"), "—")

    def domain_check(self, current):
        raw = self.raw()
        errors = {}
        values = {}
        try:
            values = reference.check_home_company(raw, current)
        except DomainError as exc:
            errors.update(exc.errors)
        upload = self.logo.data
        if isinstance(upload, FileStorage) and upload.filename:
            try:
                values["logo"] = reference.logo_data_uri(upload.stream.read(reference.LOGO_MAX_BYTES + 1))
            except DomainError as exc:
                errors.update(exc.errors)
        elif self.remove_logo.data:
            values["logo"] = ""
        else:
            values["logo"] = current.logo if current is not None else ""
        if errors:
            raise DomainError(errors)
        return values


for _name, _field in _numbering_fields().items():
    setattr(HomeCompanyForm, _name, _field)


def _number_examples(company: HomeCompany) -> Markup:
    today = clock.today()
    lines = []
    for doc_type in INVOICE_TYPES:
        fmt, padding, _reset = numbering.series_settings(company, doc_type)
        try:
            example = numbering.format_number(fmt, padding, 1, today)
        except Exception:  # noqa: BLE001  (a row edited behind the app's back)
            example = "?"
        lines.append(f"{escape(DOC_TYPE_LABELS[doc_type])}: <code>{escape(example)}</code>")
    return Markup("<br>".join(lines))


def _logo_preview(company: HomeCompany) -> Markup:
    if not (company.logo or "").startswith(tuple(f"data:{t};base64," for t in reference.LOGO_TYPES.values())):
        return Markup("—")
    return Markup('<img src="{}" alt="" style="max-height:60px;max-width:240px">').format(company.logo)


HomeCompany.number_examples = property(_number_examples)
HomeCompany.logo_preview = property(_logo_preview)

_COMPANY_DETAILS = ["name", "company_name", "address1", "address2", "city", "postcode", "country", "region", "tax_id"]
_COMPANY_CONTACT = ["email", "phone", "website"]
_COMPANY_TEXTS = ["bank_details", "pdf_footer"]
_COMPANY_NUMBERING = [f"{t}_{part}" for t in INVOICE_TYPES for part in ("format", "padding", "reset")]


class HomeCompanyView(SettingsModelView):
    datamodel = SQLAInterface(HomeCompany)
    class_permission_name = HOME_COMPANIES
    list_title = _l("Home Companies")
    add_title = _l("Add Home Company")
    edit_title = _l("Edit Home Company")
    show_title = _l("Home Company")
    add_form = edit_form = HomeCompanyForm
    add_template = f"{TEMPLATES}/company_add.html"
    edit_template = f"{TEMPLATES}/company_edit.html"
    list_columns = ["name", "company_name", "country", "tax_id", "is_default", "number_examples"]
    add_columns = edit_columns = (
        _COMPANY_DETAILS + _COMPANY_CONTACT + _COMPANY_TEXTS + ["logo", "remove_logo", "is_default"]
        + _COMPANY_NUMBERING
    )
    add_fieldsets = edit_fieldsets = [
        (_l("Legal details"), {"fields": _COMPANY_DETAILS + ["is_default"]}),
        (_l("Contact"), {"fields": _COMPANY_CONTACT}),
        (_l("Documents"), {"fields": _COMPANY_TEXTS + ["logo", "remove_logo"]}),
        (_l("Numbering"), {"fields": _COMPANY_NUMBERING}),
    ]
    show_fieldsets = [
        (_l("Legal details"), {"fields": _COMPANY_DETAILS + ["is_default"]}),
        (_l("Contact"), {"fields": _COMPANY_CONTACT}),
        (_l("Documents"), {"fields": _COMPANY_TEXTS + ["logo_preview"]}),
        (_l("Numbering"), {"fields": _COMPANY_NUMBERING + ["number_examples"]}),
    ]
    formatters_columns = {
        **{f"{t}_reset": (lambda value: RESET_LABELS.get(value, value)) for t in INVOICE_TYPES},
        "is_default": lambda value: _("Yes") if value else _("No"),
    }
    order_columns = ["name", "company_name", "country"]
    search_columns = ["name", "company_name", "country"]
    base_order = ("name", "asc")
    label_columns = {
        "name": _l("Name"), "company_name": _l("Legal name"), "address1": _l("Address"),
        "address2": _l("Address line 2"), "city": _l("City"), "postcode": _l("Postcode"), "country": _l("Country"),
        "region": _l("Region"), "tax_id": _l("Tax ID"), "bank_details": _l("Bank details"),
        "pdf_footer": _l("PDF footer"), "email": _l("Email"), "phone": _l("Phone"), "website": _l("Website"),
        "logo": _l("Logo"), "logo_preview": _l("Logo"), "remove_logo": _l("Remove the logo"),
        "is_default": _l("Default home company"), "number_examples": _l("Next numbers look like"),
        **{f"{t}_format": _l("%(type)s number format", type=DOC_TYPE_LABELS[t]) for t in INVOICE_TYPES},
        **{f"{t}_padding": _l("%(type)s number padding", type=DOC_TYPE_LABELS[t]) for t in INVOICE_TYPES},
        **{f"{t}_reset": _l("%(type)s number reset", type=DOC_TYPE_LABELS[t]) for t in INVOICE_TYPES},
    }

    def pre_add(self, item):
        if item.is_default:
            reference.make_default_company(item)

    def pre_update(self, item):
        self.pre_add(item)

    def pre_delete(self, item):
        reference.refuse_delete_company(item)


# --- tax rules ------------------------------------------------------------------------------------------


class TaxRuleForm(DomainForm):
    model = TaxRule
    main_field = "category"

    category = _select(_l("Client category"))
    country = _select(_l("Country"), css="puq-country")
    region = _select(_l("Region"), css="puq-region")
    home_company_id = _select(_l("Home company"), description=_l("The company that bills these clients."))
    tax1_name = _text(_l("Tax 1 name"), _l("e.g. VAT, GST, HST (at most 30 characters)."))
    tax1_rate = PlainDecimalField(_l("Tax 1 rate (%)"), widget=BS3TextFieldWidget())
    tax2_name = _text(_l("Tax 2 name"))
    tax2_rate = PlainDecimalField(_l("Tax 2 rate (%)"), widget=BS3TextFieldWidget())
    tax3_name = _text(_l("Tax 3 name"))
    tax3_rate = PlainDecimalField(_l("Tax 3 rate (%)"), widget=BS3TextFieldWidget())

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.category.choices = list(tax.CATEGORY_LABELS.items())
        _country_region_choices(self, _("Any country"), _("Any region"))
        companies = get_session().execute(select(HomeCompany.id, HomeCompany.name).order_by(HomeCompany.name))
        self.home_company_id.choices = [("", "—")] + [(str(cid), name) for cid, name in companies]
        if self.home_company_id.data is not None:
            self.home_company_id.data = str(self.home_company_id.data)

    def domain_check(self, current):
        return tax.check_rule(self.raw(), current.id if current is not None else None)


TaxRule.category_label = property(lambda self: tax.CATEGORY_LABELS.get(self.category, self.category))
TaxRule.taxes_text = property(tax.describe_taxes)


class TaxRuleView(SettingsModelView):
    datamodel = SQLAInterface(TaxRule)
    class_permission_name = TAX_RULES
    list_title = _l("Tax Rules")
    add_title = _l("Add Tax Rule")
    edit_title = _l("Edit Tax Rule")
    show_title = _l("Tax Rule")
    add_form = edit_form = TaxRuleForm
    list_template = f"{TEMPLATES}/tax_rules.html"
    add_template = f"{TEMPLATES}/tax_rule_add.html"
    edit_template = f"{TEMPLATES}/tax_rule_edit.html"
    list_columns = ["category_label", "country", "region", "home_company", "taxes_text"]
    add_columns = edit_columns = [
        "category", "country", "region", "home_company_id",
        "tax1_name", "tax1_rate", "tax2_name", "tax2_rate", "tax3_name", "tax3_rate",
    ]
    show_columns = ["category_label", "country", "region", "home_company", "taxes_text"]
    order_columns = ["country", "region"]
    search_columns = ["category", "country", "region"]
    base_order = ("country", "asc")
    page_size = 50
    label_columns = {
        "category": _l("Client category"), "category_label": _l("Client category"), "country": _l("Country"),
        "region": _l("Region"), "home_company": _l("Home company"), "home_company_id": _l("Home company"),
        "taxes_text": _l("Taxes"),
        **{f"tax{i}_name": _l("Tax %(n)s name", n=i) for i in (1, 2, 3)},
        **{f"tax{i}_rate": _l("Tax %(n)s rate (%%)", n=i) for i in (1, 2, 3)},
    }
    formatters_columns = {
        "country": lambda value: value or _("Any country"),
        "region": lambda value: value or _("Any region"),
    }

    def render_template(self, template, **kwargs):
        if template == self.list_template:
            kwargs["install_companies"] = get_session().execute(
                select(HomeCompany.id, HomeCompany.name, HomeCompany.country).order_by(HomeCompany.name)
            ).all()
            kwargs["can_install"] = has_perm("can_add", TAX_RULES) and has_perm("can_edit", TAX_RULES)
        return super().render_template(template, **kwargs)

    @expose("/install", methods=["POST"])
    @has_access
    @permission_name("add")
    def install(self):
        """Install (or refresh) the EU VAT or Canada rule set for the chosen home company."""
        if not has_perm("can_edit", TAX_RULES):  # it also rewrites existing rules of the same scope
            flash(_("You may not change existing tax rules."), "danger")
            return redirect(url_for(".list"))
        ruleset = request.form.get("ruleset", "")
        installer = {"eu": tax_rulesets.install_eu_rules, "canada": tax_rulesets.install_canada_rules}.get(ruleset)
        try:
            company_id = parse_id(request.form.get("home_company_id"), "home_company_id", required=True)
            company = get_session().get(HomeCompany, company_id)
            if installer is None or company is None:
                raise DomainError(_("Choose a home company and a rule set."))
            with transaction():
                result = installer(company)
        except DomainError as exc:
            flash(" ".join(exc.errors.values()), "danger")
            return redirect(url_for(".list"))
        flash(_("Rules installed for %(company)s: %(created)s created, %(updated)s updated, %(unchanged)s unchanged.",
                company=company.name, created=result.created, updated=result.updated, unchanged=result.unchanged),
              "success")
        return redirect(url_for(".list"))


# --- number series --------------------------------------------------------------------------------------


class NumberSeriesView(BaseView):
    """Every document number series with its last number, the documents issued, and any gap."""

    route_base = "/billing/number-series"
    class_permission_name = BILLING
    base_permissions = list(BILLING_PERMS)
    method_permission_name = {"series": "show"}
    default_view = "series"

    @expose("/")
    @has_access
    def series(self):
        rows = numbering.series_report()
        return self.render_template(
            f"{TEMPLATES}/number_series.html", rows=rows, doc_type_labels=DOC_TYPE_LABELS,
            title=_("Number Series"),
        )


def register(appbuilder) -> None:
    appbuilder.add_view(CurrencyView, "Currencies", label=_l("Currencies"), icon="fa-money", category="Billing",
                        category_label=_l("Billing"))
    appbuilder.add_view(HomeCompanyView, "Home Companies", label=_l("Home Companies"), icon="fa-building",
                        category="Billing")
    appbuilder.add_view(TaxRuleView, "Tax Rules", label=_l("Tax Rules"), icon="fa-percent", category="Billing")
    appbuilder.add_view(NumberSeriesView, "Number Series", label=_l("Number Series"), icon="fa-list-ol",
                        category="Billing")
