"""Celery task: check a client's EU VAT id with VIES (billing.vies)."""
from celery import shared_task

from ..billing.vies import TASK_NAME


@shared_task(name=TASK_NAME)
def check_vat(client_id: int) -> str:
    """Check the client's VAT id; returns the outcome (valid / invalid / unavailable:<code> / skipped)."""
    from ..billing.vies import check_client_vat

    result = check_client_vat(client_id)
    if result is None:
        return "skipped"
    return result.status if result.conclusive else f"unavailable:{result.error}"
