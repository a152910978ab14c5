"""Generated passwords and hashing, the way FAB's own user screens hash."""
from __future__ import annotations

import secrets
import string

from flask import current_app
from werkzeug.security import generate_password_hash


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
