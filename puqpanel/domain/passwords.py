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


# Refused whatever the policy (the most used passwords that would pass its character rules, lower-cased).
COMMON_PASSWORDS = frozenset("""
password1! passw0rd! p@ssw0rd p@ssword1 p@ssw0rd1 p@ssw0rd! pa$$w0rd pa$$word1 passw0rd1! password123!
password1@ password1# welcome1! welcome123! qwerty1! qwerty123! qwerty12! 1qaz@wsx 1qaz!qaz !qaz2wsx
zaq1@wsx abc123! abc@123 admin123! admin@123 admin1! letmein1! iloveyou1! monkey1! dragon1! sunshine1!
changeme1! test123! test@123 root123! master1! football1! baseball1! 123qwe! 123abc! 12345a! 123456a!
q1w2e3r4! p@55w0rd trustno1! hello123! secret1! summer2024! winter2024! spring2025! autumn2025! summer2025!
""".split())


def policy() -> tuple[int, bool]:
    """(minimum length, upper-case letter required). A digit and a special character are always required;
    a config can only make the policy stricter: PUQPANEL_PASSWORD_MIN_LENGTH (6, never less) and
    PUQPANEL_PASSWORD_REQUIRE_UPPER (off)."""
    config = current_app.config
    length = max(MIN_LENGTH, int(config.get("PUQPANEL_PASSWORD_MIN_LENGTH", MIN_LENGTH)))
    return length, bool(config.get("PUQPANEL_PASSWORD_REQUIRE_UPPER", False))


def password_problems(password: str, *, username: str = "", email: str = "") -> list[str]:
    """Why a new password is refused (empty: accepted): too short, no digit, no special character (no
    upper-case letter, when required), a common password, or the login's own name / e-mail address."""
    length, upper = policy()
    problems = []
    if len(password) < length:
        problems.append(str(_l("At least %(count)d characters.", count=length)))
    if not any(ch.isdigit() for ch in password):
        problems.append(str(_l("At least one digit.")))
    if not any(not ch.isalnum() and not ch.isspace() for ch in password):
        problems.append(str(_l("At least one special character, e.g. ! # % + - = ? @ _")))
    if upper and not any(ch.isupper() for ch in password):
        problems.append(str(_l("At least one upper-case letter.")))
    lowered = password.strip().lower()
    if lowered in COMMON_PASSWORDS:
        problems.append(str(_l("This password is too common.")))
    if lowered and lowered in {username.strip().lower(), email.strip().lower(), email.strip().lower().split("@")[0]}:
        problems.append(str(_l("The password must not be the login name or e-mail address.")))
    return problems


def check_new_password(password: str, *, username: str = "", email: str = "") -> str:
    """The password, or DomainError({"password": …}) naming every rule it breaks."""
    problems = password_problems(str(password or ""), username=username, email=email)
    if problems:
        raise DomainError({"password": " ".join(problems)})
    return password


def check_password(password: str) -> str:
    """A chosen password is at least MIN_LENGTH long; blank means "generate one" and passes."""
    if password and len(password) < MIN_LENGTH:
        raise DomainError({"password": str(_l("At least 6 characters, or leave it blank to generate one."))})
    return password
