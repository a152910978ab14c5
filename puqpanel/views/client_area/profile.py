"""Client area: Company Profile (needs the client permission modify_profile).

GET shows the form; POST /save validates and saves through domain.client_self_service.update_own_profile
(only the client-editable fields are read; refused input → the form again with its errors, HTTP 400).
GET /regions/<XX>: the ISO 3166-2 regions of a country for the form's region select (JSON).
"""
from __future__ import annotations

from flask import current_app, flash, jsonify, redirect, request, url_for
from flask_appbuilder import expose
from flask_babel import gettext as _

from ...domain import DomainError
from ...domain import client_self_service as self_service
from ...domain.validation import check_country, countries, regions
from . import ClientAreaView, client_page


def _regions_of(country: str) -> list[tuple[str, str]]:
    """Regions of a valid country code, else [] (regions() caches per code: never call it with junk)."""
    try:
        return regions(check_country(country))
    except DomainError:
        return []


class ClientCompanyProfileView(ClientAreaView):
    route_base = "/client/profile"
    default_view = "profile"

    def _render(self, link, form: dict, errors: dict | None = None):
        fields = self_service.visible_custom_fields()
        languages = current_app.config.get("LANGUAGES", {})
        return self.render_area(
            "profile.html", link, "profile",
            form=form, errors=errors or {}, countries=countries(),
            regions=_regions_of(str(form.get(self_service.ADDRESS_PREFIX + "country") or "")),
            custom_fields=fields, address_prefix=self_service.ADDRESS_PREFIX,
            languages=[(code, meta.get("name", code)) for code, meta in languages.items()],
        )

    @expose("/")
    @client_page("modify_profile")
    def profile(self, link):
        return self._render(link, self_service.profile_form_data(link.client))

    @expose("/save", methods=["POST"])
    @client_page("modify_profile")
    def save(self, link):
        data = {key: value for key, value in request.form.items() if key != "csrf_token"}
        try:
            changes = self_service.update_own_profile(link, data)
        except DomainError as exc:
            return self._render(link, data, exc.errors), 400
        flash(_("Profile saved.") if changes else _("Nothing changed."), "success" if changes else "info")
        return redirect(url_for("ClientCompanyProfileView.profile"))

    @expose("/regions/<country>")
    @client_page("modify_profile")
    def region_list(self, link, country: str):
        """ISO data only (static/regions.js fills the region select); an invalid code has none."""
        return jsonify({"regions": [{"code": code, "name": name} for code, name in _regions_of(country[:2])]})


def register(appbuilder) -> None:
    appbuilder.add_view_no_menu(ClientCompanyProfileView())
