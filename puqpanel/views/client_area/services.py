"""Client area: the client's services — list (status filter, search, sort, pages) and detail, with the
termination request, its withdrawal and the client's own label for the service.

Everything here needs the link's manage_services key (403 without it). A service is looked up together with
the current client (billing.services.get_service), so another client's service id is a 404 and nothing is
changed. Staff-only fields (admin label, admin notes, provisioning error notes, staff status reasons) are
never shown.
"""
from __future__ import annotations

from flask import abort, flash, redirect, request, url_for
from flask_appbuilder import expose
from flask_babel import format_date, format_datetime
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from ...billing import catalog
from ...billing import services as service_domain
from ...billing.charging import is_hourly_billed
from ...domain import DomainError, NotFound
from ...domain.directory import parse_page
from ...domain.validation import MAX_ID
from ..services import PROVISION_LABELS, SERVICE_STATUS_CLASSES, SERVICE_STATUS_LABELS
from . import ClientAreaView, client_page

PAGE_SIZE = 25
ID = f"int(max={MAX_ID})"

STATUS_FILTERS = (
    ("all", _l("All")),
    ("current", _l("Current")),
    ("active", _l("Active")),
    ("suspended", _l("Suspended")),
    ("pending", _l("Pending")),
    ("terminated", _l("Terminated")),
    ("cancelled", _l("Cancelled")),
    ("termination_requested", _l("Termination requested")),
)
# (sort key, column label) of the sortable columns.
SORT_COLUMNS = (
    ("id", _l("#")),
    ("product", _l("Product")),
    ("label", _l("Label")),
    ("status", _l("Status")),
    ("created", _l("Order date")),
    ("paid_until", _l("Paid until")),
)


def _datetime(value) -> str:
    return format_datetime(value, "medium") if value else ""


def _date(value) -> str:
    return format_date(value, "medium") if value else ""


def _helpers() -> dict:
    return {
        "fmt_datetime": _datetime,
        "fmt_date": _date,
        "period_label": catalog.period_label,
        "hourly_billed": lambda s: s.price is not None and s.product is not None and is_hourly_billed(s),
        "status_labels": SERVICE_STATUS_LABELS,  # the staff tab's words and colours
        "status_classes": SERVICE_STATUS_CLASSES,
        "provision_labels": PROVISION_LABELS,
        "reason_max": service_domain.TERMINATION_REASON_MAX,
        "label_max": service_domain.CLIENT_LABEL_MAX,
    }


class ClientAreaServicesView(ClientAreaView):
    route_base = "/client/services"
    default_view = "services"

    @staticmethod
    def _service(link, service_id: int):
        try:
            return service_domain.get_service(link.client, service_id)
        except NotFound:
            abort(404)

    @expose("/")
    @client_page("manage_services")
    def services(self, link):
        args = service_domain.parse_client_list_args(request.args)
        page = parse_page(request.args.get("page"))
        rows, has_next = service_domain.client_services(link.client, page=page, page_size=PAGE_SIZE, **args)
        query = {"status": args["status"], "q": args["search"], "sort": args["sort"], "dir": args["direction"]}

        def page_link(**changes) -> str:
            wanted = {k: v for k, v in {**query, **changes}.items() if v not in ("", None)}
            if wanted.get("status") == "all":
                wanted.pop("status")
            if wanted.get("sort") == "id" and wanted.get("dir") == "desc":
                wanted.pop("sort")
                wanted.pop("dir")
            if wanted.get("page") == 1:
                wanted.pop("page")
            return url_for("ClientAreaServicesView.services", **wanted)

        return self.render_area(
            "services.html", link, "services",
            rows=rows, page=page, has_next=has_next, args=query, page_link=page_link,
            status_filters=STATUS_FILTERS, sort_columns=SORT_COLUMNS, **_helpers(),
        )

    def _detail(self, link, service, errors: dict | None = None, values: dict | None = None, status: int = 200):
        return self.render_area(
            "service.html", link, "services", service=service, errors=errors or {}, values=values or {},
            **_helpers(),
        ), status

    @expose(f"/<{ID}:service_id>")
    @client_page("manage_services")
    def service(self, link, service_id: int):
        return self._detail(link, self._service(link, service_id))

    def _change(self, link, service_id: int, action, success: str, form: str, *args):
        service = self._service(link, service_id)
        try:
            action(service, *args)
        except NotFound:
            abort(404)
        except DomainError as exc:
            values = {name: request.form.get(name, "") for name in ("reason", "client_label")}
            errors = {form if key in ("", None) else key: message for key, message in exc.errors.items()}
            return self._detail(link, service, errors, values, status=400)
        flash(success, "success")
        return redirect(url_for("ClientAreaServicesView.service", service_id=service_id))

    @expose(f"/<{ID}:service_id>/terminate", methods=["POST"])
    @client_page("manage_services")
    def request_termination(self, link, service_id: int):
        return self._change(link, service_id, service_domain.request_termination,
                            _("Termination requested."), "terminate", request.form.get("reason", ""))

    @expose(f"/<{ID}:service_id>/withdraw", methods=["POST"])
    @client_page("manage_services")
    def withdraw_termination(self, link, service_id: int):
        return self._change(link, service_id, service_domain.withdraw_termination,
                            _("Termination request withdrawn."), "withdraw")

    @expose(f"/<{ID}:service_id>/label", methods=["POST"])
    @client_page("manage_services")
    def set_label(self, link, service_id: int):
        return self._change(link, service_id, service_domain.set_client_label, _("Label saved."), "client_label",
                            request.form.get("client_label", ""))


def register(appbuilder) -> None:
    appbuilder.add_view_no_menu(ClientAreaServicesView())
