"""Generated passwords and hashing, the way FAB's own user screens hash."""
from __future__ import annotations

import secrets
import string

from flask import current_app
from flask_babel import lazy_gettext as _l
from werkzeug.security import generate_password_hash

from . import DomainError

MIN_LENGTH = 6


def generate_password(length: int = 16) -> str:
    """Random password that satisfies the password policy (letters, a digit, a special character)."""
    alphabet = string.ascii_letters + string.digits
    body = [secrets.choice(alphabet) for _ in range(length - 2)]
    body.insert(secrets.randbelow(len(body)), secrets.choice(string.digits))
    body.insert(secrets.randbelow(len(body)), secrets.choice("!#%+-=?@_"))
    return "".join(body)


def hash_password(password: str) -> str:
    """FAB_PASSWORD_HASH_METHOD / FAB_PASSWORD_HASH_SALT_LENGTH, as FAB's add_user uses them."""
    return generate_password_hash(
        password=password,
        method=current_app.config.get("FAB_PASSWORD_HASH_METHOD", "scrypt"),
        salt_length=current_app.config.get("FAB_PASSWORD_HASH_SALT_LENGTH", 16),
    )


def check_password(password: str) -> str:
    """A chosen password is at least MIN_LENGTH long; blank means "generate one" and passes."""
    if password and len(password) < MIN_LENGTH:
        raise DomainError({"password": str(_l("At least 6 characters, or leave it blank to generate one."))})
    return password
