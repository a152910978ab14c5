"""Catalog: price rows, conversion by exchange rate, orderable prices; the Products screen and price page."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from conftest import csrf_token
from puqpanel.billing import catalog, clock
from puqpanel.billing import services as svc
from puqpanel.domain import DomainError
from puqpanel.models import ActivityLog, Currency, Product, ProductPrice, Service

D = Decimal
T = dt.datetime(2026, 3, 1, 9, 0)


@pytest.fixture()
def currencies(db, eur):
    usd = Currency(code="USD", prefix="$", exchange_rate=D("1.1"))
    gbp = Currency(code="GBP", prefix="£", exchange_rate=D("0.85"))
    pln = Currency(code="PLN", suffix=" zł", exchange_rate=D("4.3217"))
    db.add_all([usd, gbp, pln])
    db.commit()
    return {"EUR": eur, "USD": usd, "GBP": gbp, "PLN": pln}


@pytest.fixture()
def product(db, currencies):
    p = Product(name="VPS M", convert_prices=True)
    db.add(p)
    db.flush()
    db.add_all([
        ProductPrice(product_id=p.id, currency_id=currencies["EUR"].id, period="monthly", setup=D("5"), base=D("10"),
                     idle=D("1.2345")),
        ProductPrice(product_id=p.id, currency_id=currencies["EUR"].id, period="annually", base=D("99.99")),
    ])
    db.commit()
    return p


def price_map(db, product) -> dict[tuple[str, str], tuple[Decimal, Decimal, Decimal]]:
    db.expire_all()
    return {(p.currency.code, p.period): (p.setup, p.base, p.idle)
            for p in db.scalars(select(ProductPrice).where(ProductPrice.product_id == product.id))}


# -- amounts ----------------------------------------------------------------------------------------------------
def test_parse_amounts(app, db):
    assert catalog.parse_amounts({"base": "10", "setup": "", "idle": " "}) == {
        "setup": D("0.0000"), "base": D("10.0000"), "idle": D("0.0000")}
    assert catalog.parse_amounts({"base": "0", "setup": "1,5", "idle": "0.0001"}) == {
        "setup": D("1.5000"), "base": D("0.0000"), "idle": D("0.0001")}
    with pytest.raises(DomainError) as info:
        catalog.parse_amounts({"base": "", "setup": "-1", "idle": "0.00001"})
    assert set(info.value.errors) == {"base", "setup", "idle"}
    for bad in ("abc", "NaN", "Infinity", "1e20", "-0.01", "1.23456"):
        with pytest.raises(DomainError):
            catalog.parse_amounts({"base": bad})


def test_add_update_delete_price(app, db, currencies):
    product = Product(name="Mail")
    db.add(product)
    db.commit()
    price = catalog.add_price(product, {"currency_id": str(currencies["USD"].id), "period": "weekly", "base": "2.5"})
    assert (price.currency_id, price.period, price.base, price.setup) == (currencies["USD"].id, "weekly", D("2.5"), D(0))
    with pytest.raises(DomainError) as info:  # one price per currency × period
        catalog.add_price(product, {"currency_id": str(currencies["USD"].id), "period": "weekly", "base": "3"})
    assert "period" in info.value.errors
    with pytest.raises(DomainError) as info:
        catalog.add_price(product, {"currency_id": "999", "period": "fortnightly", "base": "x"})
    assert set(info.value.errors) == {"currency_id", "period", "base"}
    assert catalog.update_price(product, price.id, {"base": "2.5", "setup": "", "idle": ""}) == {}
    assert catalog.update_price(product, price.id, {"base": "3", "setup": "1"}) == {
        "base": ["2.5000", "3.0000"], "setup": ["0.0000", "1.0000"]}
    # in use by a service: can't be deleted
    client_currency_price = catalog.add_price(product, {"currency_id": str(currencies["EUR"].id), "period": "monthly",
                                                        "base": "1"})
    from puqpanel.domain.clients import NewClient, create_client

    client, _pw = create_client(NewClient(email="c@example.com", firstname="A", lastname="B", address1="S 1",
                                          city="Berlin", country="DE"))
    svc.add_service(client, client_currency_price.id)
    with pytest.raises(DomainError, match="1 services use this price"):
        catalog.delete_price(product, client_currency_price.id)
    catalog.delete_price(product, price.id)
    assert db.get(ProductPrice, price.id) is None
    other = Product(name="Other")
    db.add(other)
    db.commit()
    with pytest.raises(DomainError):  # NotFound: the price belongs to another product
        catalog.update_price(other, client_currency_price.id, {"base": "1"})
    actions = list(db.scalars(select(ActivityLog.action).where(ActivityLog.object_type == "product")
                              .order_by(ActivityLog.id)))
    assert actions == ["product.price_add", "product.price_update", "product.price_add", "product.price_delete"]


# -- conversion ----------------------------------------------------------------------------------------------------
def test_convert_product_prices_by_exchange_rate(app, db, product, currencies):
    with clock.frozen_at(T):
        assert catalog.convert_product_prices(product) == 6
    prices = price_map(db, product)
    assert prices[("USD", "monthly")] == (D("5.5000"), D("11.0000"), D("1.3580"))  # 1.2345 × 1.1 = 1.35795 → up
    assert prices[("GBP", "monthly")] == (D("4.2500"), D("8.5000"), D("1.0493"))  # 1.2345 × 0.85 = 1.049325
    assert prices[("PLN", "monthly")] == (D("21.6085"), D("43.2170"), D("5.3351"))  # 1.2345 × 4.3217 = 5.33513865
    assert prices[("USD", "annually")] == (D("0"), D("109.9890"), D("0"))
    assert prices[("PLN", "annually")][1] == D("432.1268")  # 99.99 × 4.3217 = 432.126783
    converted = db.scalars(select(ProductPrice.converted_at).where(ProductPrice.currency_id != currencies["EUR"].id))
    assert set(converted) == {T}
    # a re-run with nothing changed changes nothing
    assert catalog.convert_product_prices(product) == 0
    # a new default price and a new rate are picked up
    currencies["USD"].exchange_rate = D("1.2")
    db.commit()
    catalog.update_price(product, next(p.id for p in catalog.prices_for(product, currencies["EUR"])
                                       if p.period == "monthly"), {"base": "20", "setup": "5", "idle": "1.2345"})
    assert catalog.convert_product_prices(product) == 4  # USD × 2 periods + GBP and PLN monthly
    prices = price_map(db, product)
    assert prices[("USD", "monthly")] == (D("6.0000"), D("24.0000"), D("1.4814"))
    assert prices[("GBP", "monthly")][1] == D("17.0000")


def test_conversion_beyond_the_money_range_is_refused(app, db, staff, make_browser, product, currencies):
    """A default price × a large exchange rate beyond MONEY_MAX was a 500 (SQLite's scaled BIGINT overflows
    at 9.2e14, PostgreSQL's NUMERIC(20,4) at 1e16); now refused, nothing written."""
    db.add(Currency(code="IDR", exchange_rate=D("17000")))
    monthly = next(p for p in catalog.prices_for(product, currencies["EUR"]) if p.period == "monthly")
    monthly.base = D("99999999999")
    db.commit()
    before = price_map(db, product)
    with pytest.raises(DomainError, match="converted to IDR is too large"):
        catalog.convert_product_prices(product)
    resp = make_browser("admin").post(f"/products/prices/{product.id}/convert")
    assert resp.status_code == 400 and "converted to IDR is too large" in resp.text
    assert price_map(db, product) == before


def test_converted_prices_are_read_only_and_conversion_needs_a_source(app, db, product, currencies):
    with pytest.raises(DomainError, match="converted from the default currency"):
        catalog.add_price(product, {"currency_id": str(currencies["USD"].id), "period": "monthly", "base": "1"})
    catalog.convert_product_prices(product)
    usd = next(p for p in catalog.prices_for(product, currencies["USD"]) if p.period == "monthly")
    with pytest.raises(DomainError, match="converted from the default currency"):
        catalog.update_price(product, usd.id, {"base": "1"})
    plain = Product(name="No conversion")
    empty = Product(name="Nothing in EUR", convert_prices=True)
    db.add_all([plain, empty])
    db.commit()
    with pytest.raises(DomainError, match="does not convert"):
        catalog.convert_product_prices(plain)
    with pytest.raises(DomainError, match="no price in the default currency"):
        catalog.convert_product_prices(empty)
    # convert_all_prices skips what can't convert and converts the rest
    currencies["GBP"].exchange_rate = D("0.9")
    db.commit()
    assert catalog.convert_all_prices() == 2


def test_prices_for_and_orderable_prices(app, db, product, currencies):
    catalog.convert_product_prices(product)
    retired = Product(name="Old", retired=True)
    cheap = Product(name="A cheap one")
    db.add_all([retired, cheap])
    db.flush()
    db.add_all([
        ProductPrice(product_id=retired.id, currency_id=currencies["EUR"].id, period="monthly", base=D("1")),
        ProductPrice(product_id=cheap.id, currency_id=currencies["EUR"].id, period="triennially", base=D("1")),
        ProductPrice(product_id=cheap.id, currency_id=currencies["EUR"].id, period="one_time", base=D("1")),
    ])
    db.commit()
    assert [p.period for p in catalog.prices_for(product, currencies["EUR"])] == ["monthly", "annually"]
    orderable = catalog.orderable_prices(currencies["EUR"])
    assert [(p.product.name, p.period) for p in orderable] == [
        ("A cheap one", "one_time"), ("A cheap one", "triennially"), ("VPS M", "monthly"), ("VPS M", "annually")]
    assert [p.currency.code for p in catalog.orderable_prices(currencies["USD"])] == ["USD", "USD"]


# -- Products screen -------------------------------------------------------------------------------------------
PRODUCT_FORM = {"name": "Web Hosting", "description": "", "module": "none", "termination_delay_hours": "48",
                "cancellation_delay_hours": "24"}


def test_products_screen_add_edit_and_convert_on_save(app, db, staff, make_browser, currencies):
    billing = make_browser("billing")
    assert billing.get("/products/list/").status_code == 200
    resp = billing.post_form("/products/add", dict(PRODUCT_FORM, hourly_billing="y"))
    assert resp.status_code == 302
    product = db.scalar(select(Product).where(Product.name == "Web Hosting"))
    assert (product.hourly_billing, product.convert_prices, product.cancellation_delay_hours, product.module) == (
        True, False, 24, "none")
    # bad values are refused by the form (FAB answers 200 with the errors under the fields)
    for bad, message in (({"termination_delay_hours": "-1"}, "Number must be between 0 and 87600."),
                         ({"termination_delay_hours": "abc"}, "Not a valid integer value."),
                         ({"cancellation_delay_hours": "9999999"}, "Number must be between 0 and 87600."),
                         ({"module": "evil"}, "Not a valid choice"),
                         ({"name": ""}, "This field is required."),
                         ({"name": "Web Hosting"}, "Already exists.")):
        resp = billing.post_form("/products/add", dict(PRODUCT_FORM, **bad))
        assert resp.status_code == 200 and "alert alert-danger" in resp.text and message in resp.text, bad
    assert db.scalar(select(func.count()).select_from(Product)) == 1
    # zero delays are valid
    resp = billing.post_form(f"/products/edit/{product.id}",
                             dict(PRODUCT_FORM, termination_delay_hours="0", convert_prices="y"))
    assert resp.status_code == 302
    db.expire_all()
    product = db.get(Product, product.id)
    assert product.termination_delay_hours == 0 and product.convert_prices and not product.hourly_billing
    # the list links to the price page; saving with conversion on converts (here: no default price yet)
    html = billing.get("/products/list/").text
    assert f"/products/prices/{product.id}" in html
    assert "The product has no price in the default currency (EUR)." in html  # the flash of the save
    db.add(ProductPrice(product_id=product.id, currency_id=currencies["EUR"].id, period="monthly", base=D("4")))
    db.commit()
    resp = billing.post_form(f"/products/edit/{product.id}", dict(PRODUCT_FORM, description="Fast", convert_prices="y"))
    assert resp.status_code == 302
    assert "3 converted prices updated." in billing.get("/products/list/").text
    assert price_map(db, product)[("GBP", "monthly")] == (D("0"), D("3.4000"), D("0"))
    actions = set(db.scalars(select(ActivityLog.action).where(ActivityLog.object_type == "product")))
    assert {"product.create", "product.update"} <= actions


def test_product_in_use_is_not_deleted(app, db, staff, make_browser, new_client, currencies):
    product = Product(name="Used")
    db.add(product)
    db.flush()
    price = ProductPrice(product_id=product.id, currency_id=currencies["EUR"].id, period="monthly", base=D("1"))
    db.add(price)
    db.commit()
    svc.add_service(new_client(), price.id)
    admin = make_browser("admin")
    resp = admin.post_form(f"/products/delete/{product.id}", {}, form_url="/products/list/", follow_redirects=True)
    assert resp.status_code == 200 and "retire it instead" in resp.text
    assert db.get(Product, product.id) is not None
    unused = Product(name="Unused")
    db.add(unused)
    db.commit()
    assert admin.get(f"/products/delete/{unused.id}").status_code == 405
    assert admin.get("/products/download/x.csv").status_code == 404
    assert make_browser("support").post(f"/products/delete/{unused.id}", {}).status_code == 403
    assert db.get(Product, unused.id) is not None
    admin.post_form(f"/products/delete/{unused.id}", {}, form_url="/products/list/")
    db.expire_all()
    assert db.get(Product, unused.id) is None


def test_price_page_add_update_delete_convert(app, db, staff, make_browser, product, currencies):
    admin = make_browser("billing")
    page = f"/products/prices/{product.id}"
    resp = admin.get(page)
    assert resp.status_code == 200 and "99.9900" in resp.text and "Convert prices" in resp.text
    # add: converted currencies are refused, bad amounts and duplicates are 400 with the message
    resp = admin.post_form(f"{page}/add", {"currency_id": str(currencies["USD"].id), "period": "daily", "base": "1"},
                           form_url=page)
    assert resp.status_code == 400 and "converted from the default currency" in resp.text
    resp = admin.post_form(f"{page}/add", {"currency_id": str(currencies["EUR"].id), "period": "daily",
                                           "base": "-1", "setup": "1.23456"}, form_url=page)
    assert resp.status_code == 400
    assert "The amount must not be negative." in resp.text and "At most 4 decimal places." in resp.text
    assert '$("#price-modal-new").modal("show")' in resp.text
    resp = admin.post_form(f"{page}/add", {"currency_id": str(currencies["EUR"].id), "period": "monthly",
                                           "base": "1"}, form_url=page)
    assert resp.status_code == 400 and "already has a Monthly price in EUR" in resp.text
    for bad in ({"currency_id": "abc", "period": "daily", "base": "1"},
                {"currency_id": "99999999999", "period": "daily", "base": "1"},
                {"currency_id": str(currencies["EUR"].id), "period": "<script>", "base": "1"}):
        assert admin.post_form(f"{page}/add", bad, form_url=page).status_code == 400
    resp = admin.post_form(f"{page}/add", {"currency_id": str(currencies["EUR"].id), "period": "daily",
                                           "base": "0.5", "setup": "", "idle": ""}, form_url=page)
    assert resp.status_code == 302
    daily = next(p for p in catalog.prices_for(product, currencies["EUR"]) if p.period == "daily")
    assert daily.base == D("0.5")
    # update
    resp = admin.post_form(f"{page}/{daily.id}/update", {"base": "abc"}, form_url=page)
    assert resp.status_code == 400 and "Enter an amount" in resp.text
    assert admin.post_form(f"{page}/{daily.id}/update", {"base": "0.75", "idle": "0.1"},
                           form_url=page).status_code == 302
    db.expire_all()
    assert (db.get(ProductPrice, daily.id).base, db.get(ProductPrice, daily.id).idle) == (D("0.75"), D("0.1"))
    # convert
    assert admin.post_form(f"{page}/convert", {}, form_url=page).status_code == 302
    assert price_map(db, product)[("USD", "daily")] == (D("0"), D("0.8250"), D("0.1100"))
    # delete
    assert admin.post_form(f"{page}/{daily.id}/delete", {}, form_url=page).status_code == 302
    db.expire_all()
    assert db.get(ProductPrice, daily.id) is None


def test_price_page_ids_and_permissions(app, db, staff, make_browser, product, currencies):
    other = Product(name="Other")
    db.add(other)
    db.flush()
    foreign = ProductPrice(product_id=other.id, currency_id=currencies["EUR"].id, period="monthly", base=D("1"))
    db.add(foreign)
    db.commit()
    page = f"/products/prices/{product.id}"
    posts = [(f"{page}/add", {"currency_id": str(currencies["EUR"].id), "period": "daily", "base": "1"}),
             (f"{page}/{foreign.id}/update", {"base": "2"}),
             (f"{page}/{foreign.id}/delete", {}),
             (f"{page}/convert", {})]

    def state():
        db.expire_all()
        return sorted(db.execute(select(ProductPrice.id, ProductPrice.base, ProductPrice.converted_at)).all())

    before = state()
    admin = make_browser("admin")
    # a price of another product through this product's URL: 404
    assert admin.post(f"{page}/{foreign.id}/update", {"base": "2"}).status_code == 404
    assert admin.post(f"{page}/{foreign.id}/delete", {}).status_code == 404
    assert admin.get("/products/prices/999999").status_code == 404
    assert admin.post("/products/prices/999999/convert", {}).status_code == 404
    assert admin.get("/products/prices/99999999999").status_code == 404
    for url, data in posts:
        assert admin.get(url).status_code == 405, url
        assert admin.client.post(url, data=data).status_code == 400, url  # CSRF
    for role in ("support", "manager1"):
        browser = make_browser(role)
        assert browser.get("/products/list/").status_code == 403
        assert browser.get(page).status_code == 403
        for url, data in posts:
            assert browser.post(url, data).status_code == 403, (role, url)
    assert state() == before
    token_page = admin.get(page)
    assert csrf_token(token_page.text)


def test_products_fab_raw_arguments_are_checked(app, db, staff, make_browser, product):
    """Ids beyond the integer range, bad page arguments and a text filter on the boolean "retired" column
    were 500s on PostgreSQL (FAB passes them to the database as they come)."""
    b = make_browser("admin")
    for pk in ("99999999999", "abc", "-1"):
        assert b.get(f"/products/show/{pk}").status_code == 404
        assert b.get(f"/products/edit/{pk}").status_code == 404
        assert b.post(f"/products/edit/{pk}", {"name": "x"}).status_code == 404
        assert b.post(f"/products/delete/{pk}").status_code == 404
    for query in ("page_ProductView=-1", "page_ProductView=x", "psize_ProductView=-5", "_flt_0_retired=abc"):
        assert b.get(f"/products/list/?{query}").status_code == 400, query
    listing = b.get("/products/list/?_flt_0_retired=y")
    assert listing.status_code == 200 and "VPS M" not in listing.text
    assert "VPS M" in b.get("/products/list/?_flt_1_retired=y").text  # not equal to retired
    db.expire_all()
    assert db.get(Product, product.id).name == "VPS M"


def test_price_page_read_only_role(app, db, staff, make_browser, product):
    """can_show without can_edit on Product: the page shows prices without forms; POSTs are 403."""
    from conftest import make_user

    sm = app.appbuilder.sm
    role = sm.add_role("Catalog reader")
    for perm in ("can_list", "can_show"):
        sm.add_permission_role(role, sm.find_permission_view_menu(perm, "Product"))
    db.commit()
    make_user("reader", "Catalog reader")
    reader = make_browser("reader")
    resp = reader.get(f"/products/prices/{product.id}")
    assert resp.status_code == 200 and "99.9900" in resp.text
    assert "Convert prices" not in resp.text and "price-modal-new" not in resp.text
    assert reader.post(f"/products/prices/{product.id}/convert", {}).status_code == 403


def test_add_service_offers_only_orderable_prices(app, db, staff, make_browser, new_client, product, currencies):
    catalog.convert_product_prices(product)
    retired = Product(name="Retired plan", retired=True)
    db.add(retired)
    db.flush()
    old = ProductPrice(product_id=retired.id, currency_id=currencies["EUR"].id, period="monthly", base=D("1"))
    db.add(old)
    db.commit()
    client = new_client()
    html = make_browser("admin").get(f"/clients/{client.id}/services").text
    eur_ids = {p.id for p in catalog.prices_for(product, currencies["EUR"])}
    usd_ids = {p.id for p in catalog.prices_for(product, currencies["USD"])}
    for pid in eur_ids:
        assert f'value="{pid}" data-product' in html
    for pid in usd_ids | {old.id}:
        assert f'value="{pid}" data-product' not in html
    assert db.scalar(select(func.count()).select_from(Service)) == 0
