"""VIES checks against a real local HTTP server that answers like the VIES REST API."""
from __future__ import annotations

import json
import socket
import threading
import time
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import create_engine, select, text

from puqpanel.billing import tax_rulesets, vies
from puqpanel.billing.tax import tax_for_client
from puqpanel.domain.profile import profile_form_data, update_profile
from puqpanel.models import ActivityLog, Client, HomeCompany

FR_VAT = "FR40303265045"
FR_OTHER = "FR61954506077"


class FakeVies:
    """answers[(cc, number)] = (http status, body: dict | str | None, delay seconds); default: invalid."""

    def __init__(self):
        self.answers: dict[tuple[str, str], tuple[int, object, float]] = {}
        self.requests: list[str] = []
        self.on_request = None
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                fake.requests.append(self.path)
                parts = self.path.strip("/").split("/")[-4:]  # {base}/ms/{CC}/vat/{number}
                key = (parts[1], parts[3]) if len(parts) == 4 and parts[0] == "ms" and parts[2] == "vat" else None
                status, body, delay = fake.answers.get(key, (200, answer(False, "INVALID"), 0))
                if fake.on_request:
                    fake.on_request()
                if delay:
                    time.sleep(delay)
                payload = body if isinstance(body, str) else json.dumps(body) if body is not None else ""
                data = payload.encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/taxation_customs/vies/rest-api"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, tax_id: str, status: int, body, delay: float = 0):
        self.answers[(tax_id[:2], tax_id[2:])] = (status, body, delay)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def answer(valid: bool, user_error: str, name: str = "---", address: str = "---") -> dict:
    return {"isValid": valid, "requestDate": "2026-11-23T10:00:00.000Z", "userError": user_error, "name": name,
            "address": address, "requestIdentifier": "", "originalVatNumber": "", "vatNumber": "",
            "viesApproximate": {"name": "---", "street": "---", "postalCode": "---", "city": "---"}}


@pytest.fixture()
def server(app):
    fake = FakeVies()
    saved = {key: app.config.get(key) for key in ("PUQPANEL_VIES_URL", "PUQPANEL_VIES_TIMEOUT")}
    app.config["PUQPANEL_VIES_URL"] = fake.url
    app.config["PUQPANEL_VIES_TIMEOUT"] = 2
    yield fake
    fake.close()
    for key, value in saved.items():
        if value is None:
            app.config.pop(key, None)
        else:
            app.config[key] = value


@pytest.fixture()
def de_company(db):
    row = HomeCompany(name="Demo GmbH", company_name="Demo GmbH", country="DE", region="DE-BE", is_default=True)
    db.add(row)
    db.commit()
    tax_rulesets.install_eu_rules(row)
    db.commit()
    return row


def french(new_client, tax_id=FR_VAT):
    return new_client(country="FR", region="", city="Paris", phone="", company_name="Exemple SARL", tax_id=tax_id)


def vies_logs(db, client):
    return db.scalars(select(ActivityLog).where(ActivityLog.client_id == client.id, ActivityLog.action == "client.vies")
                      .order_by(ActivityLog.id)).all()


def fresh(db, client) -> Client:
    db.expire_all()
    return db.get(Client, client.id)


def test_creating_a_client_with_a_vat_id_checks_it_valid(db, server, new_client, de_company):
    server.answer(FR_VAT, 200, answer(True, "VALID", name="EXEMPLE SARL", address="1 RUE X\n75001 PARIS"))
    client = fresh(db, french(new_client))
    assert server.requests == ["/taxation_customs/vies/rest-api/ms/FR/vat/40303265045"]
    assert (client.vies_status, client.vies_name, client.vies_error) == ("valid", "EXEMPLE SARL", "")
    assert client.vies_checked_at is not None
    [log] = vies_logs(db, client)
    assert log.changes == {"vies_status": ["unchecked", "valid"]}
    assert tax_for_client(client).reverse_charge is True


def test_invalid_after_valid_revokes_the_reverse_charge(db, server, new_client, de_company):
    server.answer(FR_VAT, 200, answer(True, "VALID", name="EXEMPLE SARL"))
    client = french(new_client)
    assert tax_for_client(fresh(db, client)).reverse_charge is True
    server.answer(FR_VAT, 200, answer(False, "INVALID"))
    result = vies.check_client_vat(client.id)
    assert (result.status, result.error) == ("invalid", "")
    client = fresh(db, client)
    assert (client.vies_status, client.vies_name) == ("invalid", "")
    decision = tax_for_client(client)
    assert (decision.reverse_charge, decision.note) == (False, "")
    assert decision.taxes == [("VAT", Decimal("20"))]
    assert [log.changes["vies_status"] for log in vies_logs(db, client)] == [
        ["unchecked", "valid"], ["valid", "invalid"]]


@pytest.mark.parametrize("code", vies.UNAVAILABLE_ERRORS)
def test_an_unavailable_answer_never_flips_a_stored_result(db, server, new_client, de_company, code):
    server.answer(FR_VAT, 200, answer(True, "VALID", name="EXEMPLE SARL"))
    client = french(new_client)
    checked_at = fresh(db, client).vies_checked_at
    server.answer(FR_VAT, 200, answer(False, code))
    result = vies.check_client_vat(client.id)
    assert (result.status, result.error) == ("unavailable", code)
    client = fresh(db, client)
    assert (client.vies_status, client.vies_name, client.vies_error) == ("valid", "EXEMPLE SARL", code)
    assert client.vies_checked_at == checked_at
    assert tax_for_client(client).reverse_charge is True
    assert len(vies_logs(db, client)) == 1  # no status change, no new log row

    server.answer(FR_VAT, 200, answer(False, "INVALID"))
    vies.check_client_vat(client.id)
    server.answer(FR_VAT, 200, answer(False, code))
    vies.check_client_vat(client.id)
    assert (fresh(db, client).vies_status, fresh(db, client).vies_error) == ("invalid", code)
    # The next conclusive answer clears the error.
    server.answer(FR_VAT, 200, answer(True, "VALID", name="EXEMPLE SARL"))
    vies.check_client_vat(client.id)
    assert (fresh(db, client).vies_status, fresh(db, client).vies_error) == ("valid", "")


@pytest.mark.parametrize("status, body, error", [
    (500, None, "HTTP_500"),
    (503, "<html>Service Unavailable</html>", "HTTP_503"),
    (500, {"actionSucceed": False, "errorWrappers": [{"error": "MS_UNAVAILABLE", "message": "..."}]}, "MS_UNAVAILABLE"),
    (200, "not json", "BAD_RESPONSE"),
    (200, {"isValid": True, "userError": "SOMETHING_ELSE"}, "SOMETHING_ELSE"),
    (200, {"isValid": False}, "BAD_RESPONSE"),
    (404, None, "HTTP_404"),
])
def test_http_errors_and_odd_answers_are_unavailable(db, server, new_client, de_company, status, body, error):
    server.answer(FR_VAT, 200, answer(True, "VALID"))
    client = french(new_client)
    server.answer(FR_VAT, status, body)
    result = vies.check_client_vat(client.id)
    assert (result.status, result.error) == ("unavailable", error)
    assert (fresh(db, client).vies_status, fresh(db, client).vies_error) == ("valid", error)


def test_closed_port_and_timeout_are_unavailable(app, db, server, new_client, de_company):
    server.answer(FR_VAT, 200, answer(True, "VALID"))
    client = french(new_client)
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    app.config["PUQPANEL_VIES_URL"] = f"http://127.0.0.1:{closed}/api"
    result = vies.check_client_vat(client.id)
    assert (result.status, result.error) == ("unavailable", "CONNECTION_ERROR")
    assert fresh(db, client).vies_status == "valid"

    app.config["PUQPANEL_VIES_URL"] = "file:///etc"  # urllib would read files: refused
    assert (vies.check_client_vat(client.id).error, fresh(db, client).vies_status) == ("BAD_CONFIGURATION", "valid")

    app.config["PUQPANEL_VIES_URL"] = server.url
    app.config["PUQPANEL_VIES_TIMEOUT"] = 0.3
    server.answer(FR_VAT, 200, answer(False, "INVALID"), delay=1.0)
    started = time.monotonic()
    result = vies.check_client_vat(client.id)
    assert time.monotonic() - started < 0.9
    assert (result.status, result.error) == ("unavailable", "TIMEOUT")
    assert (fresh(db, client).vies_status, fresh(db, client).vies_error) == ("valid", "TIMEOUT")


def test_bad_syntax_is_invalid_without_a_call(db, server, new_client, de_company):
    server.answer(FR_VAT, 200, answer(True, "VALID"))
    client = french(new_client)
    server.requests.clear()
    db.execute(text("UPDATE puq_client SET tax_id = 'FR00000000001' WHERE id = :id"), {"id": client.id})
    db.commit()
    result = vies.check_client_vat(client.id)
    assert result.status == "invalid" and server.requests == []
    assert fresh(db, client).vies_status == "invalid"


def test_nothing_to_check_outside_the_eu_or_without_a_tax_id(db, server, new_client, de_company):
    swiss = new_client(country="CH", region="", city="Zürich", phone="", company_name="Beispiel AG",
                       tax_id="CHE-116.281.710 MWST")
    private = new_client(country="FR", region="", city="Lyon", phone="")
    assert vies.check_client_vat(swiss.id) is None
    assert vies.check_client_vat(private.id) is None
    assert vies.check_client_vat(2_000_000_000) is None
    assert server.requests == []
    assert fresh(db, swiss).vies_status == "unchecked"


def test_greece_is_el_in_vies(db, server, new_client, de_company):
    server.answer("EL094014201", 200, answer(True, "VALID", name="ΕΤΑΙΡΕΙΑ"))
    client = new_client(country="GR", region="", city="Athens", phone="", company_name="Etaireia AE",
                        tax_id="094014201")
    assert client.tax_id in ("094014201", "EL094014201")  # validation keeps Greek ids without the prefix
    assert server.requests[-1].endswith("/ms/EL/vat/094014201")
    assert (fresh(db, client).vies_status, fresh(db, client).vies_name) == ("valid", "ΕΤΑΙΡΕΙΑ")


def test_changing_the_tax_id_resets_the_status_and_checks_the_new_one(db, server, new_client, de_company):
    server.answer(FR_VAT, 200, answer(True, "VALID", name="EXEMPLE SARL"))
    client = french(new_client)
    assert fresh(db, client).vies_status == "valid"
    server.answer(FR_OTHER, 200, answer(False, "MS_UNAVAILABLE"))  # the new id can't be checked right now
    form = profile_form_data(fresh(db, client))
    form["tax_id"] = FR_OTHER
    update_profile(fresh(db, client), form)
    client = fresh(db, client)
    # The answer about the old id no longer counts: unchecked (not "valid") until VIES answers.
    assert (client.tax_id, client.vies_status, client.vies_name, client.vies_error) == (
        FR_OTHER, "unchecked", "", "MS_UNAVAILABLE")
    assert client.vies_checked_at is None
    assert tax_for_client(client).reverse_charge is False
    server.answer(FR_OTHER, 200, answer(True, "VALID", name="AUTRE SARL"))
    from puqpanel.tasks.vies import check_vat

    assert check_vat.delay(client.id).get() == "valid"
    assert fresh(db, client).vies_name == "AUTRE SARL"
    # Saving the profile without touching the tax id asks nothing.
    server.requests.clear()
    form = profile_form_data(fresh(db, client))
    form["admin_notes"] = "hello"
    update_profile(fresh(db, client), form)
    assert server.requests == [] and fresh(db, client).vies_status == "valid"


def test_an_answer_about_a_tax_id_changed_meanwhile_is_not_stored(app, db, server, new_client, de_company):
    server.answer(FR_VAT, 200, answer(False, "INVALID"))
    client = french(new_client)
    assert fresh(db, client).vies_status == "invalid"
    engine = create_engine(str(db.get_bind().url.render_as_string(hide_password=False)))

    def change_tax_id():  # another staff member saves a new id while VIES is being asked
        with engine.begin() as conn:
            conn.execute(text("UPDATE puq_client SET tax_id = :t, vies_status = 'unchecked' WHERE id = :id"),
                         {"t": FR_OTHER, "id": client.id})

    server.answer(FR_VAT, 200, answer(True, "VALID", name="EXEMPLE SARL"))
    server.on_request = change_tax_id
    db.commit()  # end the test session's read transaction, as a request would
    result = vies.check_client_vat(client.id)
    server.on_request = None
    engine.dispose()
    assert result.status == "valid"
    client = fresh(db, client)
    assert (client.tax_id, client.vies_status) == (FR_OTHER, "unchecked")  # the old id's answer was dropped


def test_task_reports_skipped_for_nothing_to_check(db, server, new_client):
    from puqpanel.tasks.vies import check_vat

    client = new_client()
    assert check_vat.delay(client.id).get() == "skipped"
    from flask import current_app

    assert vies.TASK_NAME in current_app.extensions["celery"].tasks


def test_moving_the_billing_address_to_another_country_resets_and_rechecks(db, server, new_client, de_company):
    from puqpanel.domain import addresses

    server.answer(FR_VAT, 200, answer(True, "VALID", name="EXEMPLE SARL"))
    client = fresh(db, french(new_client))
    assert client.vies_status == "valid"
    billing = client.billing_address
    server.answer(FR_VAT, 200, answer(False, "INVALID"))
    addresses.update_address(client, billing.id, {
        "type": "billing", "name": billing.name or "", "address1": "Kalverstraat 1", "city": "Amsterdam",
        "postcode": "1012 NX", "country": "NL", "region": "",
    })
    client = fresh(db, client)
    # The old answer was forgotten and the VAT id checked again (the fake VIES now says invalid).
    assert client.vies_status == "invalid" and len(server.requests) == 2
    assert tax_for_client(client).reverse_charge is False
