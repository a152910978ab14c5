"""The password policy for new passwords (issue 5: account security): at least 6 characters, a digit and a
special character, configurable upward only; common passwords and the login's own name refused."""
from __future__ import annotations

import pytest

from puqpanel.domain import DomainError
from puqpanel.domain.passwords import check_new_password, generate_password, password_problems


def test_default_policy(app):
    with app.app_context():
        assert password_problems("Abc-12") == []
        assert password_problems("ab-1") == ["At least 6 characters."]
        assert password_problems("abcdef-") == ["At least one digit."]
        assert password_problems("abcdef1") == ["At least one special character, e.g. ! # % + - = ? @ _"]
        assert password_problems("abc def1") == ["At least one special character, e.g. ! # % + - = ? @ _"]
        assert len(password_problems("")) == 3
        assert password_problems("ünïcødé-1") == []


def test_common_passwords_and_own_name_are_refused(app):
    with app.app_context():
        assert password_problems("P@ssw0rd") == ["This password is too common."]
        assert password_problems("Qwerty123!") == ["This password is too common."]
        assert password_problems("anna-1", username="Anna-1") == [
            "The password must not be the login name or e-mail address."]
        assert password_problems("anna.k+1", email="anna.k+1@example.com") == [
            "The password must not be the login name or e-mail address."]


def test_configurable_upward_only(app):
    with app.app_context():
        saved = dict(app.config)
        try:
            app.config["PUQPANEL_PASSWORD_MIN_LENGTH"] = 2  # lower than the floor: the floor stays
            assert password_problems("ab-1") == ["At least 6 characters."]
            app.config["PUQPANEL_PASSWORD_MIN_LENGTH"] = 12
            app.config["PUQPANEL_PASSWORD_REQUIRE_UPPER"] = True
            assert password_problems("abcdef-1") == ["At least 12 characters.", "At least one upper-case letter."]
            assert password_problems("Abcdefghij-1") == []
        finally:
            app.config.clear()
            app.config.update(saved)


def test_check_new_password_names_every_broken_rule_and_generated_ones_pass(app):
    with app.app_context():
        with pytest.raises(DomainError) as refused:
            check_new_password("abc")
        message = refused.value.errors["password"]
        assert "At least 6 characters." in message and "At least one digit." in message
        assert check_new_password("Long-enough1") == "Long-enough1"
        for _ in range(50):
            assert password_problems(generate_password()) == []
