"""Client-management rules. No Flask request handling here: views, API, CLI and tasks call these."""


class DomainError(Exception):
    """A rule refused the operation. `errors` maps form field names ("" = whole form) to messages."""

    def __init__(self, errors: dict[str, str] | str):
        if isinstance(errors, str):
            errors = {"": errors}
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" if k else v for k, v in errors.items()))


class NotFound(DomainError):
    """The row does not exist or is outside the caller's scope (same answer for both)."""
