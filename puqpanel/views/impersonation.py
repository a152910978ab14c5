"""Staff "Login as Client" / "Login as Owner" and "Return to admin" (domain.impersonation).

POST /impersonate/<client_id>/<link_id>  sign in as the login of that link of the client (staff with
                                         Impersonation.can_impersonate, client in the staff user's scope)
POST /impersonate/<client_id>/owner      the same for the client's owner
POST /impersonate/stop                   back to the staff login (the impersonated session's banner)
"""
from __future__ import annotations

from flask import abort, current_app, flash, redirect, request, url_for
from flask_appbuilder import BaseView, expose
from flask_appbuilder.security.decorators import has_access
from flask_babel import gettext as _
from flask_login import current_user

from ..domain import DomainError, NotFound
from ..domain import impersonation as domain
from ..domain.validation import MAX_ID
from ..security import IMPERSONATION, has_perm

ID = f"int(max={MAX_ID})"


class ImpersonationView(BaseView):
    route_base = "/impersonate"
    class_permission_name = IMPERSONATION
    base_permissions = ["can_impersonate"]
    method_permission_name = {"start": "impersonate", "start_owner": "impersonate"}
    error_template = "puqpanel/auth/impersonation_refused.html"

    def _refused(self, message: str, status: int):
        return self.render_template(self.error_template, title=_("Login as Client"), message=message), status

    def _start(self, client_id: int, link_id: int | None):
        if domain.impersonator_id() is not None:  # already signed in as someone: return to admin first
            abort(403)
        staff = current_user._get_current_object()  # the proxy would follow the login switch
        try:
            client, user = domain.target(client_id, link_id)
            domain.begin(staff, client, user, request.form.get("reason", ""))
        except NotFound:
            abort(404)
        except domain.Refused as exc:
            return self._refused(str(exc), 403)
        except DomainError as exc:
            return self._refused("; ".join(exc.errors.values()), 400)
        flash(_("You are now signed in as %(email)s.", email=user.email), "info")
        if "ClientDashboardView.dashboard" in current_app.view_functions:
            return redirect(url_for("ClientDashboardView.dashboard"))
        return redirect(current_app.appbuilder.get_url_for_index)

    @expose(f"/<{ID}:client_id>/<{ID}:link_id>", methods=["POST"])
    @has_access
    def start(self, client_id: int, link_id: int):
        return self._start(client_id, link_id)

    @expose(f"/<{ID}:client_id>/owner", methods=["POST"])
    @has_access
    def start_owner(self, client_id: int):
        return self._start(client_id, None)

    # No FAB permission: the impersonated client login calls it; it acts only on an impersonated session.
    @expose("/stop", methods=["POST"])
    def stop(self):
        if not current_user.is_authenticated or domain.impersonator_id() is None:
            abort(404)
        client_id = domain.finish("impersonation.stop")
        flash(_("You are back in your own account."), "info")
        if client_id is not None and "ClientRecordView.summary" in current_app.view_functions:
            return redirect(url_for("ClientRecordView.summary", client_id=client_id))
        return redirect(current_app.appbuilder.get_url_for_index)


def impersonation_state() -> dict | None:
    """For the base layout's banner: the impersonated login while the session is an impersonation."""
    if domain.impersonator_id() is None or not current_user.is_authenticated:
        return None
    name = f"{current_user.first_name or ''} {current_user.last_name or ''}".strip() or current_user.username
    return {"name": name, "email": current_user.email}


def can_impersonate() -> bool:
    """Whether "Login as …" buttons are shown (staff with the permission, not while impersonating)."""
    return domain.impersonator_id() is None and has_perm("can_impersonate", IMPERSONATION)


def register(appbuilder) -> None:
    current_app.jinja_env.globals.update(puq_impersonation=impersonation_state,
                                         puq_can_impersonate=can_impersonate)
    appbuilder.add_view_no_menu(ImpersonationView())
