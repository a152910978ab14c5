"""All puqpanel models; importing this module registers every table on FAB's metadata."""
from flask_appbuilder.security.sqla.models import User  # noqa: F401  (FAB's tables join the metadata)

from .activity import ActivityLog
from .automation import (
    CHUNK_STATUSES,
    OUTBOX_STATUSES,
    RUN_STATUSES,
    RUN_TRIGGERS,
    AutomationChunk,
    AutomationRun,
    EmailOutbox,
)
from .base import ZERO, Money, utcnow
from .billing import (
    INVOICE_KINDS,
    INVOICE_STATUSES,
    INVOICE_TYPES,
    NUMBER_RESETS,
    PROVISION_STATUSES,
    SERVICE_STATUSES,
    SUSPENSION_KINDS,
    DocumentCounter,
    Invoice,
    InvoiceItem,
    Payment,
    Service,
)
from .catalog import PERIOD_HOURS, PERIOD_MONTHS, PERIODS, Product, ProductPrice
from .client import (
    ADDRESS_TYPES,
    CLIENT_PERMISSIONS,
    CLIENT_STATUSES,
    CUSTOM_FIELD_TYPES,
    Client,
    ClientAddress,
    ClientGroup,
    ClientNote,
    ClientUser,
    CustomField,
    CustomFieldValue,
    Tag,
    client_tag,
)
from .ledger import TRANSACTION_TYPES, Transaction
from .reference import TAX_CATEGORIES, Currency, HomeCompany, TaxRule
from .user_security import (
    EMAIL_CODE_PURPOSES,
    MFA_KINDS,
    AuthThrottle,
    LoginSession,
    MfaEmailCode,
    MfaMethod,
    MfaRecoveryCode,
    UserSecurity,
)

__all__ = [
    "INVOICE_KINDS", "NUMBER_RESETS", "PROVISION_STATUSES", "SUSPENSION_KINDS", "DocumentCounter", "InvoiceItem",
    "Payment", "PERIOD_HOURS", "PERIOD_MONTHS", "PERIODS", "Product", "ProductPrice", "TRANSACTION_TYPES",
    "Transaction", "TAX_CATEGORIES",
    "ADDRESS_TYPES", "CLIENT_PERMISSIONS", "CLIENT_STATUSES", "CUSTOM_FIELD_TYPES", "INVOICE_STATUSES",
    "INVOICE_TYPES", "SERVICE_STATUSES", "ZERO", "ActivityLog", "Client", "ClientAddress", "ClientGroup",
    "ClientNote", "ClientUser", "Currency", "CustomField", "CustomFieldValue", "HomeCompany", "Invoice",
    "Money", "Service", "Tag", "TaxRule", "User", "UserSecurity", "client_tag", "utcnow",
    "CHUNK_STATUSES", "OUTBOX_STATUSES", "RUN_STATUSES", "RUN_TRIGGERS", "AutomationChunk", "AutomationRun",
    "EmailOutbox", "EMAIL_CODE_PURPOSES", "MFA_KINDS", "AuthThrottle", "LoginSession", "MfaEmailCode",
    "MfaMethod", "MfaRecoveryCode",
]
