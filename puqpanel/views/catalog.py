"""Staff catalog: Products (a FAB ModelView) and each product's price page (custom routes on the same view,
so the same PRODUCTS permissions apply: can_show to see the prices, can_edit to change them).

No related views, no relation dropdowns: the product form edits plain columns only, and price rows are
always looked up together with their product id (a price id of another product is a 404).
"""
from __future__ import annotations

from flask import abort, flash, redirect, request, url_for
from flask_appbuilder import expose
from flask_appbuilder.fieldwidgets import BS3TextAreaFieldWidget, BS3TextFieldWidget, Select2Widget
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_appbuilder.security.decorators import has_access
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from markupsafe import Markup
from sqlalchemy import func, select
from wtforms import BooleanField, IntegerField, SelectField, TextAreaField
from wtforms.validators import InputRequired, NumberRange, ValidationError

from ..billing import catalog, provisioning
from ..domain import DomainError, NotFound, activity
from ..domain.session import get_session
from ..domain.validation import MAX_ID
from ..models import PERIODS, Currency, Product, Service
from ..security import PRODUCTS, has_perm
from .billing_settings import SettingsModelView

ID = f"int(max={MAX_ID})"
_PRODUCT_FIELDS = ("name", "description", "module", "hourly_billing", "termination_delay_hours",
                   "cancellation_delay_hours", "convert_prices", "retired")


def _module_choice(form, field):
    if field.data not in provisioning.names():
        raise ValidationError(_l("Not a valid choice."))


def _delay_field(label, description):
    return IntegerField(label, validators=[InputRequired(), NumberRange(min=0, max=catalog.MAX_DELAY_HOURS)],
                        default=48, description=description, widget=BS3TextFieldWidget())


# The list shows a "Prices" link per product (FAB list columns may name model properties).
Product.prices_link = property(
    lambda self: Markup('<a class="btn btn-xs btn-default puq-prices-link" href="{}">{}</a>').format(
        url_for("ProductView.prices", pk=self.id), _("Prices")
    )
)


class ProductView(SettingsModelView):
    datamodel = SQLAInterface(Product)
    route_base = "/products"
    class_permission_name = PRODUCTS
    base_permissions = ["can_list", "can_show", "can_add", "can_edit", "can_delete"]
    method_permission_name = {
        "prices": "show",
        "price_add": "edit",
        "price_update": "edit",
        "price_delete": "edit",
        "convert": "edit",
    }
    # No file download or bulk-action routes, delete only by POST, FAB's raw inputs checked: SettingsModelView.
    list_title = _l("Products")
    add_title = _l("Add Product")
    edit_title = _l("Edit Product")
    show_title = _l("Product")
    list_columns = ["name", "module", "hourly_billing", "convert_prices", "retired", "prices_link"]
    add_columns = edit_columns = list(_PRODUCT_FIELDS)
    show_columns = list(_PRODUCT_FIELDS) + ["created_at", "updated_at"]
    order_columns = ["name", "module", "hourly_billing", "convert_prices", "retired"]
    search_columns = ["name", "module", "retired"]
    base_order = ("name", "asc")
    label_columns = {
        "name": _l("Name"),
        "description": _l("Description"),
        "module": _l("Provisioning module"),
        "hourly_billing": _l("Hourly billing"),
        "termination_delay_hours": _l("Termination delay (hours)"),
        "cancellation_delay_hours": _l("Cancellation delay (hours)"),
        "convert_prices": _l("Convert prices"),
        "retired": _l("Retired"),
        "prices_link": _l("Prices"),
        "created_at": _l("Created"),
        "updated_at": _l("Updated"),
    }
    # Explicit fields where FAB would demand input for every NOT NULL column (an unticked box, an empty
    # description and a 0-hour delay are valid answers).
    add_form_extra_fields = edit_form_extra_fields = {
        "description": TextAreaField(_l("Description"), widget=BS3TextAreaFieldWidget()),
        "module": SelectField(_l("Provisioning module"), choices=provisioning.choices, default="none",
                              validators=[InputRequired(), _module_choice], widget=Select2Widget()),
        "hourly_billing": BooleanField(_l("Hourly billing"), description=_l(
            "Monthly prices are charged per started hour: monthly ÷ (days in the month × 24).")),
        "termination_delay_hours": _delay_field(_l("Termination delay (hours)"), _l(
            "How long a suspended service waits before it is terminated.")),
        "cancellation_delay_hours": _delay_field(_l("Cancellation delay (hours)"), _l(
            "How long an unpaid pending service waits before it is cancelled.")),
        "convert_prices": BooleanField(_l("Convert prices"), description=_l(
            "Prices in other currencies are derived from the default currency's by exchange rate (on save, with "
            "the Convert prices button, and by the billing engine).")),
        "retired": BooleanField(_l("Retired"), description=_l(
            "A retired product can't be ordered any more; its services keep running.")),
    }

    # -- FAB hooks: activity log, conversion, refusing to delete a product in use ------------------------------
    def _after_save(self, item: Product, verb: str) -> None:
        session = get_session()
        activity.record(f"product.{verb}", object_type="product", object_id=item.id,
                        changes=activity.snapshot(item, _PRODUCT_FIELDS))
        session.commit()
        if item.convert_prices:
            try:
                changed = catalog.convert_product_prices(item)
            except DomainError as exc:
                flash(" ".join(exc.errors.values()), "warning")
            else:
                flash(_("%(count)d converted prices updated.", count=changed), "info")

    def post_add(self, item):
        self._after_save(item, "create")

    def post_update(self, item):
        self._after_save(item, "update")

    def pre_delete(self, item):
        used = get_session().scalar(select(func.count()).select_from(Service).where(Service.product_id == item.id))
        if used:
            raise DomainError(str(_l("%(count)d services use this product; retire it instead.", count=used)))

    def post_delete(self, item):
        activity.record("product.delete", object_type="product", object_id=item.id, changes={"name": item.name})
        get_session().commit()

    # -- prices page -----------------------------------------------------------------------------------------
    @staticmethod
    def _product(pk: int) -> Product:
        product = get_session().get(Product, pk)
        if product is None:
            abort(404)
        return product

    def _render_prices(self, product: Product, modal: dict | None = None, status: int = 200):
        currencies = list(get_session().scalars(select(Currency).order_by(Currency.is_default.desc(), Currency.code)))
        default = next((c for c in currencies if c.is_default), None)
        return (
            self.render_template(
                "puqpanel/services/product_prices.html",
                product=product,
                prices=catalog.product_prices(product),
                usage=catalog.services_per_price(product),
                currencies=currencies,
                default_currency=default,
                periods=PERIODS,
                period_label=catalog.period_label,
                modal=modal,
                can_edit=has_perm("can_edit", PRODUCTS),
                title=_("Prices of %(name)s", name=product.name),
            ),
            status,
        )

    @expose(f"/prices/<{ID}:pk>")
    @has_access
    def prices(self, pk: int):
        return self._render_prices(self._product(pk))

    @staticmethod
    def _form() -> dict[str, str]:
        return {k: request.form.get(k, "") for k in ("currency_id", "period", "setup", "base", "idle")}

    def _back(self, product: Product):
        return redirect(url_for("ProductView.prices", pk=product.id))

    @expose(f"/prices/<{ID}:pk>/add", methods=["POST"])
    @has_access
    def price_add(self, pk: int):
        product = self._product(pk)
        data = self._form()
        try:
            catalog.add_price(product, data)
        except DomainError as exc:
            return self._render_prices(product, {"id": "new", "values": data, "errors": exc.errors}, 400)
        flash(_("Price added."), "success")
        return self._back(product)

    @expose(f"/prices/<{ID}:pk>/<{ID}:price_id>/update", methods=["POST"])
    @has_access
    def price_update(self, pk: int, price_id: int):
        product = self._product(pk)
        data = self._form()
        try:
            changes = catalog.update_price(product, price_id, data)
        except NotFound:
            abort(404)
        except DomainError as exc:
            return self._render_prices(product, {"id": price_id, "values": data, "errors": exc.errors}, 400)
        flash(_("Price saved.") if changes else _("Nothing changed."), "success" if changes else "info")
        return self._back(product)

    @expose(f"/prices/<{ID}:pk>/<{ID}:price_id>/delete", methods=["POST"])
    @has_access
    def price_delete(self, pk: int, price_id: int):
        product = self._product(pk)
        try:
            catalog.delete_price(product, price_id)
        except NotFound:
            abort(404)
        except DomainError as exc:
            return self._render_prices(product, {"id": "", "values": {}, "errors": exc.errors}, 400)
        flash(_("Price deleted."), "success")
        return self._back(product)

    @expose(f"/prices/<{ID}:pk>/convert", methods=["POST"])
    @has_access
    def convert(self, pk: int):
        product = self._product(pk)
        try:
            changed = catalog.convert_product_prices(product)
        except DomainError as exc:
            return self._render_prices(product, {"id": "", "values": {}, "errors": exc.errors}, 400)
        flash(_("%(count)d converted prices updated.", count=changed), "success")
        return self._back(product)


def register(appbuilder) -> None:
    appbuilder.add_view(ProductView, "Products", label=_l("Products"), icon="fa-cube", category="Billing",
                        category_label=_l("Billing"))
