"""Switching the current client (a login linked to several clients)."""
from __future__ import annotations

import re

from flask import abort, redirect, request, session, url_for
from flask_appbuilder import expose

from ...domain import NotFound
from ...domain import client_area as area
from ...domain.validation import MAX_ID
from ...security import current_user_id
from . import SESSION_CLIENT, ClientAreaView, client_page


class ClientSwitchView(ClientAreaView):
    route_base = "/client"
    default_view = "switch"

    @expose("/switch", methods=["POST"])
    @client_page()
    def switch(self, link):
        raw = request.form.get("client_id", "")
        # ASCII digits only: str.isdigit() also accepts "²", which int() refuses (a 500).
        if not re.fullmatch(r"[0-9]{1,10}", raw) or int(raw) > MAX_ID:
            abort(404)
        try:
            chosen = area.switch_to(current_user_id(), int(raw))
        except NotFound:
            abort(404)
        session[SESSION_CLIENT] = chosen.client.id
        return redirect(url_for("ClientDashboardView.dashboard"))


def register(appbuilder) -> None:
    appbuilder.add_view_no_menu(ClientSwitchView())
