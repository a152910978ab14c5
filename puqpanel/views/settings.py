"""Staff screens for client groups, tags and custom field definitions (plain FAB ModelViews)."""
from __future__ import annotations

import regex
from .billing_settings import SettingsModelView
from flask_appbuilder.fieldwidgets import (
    BS3TextAreaFieldWidget,
    BS3TextFieldWidget,
    Select2Widget,
)
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_babel import lazy_gettext as _l
from wtforms import BooleanField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Regexp, ValidationError

from ..models import CUSTOM_FIELD_TYPES, ClientGroup, CustomField, Tag
from ..security import CLIENT_GROUPS, CUSTOM_FIELDS, TAGS
from .formatting import color_badge

_COLOR = Regexp(r"^#[0-9a-fA-F]{6}$", message=_l("Use a colour like #1a2b3c."))


class ClientGroupView(SettingsModelView):
    datamodel = SQLAInterface(ClientGroup)
    class_permission_name = CLIENT_GROUPS
    list_title = _l("Client Groups")
    add_title = _l("Add Client Group")
    edit_title = _l("Edit Client Group")
    show_title = _l("Client Group")
    list_columns = ["badge", "description"]
    add_columns = edit_columns = show_columns = ["name", "color", "description"]
    search_columns = ["name"]
    label_columns = {"badge": _l("Name"), "name": _l("Name"), "color": _l("Colour"), "description": _l("Description")}
    validators_columns = {"color": [_COLOR]}
    order_columns = ["description"]
    add_form_extra_fields = edit_form_extra_fields = {
        "description": TextAreaField(_l("Description"), widget=BS3TextAreaFieldWidget()),
    }


# FAB list columns may name model properties: the badge shows the name in its colour.
ClientGroup.badge = property(lambda self: color_badge(self.name, self.color))
Tag.badge = property(lambda self: color_badge(self.name, self.color))


class TagView(SettingsModelView):
    datamodel = SQLAInterface(Tag)
    class_permission_name = TAGS
    list_title = _l("Tags")
    add_title = _l("Add Tag")
    edit_title = _l("Edit Tag")
    show_title = _l("Tag")
    list_columns = ["badge"]
    add_columns = edit_columns = show_columns = ["name", "color"]
    search_columns = ["name"]
    label_columns = {"badge": _l("Name"), "name": _l("Name"), "color": _l("Colour")}
    validators_columns = {"color": [_COLOR]}


def _valid_regex(form, field):
    if field.data:
        try:
            regex.compile(field.data)  # the engine custom-field values are matched with
        except regex.error as exc:
            raise ValidationError(_l("Not a valid regular expression: %(error)s", error=str(exc)))


def _options_for_select(form, field):
    if form.field_type.data == "select" and not (field.data or "").strip():
        raise ValidationError(_l("A select field needs at least one option (one a line)."))


class CustomFieldView(SettingsModelView):
    datamodel = SQLAInterface(CustomField)
    class_permission_name = CUSTOM_FIELDS
    list_title = _l("Custom Fields")
    add_title = _l("Add Custom Field")
    edit_title = _l("Edit Custom Field")
    show_title = _l("Custom Field")
    list_columns = ["name", "field_type", "required", "client_visible", "sort_order"]
    add_columns = edit_columns = show_columns = [
        "name", "field_type", "options", "required", "regex", "client_visible", "sort_order", "description",
    ]
    order_columns = ["name", "field_type", "sort_order"]
    base_order = ("sort_order", "asc")
    search_columns = ["name"]
    label_columns = {
        "name": _l("Name"),
        "field_type": _l("Type"),
        "options": _l("Options (select: one a line)"),
        "required": _l("Required"),
        "regex": _l("Validation regex"),
        "client_visible": _l("Visible to the client"),
        "sort_order": _l("Order"),
        "description": _l("Description"),
    }
    # Explicit fields where FAB would demand input for every NOT NULL column (an unticked box, an empty
    # regex or description are valid answers here).
    add_form_extra_fields = edit_form_extra_fields = {
        "field_type": SelectField(
            _l("Type"),
            choices=[(t, t) for t in CUSTOM_FIELD_TYPES],
            validators=[DataRequired()],
            widget=Select2Widget(),
        ),
        "options": TextAreaField(_l("Options (select: one a line)"), validators=[_options_for_select],
                                 widget=BS3TextAreaFieldWidget()),
        "required": BooleanField(_l("Required")),
        "regex": StringField(_l("Validation regex"), validators=[Length(max=255), _valid_regex],
                             widget=BS3TextFieldWidget()),
        "client_visible": BooleanField(_l("Visible to the client")),
        "description": StringField(_l("Description"), validators=[Length(max=255)], widget=BS3TextFieldWidget()),
    }


def register(appbuilder) -> None:
    appbuilder.add_view(ClientGroupView, "Client Groups", label=_l("Client Groups"), icon="fa-users",
                        category="Clients", category_label=_l("Clients"))
    appbuilder.add_view(TagView, "Tags", label=_l("Tags"), icon="fa-tags", category="Clients")
    appbuilder.add_view(CustomFieldView, "Custom Fields", label=_l("Custom Fields"), icon="fa-list",
                        category="Clients")
