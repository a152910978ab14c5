"""Home page of the bundled app: staff who may list clients land on the client directory."""
from flask import g, redirect, url_for
from flask_appbuilder import IndexView, expose

from ..security import CLIENTS, has_perm


class PuqIndexView(IndexView):
    @expose("/")
    def index(self):
        user = getattr(g, "user", None)
        if user is not None and user.is_authenticated and has_perm("can_list", CLIENTS):
            return redirect(url_for("ClientDirectoryView.list"))
        return super().index()
