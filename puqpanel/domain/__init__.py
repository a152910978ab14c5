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


def collect(errors: dict[str, str], fn, *args, **kwargs):
    """fn(*args, **kwargs), or None with its DomainError's field errors added to `errors` (so that a form
    reports every bad field at once)."""
    try:
        return fn(*args, **kwargs)
    except DomainError as exc:
        errors.update(exc.errors)
        return None
