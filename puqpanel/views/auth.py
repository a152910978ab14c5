"""Signing in: the password step (throttled), the two-factor step, logout, the JSON API login, and the
per-request check of the server-side session (registered by the plugin as a before_request hook).

Password step (PuqAuthDBView.login): a locked login name or address (domain.throttle) is refused with 429
before the password is looked at, with the same answer for existing and unknown names; a wrong password
counts against "login:<name>" and "ip:<address>"; a right one clears the name's count. A login with 2FA on is
not logged in: the session holds only the pending step (PENDING_KEY) and the browser goes to /login/2fa,
which takes a TOTP, e-mailed or recovery code (domain.mfa.verify_login_code). Five wrong codes lock
"code:<user id>" and drop the pending login. Completing the login rotates the session
(domain.login_sessions) and counts it in FAB's login statistics.

The API login (POST /api/v1/security/login) follows the same rules and issues tokens only once the second
factor ("otp" in the JSON body) is given.
"""
from __future__ import annotations

import datetime as dt

from flask import abort, current_app, flash, g, redirect, request, session, url_for
from flask_appbuilder import expose
from flask_appbuilder._compat import as_unicode
from flask_appbuilder.api import safe
from flask_appbuilder.const import (
    API_SECURITY_ACCESS_TOKEN_KEY,
    API_SECURITY_PROVIDER_DB,
    API_SECURITY_REFRESH_TOKEN_KEY,
)
from flask_appbuilder.security.api import SecurityApi
from flask_appbuilder.security.decorators import no_cache
from flask_appbuilder.security.forms import LoginForm_db
from flask_appbuilder.security.schemas import login_post
from flask_appbuilder.security.views import AuthDBView
from flask_appbuilder.utils.base import get_safe_redirect
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_jwt_extended import create_access_token, create_refresh_token
from flask_login import current_user, login_user, logout_user
from marshmallow import ValidationError
from sqlalchemy import func, select

from ..billing import clock
from ..domain import DomainError
from ..domain import impersonation as impersonation_domain
from ..domain import login_sessions, mfa, throttle
from ..domain.activity import client_ip
from ..domain.session import get_session
from ..models import ClientUser, MfaEmailCode

PENDING_KEY = "puq_2fa_pending"
PENDING_MINUTES = 10
CODE_MAX_LENGTH = 64
# "Send another code": at most one e-mail per RESEND_SECONDS per login, RESEND_MAX per pending login.
RESEND_SECONDS = 60
RESEND_MAX = 5
TOO_MANY = _l("Too many attempts, try again later.")


def ip_key() -> str:
    return "ip:" + (client_ip() or "unknown")


def _password_keys(username: str) -> list[str]:
    return [throttle.login_key(username), ip_key()]


def complete_login(user) -> None:
    """Sign `user` in for real: a new server-side session (the old cookie's row ended), Flask-Login, FAB's
    login statistics, and a "user.login" entry on each client the login is linked to."""
    sm = _sm()
    login_sessions.rotate(user.id)
    login_user(user, remember=False)
    sm.update_user_auth_stat(user, True)
    session = get_session()
    # Client logins: on each linked client's activity log. Staff logins are in their LoginSession rows.
    if session.scalar(select(ClientUser.id).where(ClientUser.user_id == user.id).limit(1)) is not None:
        mfa.log_for_login(user.id, "user.login")  # the entry's ip column holds the address
        session.commit()


def _sm():
    return current_app.appbuilder.sm


# -- the pending second step --------------------------------------------------------------------------------

def _pending() -> dict | None:
    """The pending 2FA login of this browser if it is well-formed and not older than PENDING_MINUTES."""
    pending = session.get(PENDING_KEY)
    if not isinstance(pending, dict) or not isinstance(pending.get("uid"), int):
        return None
    try:
        started = dt.datetime.fromisoformat(str(pending.get("started")))
    except ValueError:
        return None
    if clock.now() - started > dt.timedelta(minutes=PENDING_MINUTES) or started > clock.now() + dt.timedelta(
            minutes=1):
        return None
    return pending


def _drop_pending() -> None:
    login_sessions.clear_cookie()  # nothing is signed in: the cookie is emptied (but its language)


def _email_method(user_id: int):
    return next((m for m in mfa.login_methods(user_id) if m.kind == "email"), None)


def _last_login_code_sent(user_id: int):
    return get_session().scalar(select(func.max(MfaEmailCode.created_at)).where(
        MfaEmailCode.user_id == user_id, MfaEmailCode.purpose == "login"))


def _send_login_code(user, pending: dict | None = None) -> bool:
    """E-mail a login code unless one was sent less than RESEND_SECONDS ago (server-side) or the pending
    login (the form's; None for the API) asked RESEND_MAX times already. Returns whether a code was sent."""
    last = _last_login_code_sent(user.id)
    if last is not None and clock.now() - last < dt.timedelta(seconds=RESEND_SECONDS):
        return False
    if pending is not None and int(pending.get("sent", 0)) >= RESEND_MAX:
        return False
    try:
        mfa.send_email_code(user, "login")
    except DomainError:
        return False
    if pending is not None:
        pending["sent"] = int(pending.get("sent", 0)) + 1
        session[PENDING_KEY] = pending
    return True


class PuqAuthDBView(AuthDBView):
    login_template = "puqpanel/auth/login.html"
    two_factor_template = "puqpanel/auth/two_factor.html"

    def _login_page(self, message=None, status: int = 200):
        form = LoginForm_db(formdata=None)
        return self.render_template(self.login_template, title=self.title, form=form, appbuilder=self.appbuilder,
                                    puq_error=message), status

    def _too_many(self):
        return self._login_page(TOO_MANY, 429)

    @expose("/login/", methods=["GET", "POST"])
    @no_cache
    def login(self):
        if g.user is not None and g.user.is_authenticated:
            return redirect(self._get_safe_next_url())
        form = LoginForm_db()
        if form.validate_on_submit():
            next_url = get_safe_redirect(request.args.get("next", ""))
            username = form.username.data or ""
            keys = _password_keys(username)
            # A locked name or address is refused before the password is checked, whether the name exists.
            if any(throttle.is_locked(key) for key in keys):
                return self._too_many()
            user = self.appbuilder.sm.check_password_db(username, form.password.data)
            if not user:
                for key in keys:
                    throttle.record_failure(key)
                flash(as_unicode(self.invalid_login_message), "warning")
                return redirect(self.appbuilder.get_url_for_login_with(next_url))
            throttle.clear(keys[0])
            if mfa.is_enabled(user.id):
                return self._start_second_step(user, next_url)
            complete_login(user)
            return redirect(next_url)
        return self.render_template(self.login_template, title=self.title, form=form, appbuilder=self.appbuilder)

    def _start_second_step(self, user, next_url: str):
        login_sessions.end_current("rotated")  # a stale session id in the cookie, if any
        pending = {"uid": user.id, "started": clock.now().isoformat(), "next": next_url, "attempts": 0, "sent": 0}
        session[PENDING_KEY] = pending
        methods = mfa.login_methods(user.id)
        if methods and methods[0].kind == "email":
            _send_login_code(user, pending)
        return redirect(url_for(".two_factor"))

    def _pending_user(self):
        pending = _pending()
        if pending is None:
            return None, None
        user = self.appbuilder.sm.get_user_by_id(pending["uid"])
        if user is None or not user.is_active or not mfa.is_enabled(user.id):
            return None, None
        return pending, user

    def _two_factor_page(self, user, error=None, status: int = 200):
        methods = mfa.login_methods(user.id)
        return self.render_template(
            self.two_factor_template, title=_("Two-factor authentication"), appbuilder=self.appbuilder,
            error=error, has_totp=any(m.kind == "totp" for m in methods),
            has_email=any(m.kind == "email" for m in methods),
            default_kind=methods[0].kind if methods else None,
        ), status

    def _restart(self):
        expired = PENDING_KEY in session  # a pending login that ran out (or is no longer valid)
        _drop_pending()
        if expired:
            flash(_("Your sign-in has expired. Please sign in again."), "warning")
        return redirect(self.appbuilder.get_url_for_login)

    @expose("/login/2fa", methods=["GET", "POST"])
    @no_cache
    def two_factor(self):
        if g.user is not None and g.user.is_authenticated:
            return redirect(self.appbuilder.get_url_for_index)
        pending, user = self._pending_user()
        if pending is None:
            return self._restart()
        if request.method == "GET":
            return self._two_factor_page(user)
        key = f"code:{user.id}"
        if throttle.is_locked(key):
            _drop_pending()
            return self._too_many()
        code = (request.form.get("code") or "")[:CODE_MAX_LENGTH]
        if code.strip() and mfa.verify_login_code(user.id, code):
            throttle.clear(key)
            next_url = get_safe_redirect(pending.get("next") or "")
            complete_login(user)
            return redirect(next_url)
        locked = throttle.record_failure(key)
        pending["attempts"] = int(pending.get("attempts", 0)) + 1
        if locked or pending["attempts"] >= throttle.limit_for(key):
            _drop_pending()
            return self._too_many()
        session[PENDING_KEY] = pending
        return self._two_factor_page(user, error=_("Invalid code. Please try again."), status=400)

    @expose("/login/2fa/resend", methods=["POST"])
    @no_cache
    def two_factor_resend(self):
        pending, user = self._pending_user()
        if pending is None:
            return self._restart()
        if _email_method(user.id) is None:
            abort(404)
        if _send_login_code(user, pending):
            flash(_("A new code has been sent to your e-mail address."), "info")
        else:
            flash(_("Please wait a minute before asking for another code."), "warning")
        return redirect(url_for(".two_factor"))

    @expose("/logout/", methods=["GET", "POST"])
    def logout(self):
        user = self._get_authenticated_user()
        if user is not None and impersonation_domain.impersonator_id() is not None:
            impersonation_domain.end_by_logout()
        login_sessions.end_current("logout")
        logout_user()
        if user is not None:
            self.appbuilder.sm.on_user_logout(user)
        return redirect(current_app.config.get("LOGOUT_REDIRECT_URL", self.appbuilder.get_url_for_index))


# -- JSON API -----------------------------------------------------------------------------------------------

class PuqSecurityApi(SecurityApi):
    """FAB's security API; the login is throttled like the form and needs the second factor ("otp")."""

    @expose("/login", methods=["POST"])
    @safe
    def login(self):
        if not request.is_json or not isinstance(request.json, dict):
            return self.response_400(message="Request payload is not JSON")
        body = dict(request.json)
        otp = body.pop("otp", None)
        try:
            payload = login_post.load(body)
        except ValidationError as error:
            return self.response_400(message=error.messages)
        if payload["provider"] != API_SECURITY_PROVIDER_DB:
            return self.response_401()
        keys = _password_keys(payload["username"])
        if any(throttle.is_locked(key) for key in keys):
            return self.response(429, message=str(TOO_MANY))
        sm = self.appbuilder.sm
        user = sm.check_password_db(payload["username"], payload["password"])
        if not user:
            for key in keys:
                throttle.record_failure(key)
            return self.response_401()
        throttle.clear(keys[0])
        if mfa.is_enabled(user.id):
            code_key = f"code:{user.id}"
            if throttle.is_locked(code_key):
                return self.response(429, message=str(TOO_MANY))
            if not isinstance(otp, str) or not otp.strip():
                methods = mfa.login_methods(user.id)
                if methods and methods[0].kind == "email":
                    _send_login_code(user)
                return self.response(401, message="Two-factor code required", mfa_required=True)
            if not mfa.verify_login_code(user.id, otp[:CODE_MAX_LENGTH]):
                if throttle.record_failure(code_key):
                    return self.response(429, message=str(TOO_MANY))
                return self.response(401, message="Invalid two-factor code", mfa_required=True)
            throttle.clear(code_key)
        sm.update_user_auth_stat(user, True)
        resp = {API_SECURITY_ACCESS_TOKEN_KEY: create_access_token(identity=str(user.id), fresh=True)}
        if payload.get("refresh"):
            resp[API_SECURITY_REFRESH_TOKEN_KEY] = create_refresh_token(identity=str(user.id))
        return self.response(200, **resp)


# -- every request ------------------------------------------------------------------------------------------

def session_guard():
    """before_request: a signed-in cookie must name a live LoginSession of the same login and impersonator,
    else the request goes on logged out (a copied cookie of a rotated or ended session stops working).
    An impersonation older than PUQPANEL_IMPERSONATION_MINUTES is ended here (back to the staff login)."""
    endpoint = request.endpoint or ""
    if endpoint == "static" or endpoint.endswith(".static"):
        return None
    if not current_user.is_authenticated:
        for key in login_sessions.IMPERSONATION_KEYS:
            session.pop(key, None)
        return None
    impersonator = session.get(login_sessions.IMPERSONATOR_KEY)
    if impersonator is None and not isinstance(current_app.appbuilder.sm, _puq_manager()):
        # A host app on FAB's own security manager logs in without server-side sessions: only
        # impersonated sessions (started by puqpanel) are checked there.
        return None
    row = login_sessions.live(session.get(login_sessions.SESSION_KEY))
    if not login_sessions.matches(row, current_user.id, impersonator):
        # Only the cookie is emptied: the rows are left as they are (the live one may be another copy's).
        logout_user()
        login_sessions.clear_cookie()
        return None
    if impersonator is not None and impersonation_domain.expired(row):
        client_id = impersonation_domain.finish("impersonation.expire")
        flash(_("Your session as the client ended after %(minutes)d minutes.",
                minutes=impersonation_domain.minutes()), "warning")
        return redirect(_return_url(client_id))
    return None


def _puq_manager():
    from ..security import PuqSecurityManager

    return PuqSecurityManager


def _return_url(client_id: int | None) -> str:
    if client_id is not None and "ClientRecordView.summary" in current_app.view_functions:
        return url_for("ClientRecordView.summary", client_id=client_id)
    return current_app.appbuilder.get_url_for_index


def register(appbuilder) -> None:
    """The views are the security manager's (PuqSecurityManager.authdbview / security_api)."""
