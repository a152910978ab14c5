"""Every login's own account pages (clients and staff) and the staff 2FA reset.

- AccountView (/account/…; FAB permission ACCOUNT.can_access, which every role holds): My Account, Change
  Password, the Verification Center (e-mail and authenticator methods), two-factor authentication on/off
  with recovery codes. While a staff user is signed in as a client (session "puq_impersonator_id") every
  POST here is refused (403) and the pages say so.
- AccountPublicView (/account/forgot, /account/reset/<token>; no login): password reset by e-mailed link.
- UserSecurityView (/account/users-2fa; USER_SECURITY.can_reset_2fa): logins with 2FA on, "Reset 2FA".

Thin views: parse, call domain.account / domain.mfa, render. Refused forms → the page with its errors (400);
throttled → 429.
"""
from __future__ import annotations

from functools import wraps

import qrcode
import qrcode.image.svg
from flask import abort, flash, g, has_request_context, redirect, request, session, url_for
from flask_appbuilder import BaseView, expose
from flask_appbuilder.security.decorators import has_access
from flask_babel import format_datetime, gettext as _, lazy_gettext as _l
from flask_login import user_logged_in
from markupsafe import Markup
from sqlalchemy import select

from ..billing.settings import setting
from ..domain import DomainError, NotFound
from ..domain import account, login_sessions, mfa
from ..domain.session import get_session
from ..domain.validation import MAX_ID, parse_id
from ..models import UserSecurity
from ..security import ACCOUNT, USER_SECURITY, current_user_id

TEMPLATES = "puqpanel/account"
IMPERSONATOR_KEY = "puq_impersonator_id"
USERS_PAGE_SIZE = 50
SIGN_IN_HISTORY = 10  # recent sign-ins on My Account (the login's own; impersonated sessions are not listed)
ID = f"int(max={MAX_ID})"  # URL ids: a larger number is a 404, never a database error


def public_url(endpoint: str, **values) -> str:
    """An absolute URL for an e-mail (reset links, invitations): the panel's address PUQPANEL_PUBLIC_URL
    (billing.settings, as the reminders use it) and the endpoint's path below it — never the request's Host
    header, which the client chooses (a forged Host would mail the reset token to another site)."""
    base = str(setting("PUQPANEL_PUBLIC_URL") or "").rstrip("/")
    path = url_for(endpoint, **values)
    root = request.script_root if has_request_context() else ""
    if root and path.startswith(root + "/"):
        path = path[len(root):]
    return base + path


def impersonating() -> bool:
    return session.get(IMPERSONATOR_KEY) is not None


def account_post(fn):
    """A state-changing AccountView route: refused (403) while impersonating."""

    @wraps(fn)
    def wrapper(self, *args, **kwargs):
        if impersonating():
            abort(403)
        return fn(self, *args, **kwargs)

    return wrapper


def _form() -> dict[str, str]:
    return {key: value for key, value in request.form.items() if key != "csrf_token"}


def qr_svg(data: str) -> Markup:
    """An inline SVG QR code (no PIL)."""
    image = qrcode.make(data, image_factory=qrcode.image.svg.SvgPathImage, box_size=8, border=2)
    svg = image.to_string(encoding="unicode")
    if svg.startswith("<?xml"):
        svg = svg.split("?>", 1)[1]
    return Markup(svg)  # generated from our own URI; qrcode escapes nothing user-controlled into markup


class AccountView(BaseView):
    """My Account, Change Password, Verification Center, 2FA: one FAB permission for every route."""

    route_base = "/account"
    default_view = "account"
    class_permission_name = ACCOUNT
    base_permissions = ["can_access"]

    def __init__(self):
        exposed = (name for name in dir(type(self)) if hasattr(getattr(type(self), name, None), "_urls"))
        self.method_permission_name = {name: "access" for name in exposed}
        super().__init__()

    def _render(self, template: str, active: str, **context):
        return self.render_template(f"{TEMPLATES}/{template}", active=active, impersonating=impersonating(),
                                    format_datetime=format_datetime, **context)

    # -- My Account ------------------------------------------------------------------------------------------

    def _render_account(self, form: dict, errors: dict | None = None):
        return self._render("account.html", "account", form=form, errors=errors or {},
                            languages=account.languages(), is_client=account.is_client_login(g.user.id),
                            sign_ins=login_sessions.history(g.user.id, SIGN_IN_HISTORY),
                            current_sid=session.get(login_sessions.SESSION_KEY))

    @expose("/")
    @has_access
    def account(self):
        return self._render_account(account.account_form(g.user))

    @expose("/save", methods=["POST"])
    @has_access
    @account_post
    def save(self):
        data = _form()
        try:
            changes = account.update_account(g.user, data)
        except account.Throttled as exc:
            return self._render_account(data, exc.errors), 429
        except DomainError as exc:
            return self._render_account(data, exc.errors), 400
        language = (data.get("language") or "").strip()
        if language:
            session["locale"] = language  # FAB's locale selector reads it
        elif "language" in changes:
            session.pop("locale", None)
        flash(_("Your account was saved.") if changes else _("Nothing changed."), "success" if changes else "info")
        return redirect(url_for("AccountView.account"))

    # -- Change Password -------------------------------------------------------------------------------------

    def _render_password(self, errors: dict | None = None):
        from ..domain.passwords import policy

        length, upper = policy()
        return self._render("password.html", "password", errors=errors or {}, min_length=length, upper=upper)

    @expose("/password")
    @has_access
    def password(self):
        return self._render_password()

    @expose("/password/save", methods=["POST"])
    @has_access
    @account_post
    def password_save(self):
        form = request.form
        try:
            account.change_password(g.user, form.get("current_password", ""), form.get("password", ""),
                                    form.get("password_repeat", ""))
        except account.Throttled as exc:
            return self._render_password(exc.errors), 429
        except DomainError as exc:
            return self._render_password(exc.errors), 400
        flash(_("Your password was changed. Your other sessions were signed out."), "success")
        return redirect(url_for("AccountView.password"))

    # -- Verification Center ---------------------------------------------------------------------------------

    def _render_security(self, errors: dict | None = None, status: int = 200, **context):
        user = g.user
        # The key of a pending authenticator is the login's secret once confirmed: never shown to a staff
        # user signed in as the client (who cannot confirm it anyway: every POST here is refused).
        pending = None if impersonating() else mfa.pending_totp(user.id)
        totp = None
        if pending is not None:
            uri = mfa.provisioning_uri(pending, user.email)
            totp = {"method": pending, "qr": qr_svg(uri), "uri": uri}
        methods = mfa.all_methods(user.id)
        return self._render(
            "security.html", "security", methods=methods, totp=totp, errors=errors or {},
            pending_email=next((m for m in methods if m.kind == "email" and m.confirmed_at is None), None),
            enabled=mfa.is_enabled(user.id), user_email=user.email,
            has_email_address=any(m.kind == "email" and m.confirmed_at and m.name.lower() == (user.email or "").lower()
                                  for m in methods),
            **context), status

    def _code_action(self, fn, *args, success: str, render=None):
        """Run an mfa change under the code throttle; errors back on the page (400 / 429)."""
        render = render or self._render_security
        try:
            result = account.with_code(g.user.id, fn, *args)
        except NotFound:
            abort(404)
        except account.Throttled as exc:
            return render(exc.errors, status=429), None
        except DomainError as exc:
            return render(exc.errors, status=400), None
        if success:
            flash(success, "success")
        return None, result

    @expose("/security")
    @has_access
    def security(self):
        return self._render_security()

    @expose("/security/email", methods=["POST"])
    @has_access
    @account_post
    def add_email(self):
        try:
            mfa.start_email_method(g.user)
        except DomainError as exc:
            return self._render_security(exc.errors, status=400)
        flash(_("We sent a code to %(email)s. Enter it below to confirm the address.", email=g.user.email), "info")
        return redirect(url_for("AccountView.security"))

    @expose("/security/totp", methods=["POST"])
    @has_access
    @account_post
    def add_totp(self):
        try:
            mfa.start_totp_method(g.user.id, request.form.get("name", ""))
        except DomainError as exc:
            return self._render_security(exc.errors, status=400, device_name=request.form.get("name", ""))
        return redirect(url_for("AccountView.security") + "#totp-setup")

    def _method_id(self, method_id: int) -> int:
        try:
            return mfa.get_method(g.user.id, method_id).id
        except NotFound:
            abort(404)

    @expose(f"/security/methods/<{ID}:method_id>/confirm", methods=["POST"])
    @has_access
    @account_post
    def confirm_method(self, method_id: int):
        self._method_id(method_id)
        page, _result = self._code_action(mfa.confirm_method, g.user.id, method_id, request.form.get("code", ""),
                                          success=_("The verification method was added."))
        return page or redirect(url_for("AccountView.security"))

    @expose(f"/security/methods/<{ID}:method_id>/default", methods=["POST"])
    @has_access
    @account_post
    def set_default(self, method_id: int):
        self._method_id(method_id)
        try:
            mfa.set_default(g.user.id, method_id)
        except DomainError as exc:
            return self._render_security(exc.errors, status=400)
        flash(_("The default method was changed."), "success")
        return redirect(url_for("AccountView.security"))

    @expose(f"/security/methods/<{ID}:method_id>/send-code", methods=["POST"])
    @has_access
    @account_post
    def send_code(self, method_id: int):
        """Mail a "manage" code to a confirmed e-mail method (to authorise a change)."""
        method = mfa.get_method(g.user.id, self._method_id(method_id))
        if method.kind != "email" or method.confirmed_at is None:
            return self._render_security({"": _("Codes can be sent to a confirmed e-mail method only.")}, status=400)
        mfa.send_email_code(g.user, "manage", method)
        flash(_("We sent a code to %(email)s. It is valid for 10 minutes.", email=method.name), "info")
        return redirect(request.form.get("next") == "2fa" and url_for("AccountView.two_factor")
                        or url_for("AccountView.security"))

    @expose(f"/security/methods/<{ID}:method_id>/remove", methods=["POST"])
    @has_access
    @account_post
    def remove_method(self, method_id: int):
        self._method_id(method_id)
        page, _result = self._code_action(mfa.remove_method, g.user.id, method_id, request.form.get("code", ""),
                                          success=_("The verification method was removed."))
        return page or redirect(url_for("AccountView.security"))

    # -- 2FA on / off ----------------------------------------------------------------------------------------

    def _render_2fa(self, errors: dict | None = None, status: int = 200, codes: list[str] | None = None):
        user_id = g.user.id
        methods = mfa.login_methods(user_id)
        return self._render("two_factor.html", "2fa", errors=errors or {}, enabled=mfa.is_enabled(user_id),
                            methods=methods, email_methods=[m for m in methods if m.kind == "email"],
                            codes=codes, codes_left=mfa.recovery_codes_left(user_id)), status

    @expose("/security/2fa")
    @has_access
    def two_factor(self):
        return self._render_2fa()

    def _2fa_action(self, fn, success: str):
        page, codes = self._code_action(fn, g.user.id, request.form.get("code", ""), success="",
                                        render=self._render_2fa)
        if page is not None:
            return page
        if codes:  # shown once: this response only, never stored in the session
            flash(success, "success")
            return self._render_2fa(codes=codes)
        flash(success, "success")
        return redirect(url_for("AccountView.two_factor"))

    @expose("/security/2fa/enable", methods=["POST"])
    @has_access
    @account_post
    def enable_2fa(self):
        return self._2fa_action(mfa.enable, _("Two-factor authentication is on. Keep your recovery codes safe."))

    @expose("/security/2fa/disable", methods=["POST"])
    @has_access
    @account_post
    def disable_2fa(self):
        return self._2fa_action(mfa.disable, _("Two-factor authentication is off."))

    @expose("/security/2fa/recovery-codes", methods=["POST"])
    @has_access
    @account_post
    def regenerate_codes(self):
        return self._2fa_action(mfa.regenerate_recovery_codes,
                                _("New recovery codes were created; the old ones no longer work."))


class AccountPublicView(BaseView):
    """Password reset by e-mailed link: public (no @has_access), CSRF-protected forms."""

    route_base = "/account"
    default_view = "forgot"

    def _forgot_page(self, sent: bool = False, errors: dict | None = None):
        return self.render_template(f"{TEMPLATES}/forgot.html", sent=sent, errors=errors or {})

    @expose("/forgot", methods=["GET", "POST"])
    def forgot(self):
        if request.method == "GET":
            return self._forgot_page()
        outcome = account.request_reset(
            request.form.get("email", ""), request.remote_addr or "",
            lambda token: public_url("AccountPublicView.reset", token=token))
        # The same page whether or not the address is known (and for throttled requests, with 429).
        return self._forgot_page(sent=True), 429 if outcome.throttled else 200

    @expose("/reset/<token>", methods=["GET", "POST"])
    def reset(self, token: str):
        try:
            user = account.user_for_token(token)
        except DomainError as exc:
            return self.render_template(f"{TEMPLATES}/reset_invalid.html", message=exc.errors.get("")), 400
        if request.method == "GET":
            return self.render_template(f"{TEMPLATES}/reset.html", token=token, errors={}, login=user.username)
        try:
            account.reset_password(token, request.form.get("password", ""), request.form.get("password_repeat", ""))
        except DomainError as exc:
            if "" in exc.errors and len(exc.errors) == 1:  # the link stopped working meanwhile
                return self.render_template(f"{TEMPLATES}/reset_invalid.html", message=exc.errors[""]), 400
            return self.render_template(f"{TEMPLATES}/reset.html", token=token, errors=exc.errors,
                                        login=user.username), 400
        flash(_("Your password was changed. Sign in with the new password."), "success")
        return redirect(self.appbuilder.get_url_for_login)


class UserSecurityView(BaseView):
    """Staff: logins with 2FA on, and "Reset 2FA" (USER_SECURITY.can_reset_2fa)."""

    route_base = "/account"
    default_view = "users_2fa"
    class_permission_name = USER_SECURITY
    base_permissions = ["can_reset_2fa"]
    method_permission_name = {"users_2fa": "reset_2fa", "reset_2fa": "reset_2fa"}

    def _page(self) -> int:
        try:
            return max(1, min(int(request.args.get("page", 1)), 100000))
        except (TypeError, ValueError):
            return 1

    @expose("/users-2fa")
    @has_access
    def users_2fa(self):
        search = request.args.get("q", "")[:100]
        page = self._page()
        rows, has_next = mfa.logins_with_2fa(search, page, USERS_PAGE_SIZE)
        return self.render_template(f"{TEMPLATES}/users_2fa.html", rows=rows, search=search, page=page,
                                    has_next=has_next)

    @expose(f"/users-2fa/<{ID}:user_id>/reset", methods=["POST"])
    @has_access
    def reset_2fa(self, user_id: int):
        if impersonating():
            abort(403)
        try:
            user_id = parse_id(user_id, "user_id", required=True)
            mfa.reset(user_id, by_user_id=current_user_id(), reason=request.form.get("reason", "")[:400])
        except NotFound:
            abort(404)
        except DomainError:
            abort(404)
        from ..domain import login_sessions

        login_sessions.end_all(user_id, "2fa_reset")
        flash(_("Two-factor authentication was reset for the login."), "success")
        return redirect(url_for("UserSecurityView.users_2fa", q=request.args.get("q", "")[:100]))


def _apply_language(sender, user, **extra) -> None:
    """At login, the interface language the login chose in My Account (if any)."""
    try:
        language = get_session().scalar(select(UserSecurity.language).where(UserSecurity.user_id == user.id))
    except Exception:  # noqa: BLE001 - never break a login over the language
        return
    if language:
        session["locale"] = language


def register(appbuilder) -> None:
    appbuilder.add_view_no_menu(AccountView())
    # FAB's own "Profile" page is not granted (security._SELF_SERVICE): this menu entry leads to My Account.
    appbuilder.add_link("My Account", href="AccountView.account", label=_l("My Account"), icon="fa-user")
    appbuilder.add_view_no_menu(AccountPublicView())
    appbuilder.add_view(UserSecurityView(), "Two-Factor Reset", label=_l("Two-Factor Reset"), icon="fa-key",
                        category="Security")
    user_logged_in.connect(_apply_language)
