"""Client record → Services tab: the list, Add Service, the lifecycle actions and Suspend All Services.

Thin: every route loads the client with get_client (404 outside the caller's scope), the service together
with that client id (404 otherwise), and calls billing.services. A refused change re-renders the tab with
status 400 and the message (in the reopened modal when it came from one); success redirects with a flash.
"""
from __future__ import annotations

from typing import Any

from flask import abort, flash, g, redirect, request, url_for
from flask_appbuilder import BaseView, expose
from flask_appbuilder.security.decorators import has_access
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from ..billing import catalog, services as service_domain
from ..billing.charging import is_hourly_billed
from ..domain import DomainError, NotFound
from ..domain.directory import parse_page
from ..domain.validation import is_true
from ..models import Client, Service
from ..security import BILLING, BILLING_PERMS
from .client_record import ID, RECORD, client_or_404, render_record

PAGE_SIZE = 100

SERVICE_STATUS_LABELS = {
    "pending": _l("Pending"),
    "active": _l("Active"),
    "suspended": _l("Suspended"),
    "terminated": _l("Terminated"),
    "cancelled": _l("Cancelled"),
    "fraud": _l("Fraud"),
}
SERVICE_STATUS_CLASSES = {
    "pending": "label-info",
    "active": "label-success",
    "suspended": "label-warning",
    "terminated": "label-default",
    "cancelled": "label-default",
    "fraud": "label-danger",
}
PROVISION_LABELS = {
    "pending": _l("Pending"),
    "deploying": _l("Deploying"),
    "completed": _l("Completed"),
    "error": _l("Error"),
    "suspended": _l("Suspended"),
    "terminated": _l("Terminated"),
    "cancelled": _l("Cancelled"),
}
PROVISION_CLASSES = {
    "pending": "label-default",
    "deploying": "label-info",
    "completed": "label-success",
    "error": "label-danger",
    "suspended": "label-warning",
    "terminated": "label-default",
    "cancelled": "label-default",
}
# Modal forms of the tab (name → fields kept when the form is shown again with an error).
_MODAL_FIELDS = {
    "add": ("product_id", "price_id", "client_label", "admin_label", "notes"),
    "activate": ("force",),
    "suspend": ("reason",),
    "terminate": ("reason",),
    "cancel": ("reason",),
    "suspend_all": ("reason",),  # the password is never sent back
}


class ClientServicesView(BaseView):
    route_base = "/clients"
    default_view = "services"
    class_permission_name = BILLING
    base_permissions = list(BILLING_PERMS)
    method_permission_name = {
        "services": "show",
        "service_add": "manage_services",
        "service_activate": "manage_services",
        "service_suspend": "manage_services",
        "service_unsuspend": "manage_services",
        "service_terminate": "manage_services",
        "service_cancel": "manage_services",
        "service_retry": "manage_services",
        "services_suspend_all": "suspend_all",
    }

    # -- helpers ---------------------------------------------------------------------------------------------
    @staticmethod
    def _client(client_id: int) -> Client:
        return client_or_404(client_id)

    @staticmethod
    def _service(client: Client, service_id: int) -> Service:
        try:
            return service_domain.get_service(client, service_id)
        except NotFound:
            abort(404)

    def _render(self, client: Client, modal: dict | None = None, status: int = 200):
        page = parse_page(request.args.get("page"))
        rows, has_next = service_domain.list_services(client, page, PAGE_SIZE)
        prices = catalog.orderable_prices(client.currency)
        products = []
        for price in prices:
            if not products or products[-1][0] != price.product_id:
                products.append((price.product_id, price.product.name))
        return render_record(
            self,
            "puqpanel/record/services.html",
            client,
            "services",
            status,
            rows=rows,
            page=page,
            has_next=has_next,
            prices=prices,
            products=products,
            modal=modal,
            period_label=catalog.period_label,
            hourly_billed=lambda s: s.price is not None and s.product is not None and is_hourly_billed(s),
            service_status_labels=SERVICE_STATUS_LABELS,
            service_status_classes=SERVICE_STATUS_CLASSES,
            provision_labels=PROVISION_LABELS,
            provision_classes=PROVISION_CLASSES,
        )

    def _back(self, client: Client):
        return redirect(url_for("ClientServicesView.services", client_id=client.id))

    def _refused(self, client: Client, name: str, exc: DomainError, service_id: int | None = None):
        values = {k: request.form.get(k, "") for k in _MODAL_FIELDS.get(name, ())}
        action = ""
        if service_id is not None:
            action = url_for(f"ClientServicesView.service_{name}", client_id=client.id, service_id=service_id)
        modal = {"name": name, "service_id": service_id, "action": action, "values": values, "errors": exc.errors}
        return self._render(client, modal, status=400)

    def _transition(self, client_id: int, service_id: int, name: str, success: str, action, *args):
        client = self._client(client_id)
        service = self._service(client, service_id)
        try:
            action(service, *args)
        except NotFound:
            abort(404)
        except DomainError as exc:
            return self._refused(client, name, exc, service_id)
        flash(success, "success")
        return self._back(client)

    # -- the tab ---------------------------------------------------------------------------------------------
    @expose(f"{RECORD}/services")
    @has_access
    def services(self, client_id: int):
        return self._render(self._client(client_id))

    @expose(f"{RECORD}/services/add", methods=["POST"])
    @has_access
    def service_add(self, client_id: int):
        client = self._client(client_id)
        form: dict[str, Any] = {k: request.form.get(k, "") for k in _MODAL_FIELDS["add"]}
        try:
            service = service_domain.add_service(
                client, form["price_id"], form["client_label"], form["admin_label"], form["notes"]
            )
        except DomainError as exc:
            return self._refused(client, "add", exc)
        flash(_("Service #%(id)d added (pending).", id=service.id), "success")
        return self._back(client)

    def _activation(self, client_id: int, service_id: int, name: str, action):
        client = self._client(client_id)
        service = self._service(client, service_id)
        try:
            service = action(service, force=is_true(request.form.get("force")))
        except NotFound:
            abort(404)
        except DomainError as exc:
            return self._refused(client, name, exc, service_id)
        if service.provision_status == "error":
            flash(_("Provisioning failed: %(error)s", error=service.provision_error), "danger")
        else:
            flash(_("Service #%(id)d activated.", id=service.id), "success")
        return self._back(client)

    @expose(f"{RECORD}/services/<{ID}:service_id>/activate", methods=["POST"])
    @has_access
    def service_activate(self, client_id: int, service_id: int):
        return self._activation(client_id, service_id, "activate", service_domain.activate)

    @expose(f"{RECORD}/services/<{ID}:service_id>/retry", methods=["POST"])
    @has_access
    def service_retry(self, client_id: int, service_id: int):
        return self._activation(client_id, service_id, "retry", service_domain.retry_provisioning)

    @expose(f"{RECORD}/services/<{ID}:service_id>/suspend", methods=["POST"])
    @has_access
    def service_suspend(self, client_id: int, service_id: int):
        return self._transition(client_id, service_id, "suspend", _("Service suspended."), service_domain.suspend,
                                request.form.get("reason", ""))

    @expose(f"{RECORD}/services/<{ID}:service_id>/unsuspend", methods=["POST"])
    @has_access
    def service_unsuspend(self, client_id: int, service_id: int):
        return self._transition(client_id, service_id, "unsuspend", _("Service unsuspended."),
                                service_domain.unsuspend)

    @expose(f"{RECORD}/services/<{ID}:service_id>/terminate", methods=["POST"])
    @has_access
    def service_terminate(self, client_id: int, service_id: int):
        return self._transition(client_id, service_id, "terminate", _("Service terminated."),
                                service_domain.terminate, request.form.get("reason", ""))

    @expose(f"{RECORD}/services/<{ID}:service_id>/cancel", methods=["POST"])
    @has_access
    def service_cancel(self, client_id: int, service_id: int):
        return self._transition(client_id, service_id, "cancel", _("Service cancelled."), service_domain.cancel,
                                request.form.get("reason", ""))

    @expose(f"{RECORD}/services/suspend-all", methods=["POST"])
    @has_access
    def services_suspend_all(self, client_id: int):
        client = self._client(client_id)
        try:
            count = service_domain.suspend_all(
                client, request.form.get("reason", ""), g.user, request.form.get("password", "")
            )
        except DomainError as exc:
            return self._refused(client, "suspend_all", exc)
        flash(_("%(count)d active services suspended.", count=count), "success" if count else "info")
        return self._back(client)


def register(appbuilder) -> None:
    appbuilder.add_view_no_menu(ClientServicesView())
