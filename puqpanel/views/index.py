"""Home page of the bundled app: staff who may list clients land on the client directory, client logins on
their client area's dashboard."""
from flask import current_app, g, redirect, url_for
from flask_appbuilder import IndexView, expose

from ..security import CLIENT_AREA, CLIENTS, has_perm


class PuqIndexView(IndexView):
    @expose("/")
    def index(self):
        user = getattr(g, "user", None)
        if user is not None and user.is_authenticated:
            if has_perm("can_list", CLIENTS):
                return redirect(url_for("ClientDirectoryView.list"))
            if has_perm("can_access", CLIENT_AREA) and "ClientDashboardView.dashboard" in current_app.view_functions:
                return redirect(url_for("ClientDashboardView.dashboard"))
        return super().index()
