"""Client area: Users (needs the client permission manage_users).

The client's linked logins (owner, permissions, 2FA); invite by email; set the permissions of another
non-owner; remove another non-owner. The rules are in domain.client_self_service; another client's link id is
a 404, a refused change is the page again with its error (HTTP 400).
"""
from __future__ import annotations

from flask import abort, current_app, flash, redirect, request, url_for
from flask_appbuilder import expose
from flask_babel import gettext as _

from ...domain import DomainError, NotFound
from ...domain import client_self_service as self_service
from ...domain.client_users import PERMISSION_LABELS
from ...domain.validation import MAX_ID
from ...models import CLIENT_PERMISSIONS
from ..account import public_url
from . import ClientAreaView, client_page

ID = f"int(max={MAX_ID})"
FORGOT_ENDPOINT = "AccountPublicView.forgot"


def _set_password_url() -> str:
    """Where an invited new login chooses its password: the password-reset page, else the login page."""
    if FORGOT_ENDPOINT in current_app.view_functions:
        return public_url(FORGOT_ENDPOINT)
    return _login_url()


def _login_url() -> str:
    sm = current_app.appbuilder.sm
    return public_url(f"{sm.auth_view.endpoint}.login")


class ClientAreaUsersView(ClientAreaView):
    route_base = "/client/users"
    default_view = "users"

    def _render(self, link, status: int = 200, *, invite: dict | None = None, invite_errors: dict | None = None,
                row_errors: dict | None = None):
        page = self.render_area(
            "users.html", link, "users",
            rows=self_service.list_users(link),
            permission_keys=CLIENT_PERMISSIONS,
            permission_labels=PERMISSION_LABELS,
            grantable=self_service.grantable(link),
            invite=invite or {"permissions": []},
            invite_errors=invite_errors or {},
            row_errors=row_errors or {},
        )
        return page, status

    def _back(self):
        return redirect(url_for("ClientAreaUsersView.users"))

    @expose("/")
    @client_page("manage_users")
    def users(self, link):
        return self._render(link)

    @expose("/invite", methods=["POST"])
    @client_page("manage_users")
    def invite(self, link):
        form = {key: request.form.get(key, "") for key in ("email", "firstname", "lastname")}
        form["permissions"] = request.form.getlist("permissions")
        try:
            answer = self_service.invite_user(
                link, form["email"], form["permissions"], firstname=form["firstname"], lastname=form["lastname"],
                set_password_url=_set_password_url(), login_url=_login_url(),
            )
        except DomainError as exc:
            return self._render(link, 400, invite=form, invite_errors=exc.errors)
        flash(answer, "info")
        return self._back()

    @expose(f"/<{ID}:link_id>/permissions", methods=["POST"])
    @client_page("manage_users")
    def permissions(self, link, link_id: int):
        try:
            changes = self_service.set_user_permissions(link, link_id, request.form.getlist("permissions"))
        except NotFound:
            abort(404)
        except DomainError as exc:
            return self._render(link, 400, row_errors={link_id: " ".join(exc.errors.values())})
        flash(_("Permissions saved.") if changes else _("Nothing changed."), "success" if changes else "info")
        return self._back()

    @expose(f"/<{ID}:link_id>/remove", methods=["POST"])
    @client_page("manage_users")
    def remove(self, link, link_id: int):
        try:
            self_service.remove_user(link, link_id)
        except NotFound:
            abort(404)
        except DomainError as exc:
            return self._render(link, 400, row_errors={link_id: " ".join(exc.errors.values())})
        flash(_("User removed."), "success")
        return self._back()


def register(appbuilder) -> None:
    appbuilder.add_view_no_menu(ClientAreaUsersView())
