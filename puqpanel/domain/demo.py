"""`puqpanel demo`: idempotent, realistic demo data.

Reference data (currencies, two home companies, EU VAT and Canadian GST/HST/QST rules, groups, tags, custom
fields) is created when missing and never overwritten. Demo clients are recognised by their owner's email
(client0001@puqpanel-demo.example.com …): existing ones are skipped and the set is topped up to `client_count`.
Every client is made with `create_client` and then shaped with the same domain functions the staff screens
use (addresses, users, notes, custom fields, profile), so all of it is validated and in the activity log.
Client number i is generated from its own seeded random stream, so the data is the same on every machine
and a top-up never changes the clients already there.
"""
from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

import click
import phonenumbers
from flask import current_app
from sqlalchemy import func, select
from tqdm import tqdm

# Rule-set data re-exported for the demo tests.
from ..billing.tax_rulesets import (  # noqa: F401
    CANADA_TAXES, EU_VAT_RATES, TAX_CATEGORIES, install_canada_rules, install_eu_rules,
)
from ..models import (
    CLIENT_PERMISSIONS,
    CLIENT_STATUSES,
    Client,
    ClientGroup,
    ClientUser,
    Currency,
    CustomField,
    HomeCompany,
    Tag,
    TaxRule,
    User,
)
from ..security import CLIENT_ROLE
from . import DomainError
from .passwords import generate_password, hash_password
from .session import get_session
from .validation import normalize_tax_id, regions

SEED = 2026
DEMO_DOMAIN = "puqpanel-demo.example.com"  # example.com: reserved, never delivered
MANAGER_ROLE = "Manager"


class DemoError(click.ClickException):
    """A precondition of the demo loader is missing (shown by the CLI without a traceback)."""


def demo_email(index: int) -> str:
    return f"client{index:04d}@{DEMO_DOMAIN}"


# --- reference data -------------------------------------------------------------------------------------

# code, prefix, suffix, units per 1 EUR (the default currency)
CURRENCIES = (
    ("EUR", "", " €", Decimal("1.0000")),
    ("USD", "$", "", Decimal("1.0850")),
    ("CAD", "CA$", "", Decimal("1.4900")),
    ("GBP", "£", "", Decimal("0.8450")),
    ("PLN", "", " zł", Decimal("4.2700")),
)

HOME_COMPANIES = (
    dict(
        name="puqpanel Demo GmbH", company_name="puqpanel Demo GmbH", address1="Friedrichstraße 123",
        city="Berlin", postcode="10117", country="DE", region="DE-BE", tax_id="DE136695976",
        bank_details="IBAN DE89 3704 0044 0532 0130 00 · BIC COBADEFFXXX",
        pdf_footer="puqpanel Demo GmbH · Amtsgericht Charlottenburg HRB 000000 · Geschäftsführer: A. Muster",
        is_default=True,
    ),
    dict(
        name="puqpanel Demo Canada Inc.", company_name="puqpanel Demo Canada Inc.", address1="100 King Street West",
        city="Toronto", postcode="M5X 1A9", country="CA", region="CA-ON", tax_id="123456782RT0001",
        bank_details="Transit 00012 · Institution 004 · Account 1234567",
        pdf_footer="puqpanel Demo Canada Inc. · GST/HST 123456782RT0001", is_default=False,
    ),
)

GROUPS = (
    ("VIP", "#d4af37", "Top accounts: personal contact before any suspension."),
    ("Resellers", "#6f42c1", "Resell our services to their own customers."),
    ("Enterprise", "#0d6efd", "Contracted accounts with custom terms."),
    ("Startups", "#20c997", "Startup programme, discounted first year."),
    ("Non-profit", "#fd7e14", "Registered charities and associations."),
)
TAGS = (
    ("Priority support", "#dc3545"),
    ("Late payer", "#ffc107"),
    ("Newsletter", "#17a2b8"),
    ("Migrated", "#6c757d"),
    ("Partner", "#28a745"),
    ("Beta tester", "#e83e8c"),
)
INDUSTRIES = ("Web agency", "E-commerce", "Software", "Hosting reseller", "Education", "Media", "Other")
CUSTOM_FIELDS = (
    dict(name="Account code", field_type="text", required=True, regex=r"[A-Z]{2}-\d{4}", client_visible=False,
         sort_order=10, description="Accounting reference, two letters and four digits (e.g. DE-0042)."),
    dict(name="Industry", field_type="select", options="\n".join(INDUSTRIES), required=True, client_visible=True,
         sort_order=20, description="What the client does."),
    dict(name="Employees", field_type="number", client_visible=False, sort_order=30,
         description="Head count, roughly."),
    dict(name="Newsletter consent", field_type="bool", client_visible=True, sort_order=40,
         description="The client agreed to receive the newsletter."),
    dict(name="Contract start", field_type="date", client_visible=False, sort_order=50,
         description="Date of the signed framework contract."),
    dict(name="Preferred contact time", field_type="text", client_visible=True, sort_order=60,
         description="When the client prefers to be called."),
)

MANAGERS = (
    ("manager.anna", "Anna", "Keller", "anna.keller@staff.puqpanel-demo.example.com"),
    ("manager.bob", "Bob", "Martin", "bob.martin@staff.puqpanel-demo.example.com"),
)

# --- people and places ----------------------------------------------------------------------------------

# country: weight, language, currency, cities (city, ISO 3166-2 region, postcode), streets, company suffixes
PLACES: dict[str, dict[str, Any]] = {
    "DE": dict(weight=24, lang="de", currency="EUR", suffixes=("GmbH", "UG", "KG", "AG"),
               streets=("Hauptstraße", "Bahnhofstraße", "Gartenweg", "Schillerstraße", "Lindenallee"),
               cities=(("Berlin", "DE-BE", "10115"), ("München", "DE-BY", "80331"), ("Hamburg", "DE-HH", "20095"),
                       ("Köln", "DE-NW", "50667"), ("Frankfurt am Main", "DE-HE", "60311"),
                       ("Stuttgart", "DE-BW", "70173"), ("Leipzig", "DE-SN", "04109"))),
    "AT": dict(weight=5, lang="de", currency="EUR", suffixes=("GmbH", "OG"),
               streets=("Mariahilfer Straße", "Landstraße", "Herrengasse"),
               cities=(("Wien", "AT-9", "1010"), ("Graz", "AT-6", "8010"), ("Linz", "AT-4", "4020"),
                       ("Salzburg", "AT-5", "5020"))),
    "FR": dict(weight=8, lang="fr", currency="EUR", suffixes=("SARL", "SAS", "EURL"),
               streets=("Rue de la République", "Avenue Victor Hugo", "Boulevard Voltaire"),
               cities=(("Paris", "FR-75C", "75002"), ("Lyon", "FR-69M", "69002"), ("Marseille", "FR-13", "13001"),
                       ("Toulouse", "FR-31", "31000"), ("Bordeaux", "FR-33", "33000"), ("Lille", "FR-59", "59000"))),
    "NL": dict(weight=6, lang="en", currency="EUR", suffixes=("B.V.",),
               streets=("Keizersgracht", "Dorpsstraat", "Stationsweg"),
               cities=(("Amsterdam", "NL-NH", "1012 AB"), ("Rotterdam", "NL-ZH", "3011 AA"),
                       ("Utrecht", "NL-UT", "3511 AA"), ("Eindhoven", "NL-NB", "5611 AA"))),
    "BE": dict(weight=4, lang="fr", currency="EUR", suffixes=("BV", "SRL", "NV"),
               streets=("Rue Neuve", "Meir", "Veldstraat"),
               cities=(("Bruxelles", "BE-BRU", "1000"), ("Antwerpen", "BE-VAN", "2000"), ("Gent", "BE-VOV", "9000"),
                       ("Liège", "BE-WLG", "4000"))),
    "PL": dict(weight=8, lang="pl", currency="PLN", suffixes=("sp. z o.o.", "S.A."),
               streets=("ul. Marszałkowska", "ul. Floriańska", "ul. Długa", "ul. Piotrkowska"),
               cities=(("Warszawa", "PL-14", "00-001"), ("Kraków", "PL-12", "31-001"), ("Wrocław", "PL-02", "50-001"),
                       ("Gdańsk", "PL-22", "80-001"), ("Poznań", "PL-30", "60-001"))),
    "IT": dict(weight=5, lang="en", currency="EUR", suffixes=("S.r.l.", "S.p.A."),
               streets=("Via Roma", "Corso Italia", "Via Garibaldi"),
               cities=(("Roma", "IT-RM", "00184"), ("Milano", "IT-MI", "20121"), ("Torino", "IT-TO", "10121"),
                       ("Bologna", "IT-BO", "40121"))),
    "ES": dict(weight=4, lang="en", currency="EUR", suffixes=("S.L.", "S.A."),
               streets=("Calle Mayor", "Gran Vía", "Calle de Alcalá"),
               cities=(("Madrid", "ES-M", "28013"), ("Barcelona", "ES-B", "08002"), ("Valencia", "ES-V", "46002"),
                       ("Sevilla", "ES-SE", "41001"))),
    "IE": dict(weight=3, lang="en", currency="EUR", suffixes=("Ltd",),
               streets=("Grafton Street", "Main Street", "Patrick Street"),
               cities=(("Dublin", "IE-D", "D02 X285"), ("Cork", "IE-CO", "T12 W8DR"), ("Galway", "IE-G", "H91 E2K3"))),
    "SE": dict(weight=3, lang="en", currency="EUR", suffixes=("AB",),
               streets=("Drottninggatan", "Storgatan", "Kungsgatan"),
               cities=(("Stockholm", "SE-AB", "111 51"), ("Göteborg", "SE-O", "411 01"), ("Malmö", "SE-M", "211 20"))),
    "DK": dict(weight=2, lang="en", currency="EUR", suffixes=("ApS", "A/S"),
               streets=("Strøget", "Vestergade", "Nørregade"),
               cities=(("København", "DK-84", "1050"), ("Aarhus", "DK-82", "8000"))),
    "FI": dict(weight=2, lang="en", currency="EUR", suffixes=("Oy",),
               streets=("Mannerheimintie", "Hämeenkatu", "Aleksanterinkatu"),
               cities=(("Helsinki", "FI-18", "00100"), ("Tampere", "FI-11", "33100"))),
    "PT": dict(weight=2, lang="en", currency="EUR", suffixes=("Lda",),
               streets=("Rua Augusta", "Avenida da Liberdade", "Rua de Santa Catarina"),
               cities=(("Lisboa", "PT-11", "1100-053"), ("Porto", "PT-13", "4000-001"))),
    "CZ": dict(weight=2, lang="en", currency="EUR", suffixes=("s.r.o.",),
               streets=("Václavské náměstí", "Národní", "Masarykova"),
               cities=(("Praha", "CZ-10", "110 00"), ("Brno", "CZ-64", "602 00"))),
    "GB": dict(weight=3, lang="en", currency="GBP", suffixes=("Ltd", "LLP"),
               streets=("High Street", "Station Road", "Church Lane"),
               cities=(("London", "GB-LND", "EC2V 7HH"), ("Manchester", "GB-MAN", "M1 1AE"),
                       ("Edinburgh", "GB-EDH", "EH1 1YZ"))),
    "CA": dict(weight=19, lang="en", currency="CAD", suffixes=("Inc.", "Ltd.", "Corp."),
               streets=("King Street", "Rue Sainte-Catherine", "Granville Street", "Main Street", "Portage Avenue"),
               cities=(("Toronto", "CA-ON", "M5H 2N2"), ("Ottawa", "CA-ON", "K1P 1J1"), ("Montréal", "CA-QC", "H2Y 1C6"),
                       ("Québec", "CA-QC", "G1R 4P5"), ("Vancouver", "CA-BC", "V6B 1A1"),
                       ("Calgary", "CA-AB", "T2P 1J9"), ("Edmonton", "CA-AB", "T5J 0N3"), ("Halifax", "CA-NS", "B3J 1A1"),
                       ("Winnipeg", "CA-MB", "R3C 0V8"), ("Regina", "CA-SK", "S4P 3Y2"),
                       ("Moncton", "CA-NB", "E1C 4M3"), ("St. John's", "CA-NL", "A1C 5M2"),
                       ("Charlottetown", "CA-PE", "C1A 4P3"), ("Whitehorse", "CA-YT", "Y1A 1A1"))),
}
# Name pools by country (Québec uses "CA-QC").
NAMES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "DE": (("Lukas", "Leon", "Finn", "Jonas", "Paul", "Mia", "Emma", "Hannah", "Sophie", "Lena", "Julia", "Felix"),
           ("Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Hoffmann", "Koch")),
    "AT": (("Maximilian", "Tobias", "David", "Anna", "Laura", "Katharina", "Florian", "Magdalena"),
           ("Gruber", "Huber", "Bauer", "Wagner", "Pichler", "Steiner", "Moser", "Mayer")),
    "FR": (("Lucas", "Hugo", "Louis", "Jules", "Camille", "Chloé", "Léa", "Manon", "Inès", "Gabriel", "Élodie"),
           ("Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy", "Moreau")),
    "BE": (("Noah", "Arthur", "Louis", "Olivia", "Emma", "Louise", "Lotte", "Wout"),
           ("Peeters", "Janssens", "Maes", "Jacobs", "Dubois", "Lambert", "Willems", "Claes")),
    "NL": (("Daan", "Sem", "Lars", "Sanne", "Fleur", "Eva", "Bram", "Noor"),
           ("de Jong", "Jansen", "de Vries", "van den Berg", "Bakker", "Visser", "Smit", "Mulder")),
    "PL": (("Jakub", "Antoni", "Jan", "Szymon", "Zuzanna", "Julia", "Maja", "Zofia", "Katarzyna", "Piotr"),
           ("Nowak", "Kowalski", "Wiśniewski", "Wójcik", "Kowalczyk", "Kamiński", "Lewandowski", "Zieliński")),
    "IT": (("Marco", "Giulia", "Alessandro", "Francesca", "Luca", "Chiara", "Matteo", "Sara"),
           ("Rossi", "Russo", "Ferrari", "Esposito", "Bianchi", "Romano", "Colombo", "Ricci")),
    "ES": (("Hugo", "Lucía", "Martín", "Sofía", "Pablo", "Carmen", "Javier", "Elena"),
           ("García", "Fernández", "González", "Rodríguez", "López", "Martínez", "Sánchez", "Pérez")),
    "IE": (("Seán", "Aoife", "Conor", "Niamh", "Cian", "Saoirse", "Darragh", "Ciara"),
           ("Murphy", "Kelly", "O'Sullivan", "Walsh", "O'Brien", "Byrne", "Ryan", "O'Connor")),
    "SE": (("Erik", "Astrid", "Lars", "Elsa", "Nils", "Maja", "Oskar", "Ingrid"),
           ("Andersson", "Johansson", "Karlsson", "Nilsson", "Eriksson", "Larsson", "Olsson", "Persson")),
    "DK": (("Mads", "Freja", "Magnus", "Ida", "Rasmus", "Sofie"),
           ("Jensen", "Nielsen", "Hansen", "Pedersen", "Andersen", "Christensen")),
    "FI": (("Mikko", "Aino", "Juha", "Emilia", "Ville", "Helmi"),
           ("Virtanen", "Korhonen", "Mäkinen", "Nieminen", "Mäkelä", "Hämäläinen")),
    "PT": (("João", "Maria", "Tiago", "Beatriz", "Rodrigo", "Inês"),
           ("Silva", "Santos", "Ferreira", "Pereira", "Oliveira", "Costa")),
    "CZ": (("Jakub", "Tereza", "Tomáš", "Eliška", "Jan", "Anna"),
           ("Novák", "Svoboda", "Novotný", "Dvořák", "Černý", "Procházka")),
    "GB": (("Oliver", "Amelia", "George", "Isla", "Harry", "Ava", "Jack", "Emily"),
           ("Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Davies", "Evans")),
    "CA": (("Liam", "Noah", "Olivia", "Emma", "Ethan", "Charlotte", "Lucas", "Amelia", "Owen", "Chloe"),
           ("Smith", "Brown", "Tremblay", "Wilson", "MacDonald", "Campbell", "Anderson", "Taylor", "Lee", "Martin")),
    "CA-QC": (("Félix", "Léa", "William", "Alice", "Samuel", "Florence", "Mathis", "Juliette"),
              ("Tremblay", "Gagnon", "Roy", "Côté", "Bouchard", "Gauthier", "Morin", "Lavoie")),
}
# Canadian area codes by province / territory (phonenumbers checks the result).
CA_AREA_CODES = {
    "CA-AB": "403", "CA-BC": "604", "CA-MB": "204", "CA-NB": "506", "CA-NL": "709", "CA-NS": "902", "CA-NT": "867",
    "CA-NU": "867", "CA-ON": "416", "CA-PE": "902", "CA-QC": "514", "CA-SK": "306", "CA-YT": "867",
}
COMPANY_WORDS = ("Nordlicht", "Bluewave", "Pixelwerk", "Atlas", "Cloudnine", "Kestrel", "Lumen", "Granite",
                 "Harbor", "Quantum", "Evergreen", "Polaris", "Brightside", "Maple", "Ironbridge", "Fjord")
NOTES = (
    "Called about the renewal; wants a quote for two more servers.",
    "Prefers contact by email, not phone.",
    "Asked for an invoice copy for their accountant.",
    "Migrated from the old panel; check the DNS records once more.",
    "Discussed an upgrade to the Business plan next quarter.",
    "Paid late twice this year; reminder sent.",
    "Requested a callback from the technical team.",
    "Interested in the reseller programme.",
)
STICKY_NOTES = (
    "VIP: call the account owner before any suspension.",
    "Do not send marketing email (requested in writing).",
    "Disputed charge under review, do not auto-suspend without checking.",
    "Chargeback received; contact billing before accepting new orders.",
)
BLOCK_REASONS = ("Chargeback on the last payment.", "Identity could not be verified.", "Abuse report under review.")

# Check-digit templates for valid tax ids: '#' is a random digit, '?' a check position tried until
# validation.normalize_tax_id accepts the number (python-stdnum does the checking).
TAX_ID_TEMPLATES = {
    "DE": "DE1#######?",
    "AT": "ATU1######?",
    "NL": "NL1#######?B01",
    "PL": "PL5########?",
    "IT": "IT1######001?",
    "BE": "BE01######??",
    "DK": "DK2######?",
    "FI": "FI1######?",
    "PT": "PT5#######?",
    "SE": "SE5########?01",
    "CZ": "CZ2######?",
    "FR": "FR??1#######?",
    "GB": "GB2######??",
    "CA": "1#######?RT0001",
}


def make_tax_id(rng: random.Random, country: str) -> str:
    """A tax id with valid check digits for the country, or "" when there is no template."""
    template = TAX_ID_TEMPLATES.get(country)
    if not template:
        return ""
    slots = template.count("?")
    for _ in range(20):
        body = "".join(str(rng.randrange(10)) if ch == "#" else ch for ch in template)
        for n in range(10 ** slots):
            digits = iter(f"{n:0{slots}d}")
            candidate = "".join(next(digits) if ch == "?" else ch for ch in body)
            try:
                return normalize_tax_id(candidate, country) or ""
            except DomainError:
                continue
    return ""


def make_phone(rng: random.Random, country: str, region: str = "") -> str:
    """An E.164 number phonenumbers accepts: the region's example mobile number with varied last digits
    (in Canada: a local number of the province's area code)."""
    example = phonenumbers.example_number_for_type(country, phonenumbers.PhoneNumberType.MOBILE)
    if example is None:
        return ""
    national = str(example.national_number)
    for _ in range(50):
        if country == "CA" and region in CA_AREA_CODES:
            number = f"{CA_AREA_CODES[region]}{rng.randint(200, 999)}{rng.randrange(10_000):04d}"
        else:
            number = national[:-4] + f"{rng.randrange(10_000):04d}"
        candidate = phonenumbers.PhoneNumber(country_code=example.country_code, national_number=int(number))
        if phonenumbers.is_valid_number(candidate):
            return phonenumbers.format_number(candidate, phonenumbers.PhoneNumberFormat.E164)
    return phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)


def _status_for(index: int, rng: random.Random) -> str:
    if index <= len(CLIENT_STATUSES):  # the first clients cover every status, whatever client_count is
        return CLIENT_STATUSES[index - 1]
    return rng.choices(CLIENT_STATUSES, weights=(10, 62, 10, 8, 7, 3))[0]


def _place(rng: random.Random) -> tuple[str, dict, tuple[str, str, str]]:
    countries = list(PLACES)
    country = rng.choices(countries, weights=[PLACES[c]["weight"] for c in countries])[0]
    place = PLACES[country]
    city = rng.choice(place["cities"])
    if city[1] not in {code for code, _ in regions(country)}:  # pycountry renamed it: leave the region out
        city = (city[0], "", city[2])
    return country, place, city


# --- loaders ---------------------------------------------------------------------------------------------


def _ensure_reference(session) -> dict[str, Any]:
    currencies = {c.code: c for c in session.scalars(select(Currency))}
    has_default = any(c.is_default for c in currencies.values())
    for code, prefix, suffix, rate in CURRENCIES:
        if code not in currencies:
            is_default = code == "EUR" and not has_default
            currencies[code] = Currency(code=code, prefix=prefix, suffix=suffix, minor_units=2,
                                        exchange_rate=rate, is_default=is_default)
            session.add(currencies[code])

    companies = {c.name: c for c in session.scalars(select(HomeCompany))}
    has_default = any(c.is_default for c in companies.values())
    for spec in HOME_COMPANIES:
        if spec["name"] not in companies:
            values = dict(spec, is_default=spec["is_default"] and not has_default)
            companies[spec["name"]] = HomeCompany(**values)
            session.add(companies[spec["name"]])
    session.flush()
    eu_company, ca_company = (companies[spec["name"]] for spec in HOME_COMPANIES)

    # EU VAT and Canada rule sets (only the missing rules: existing ones are never overwritten).
    install_eu_rules(eu_company, overwrite=False)
    install_canada_rules(ca_company, overwrite=False)
    # Everyone else (outside the EU and Canada): billed by the EU company without VAT (export of services).
    catch_all = select(TaxRule.id).where(TaxRule.category == "", TaxRule.country == "", TaxRule.region == "")
    if session.scalar(catch_all) is None:
        session.add(TaxRule(category="", country="", region="", home_company_id=eu_company.id))

    groups = {g.name: g for g in session.scalars(select(ClientGroup))}
    for name, color, description in GROUPS:
        if name not in groups:
            groups[name] = ClientGroup(name=name, color=color, description=description)
            session.add(groups[name])
    tags = {t.name: t for t in session.scalars(select(Tag))}
    for name, color in TAGS:
        if name not in tags:
            tags[name] = Tag(name=name, color=color)
            session.add(tags[name])
    fields = {f.name: f for f in session.scalars(select(CustomField))}
    for spec in CUSTOM_FIELDS:
        if spec["name"] not in fields:
            fields[spec["name"]] = CustomField(**spec)
            session.add(fields[spec["name"]])
    session.commit()
    return {"currencies": currencies, "groups": groups, "tags": tags, "fields": fields}


def _ensure_managers(session) -> tuple[list[User], dict[str, str]]:
    sm = current_app.appbuilder.sm
    role = sm.find_role(MANAGER_ROLE)
    managers, passwords = [], {}
    for username, first, last, email in MANAGERS:
        user = sm.find_user(username=username)
        if user is None:
            if role is None:
                raise DemoError(f"The {MANAGER_ROLE} role does not exist: run `puqpanel init` first.")
            password = generate_password()
            user = sm.add_user(username, first, last, email, role, password)
            if not user:
                raise DemoError(f"Could not create the staff user {username} (is {email} taken?).")
            passwords[f"{username} password"] = password
        managers.append(user)
    return managers, passwords


def _language(preferred: str) -> str:
    offered = current_app.config.get("LANGUAGES") or {"en": {}}
    return preferred if preferred in offered else ("en" if "en" in offered else next(iter(offered)))


def _make_client(index: int, ref: dict, managers: list[User], parents: dict[int, int], owner_hash: str) -> Client:
    from . import custom_fields, notes
    from .addresses import create_address
    from .client_users import associate_existing, create_and_associate
    from .clients import NewClient, create_client
    from .profile import profile_form_data, update_profile

    rng = random.Random(SEED * 100_000 + index)
    country, place, (city, region, postcode) = _place(rng)
    first_names, last_names = NAMES["CA-QC" if region == "CA-QC" else country]
    firstname, lastname = rng.choice(first_names), rng.choice(last_names)
    is_company = rng.random() < 0.5
    company = f"{rng.choice(COMPANY_WORDS)} {lastname} {rng.choice(place['suffixes'])}" if is_company else ""
    tax_id = make_tax_id(rng, country) if is_company and rng.random() < 0.7 else ""
    currency = ref["currencies"]["USD" if rng.random() < 0.06 else place["currency"]]
    group_name = rng.choice([None, None, None, *[g[0] for g in GROUPS]])
    tag_ids = [ref["tags"][name].id for name in rng.sample([t[0] for t in TAGS], k=rng.choice((0, 0, 1, 1, 2)))]
    manager = rng.choices([None, *managers], weights=[40] + [30] * len(managers))[0]
    status = _status_for(index, rng)

    data = NewClient(
        email=demo_email(index), firstname=firstname, lastname=lastname, company_name=company, tax_id=tax_id,
        phone=make_phone(rng, country, region), language=_language("fr" if region == "CA-QC" else place["lang"]),
        currency_id=currency.id, status=status, group_id=ref["groups"][group_name].id if group_name else None,
        manager_id=manager.id if manager is not None else None,
        address1=f"{rng.choice(place['streets'])} {rng.randint(1, 180)}", address2=rng.choice(["", "", "", "2nd floor"]),
        city=city, postcode=postcode, country=country, region=region, tag_ids=tag_ids, password_hash=owner_hash,
    )
    try:
        client, _ = create_client(data)
    except DomainError as exc:
        if "tax_id" not in exc.errors:  # only a clash with a real client's tax id is expected
            raise
        data.tax_id = ""
        client, _ = create_client(data)

    # Profile details a staff member would set later: blocking, credit limit, reseller links, ID numbers.
    form = profile_form_data(client)
    if status == "fraud" or rng.random() < 0.04:
        form.update(blocked=True, blocked_reason=rng.choice(BLOCK_REASONS))
    if rng.random() < 0.2:
        form["credit_limit"] = str(rng.choice((Decimal("50"), Decimal("100"), Decimal("250"), Decimal("500"))))
    if rng.random() < 0.1:
        form["never_auto_suspend"] = True
    link_to_parent = rng.random() < 0.08
    if group_name == "Resellers":
        form["is_reseller"] = True
        parents[client.id] = client.id
    elif parents and link_to_parent:
        form["parent_id"] = str(rng.choice(sorted(parents)))
    if not is_company and rng.random() < 0.3:
        form["national_id"] = f"ID{rng.randrange(10 ** 8):08d}"
    if rng.random() < 0.15:
        form["admin_notes"] = "Onboarded at a trade fair; signed the paper contract."
    update_profile(client, form)  # writes nothing when nothing changed

    if rng.random() < 0.25:
        o_city, o_region, o_postcode = rng.choice(place["cities"])
        create_address(client, {
            "type": rng.choice(("shipping", "service")), "name": rng.choice(("Warehouse", "Office", "Data centre")),
            "contact_name": f"{rng.choice(first_names)} {lastname}",
            "contact_phone": make_phone(rng, country, o_region), "contact_email": f"ops{index:04d}@{DEMO_DOMAIN}",
            "address1": f"{rng.choice(place['streets'])} {rng.randint(1, 180)}", "city": o_city,
            "postcode": o_postcode, "country": country,
            "region": o_region if o_region in {c for c, _ in regions(country)} else "",
        })
    if rng.random() < 0.15:
        for n in range(1, rng.choice((1, 1, 2)) + 1):
            perms = rng.sample(CLIENT_PERMISSIONS, k=rng.randint(1, len(CLIENT_PERMISSIONS) - 1))
            other = rng.randrange(1, index) if index > 1 else 0
            if other and rng.random() < 0.5:
                # A login that already owns another demo client (an accountant serving several companies).
                try:
                    associate_existing(client, demo_email(other), perms)
                except DomainError:  # that client was not made (its email was taken): no link then
                    pass
            else:
                create_and_associate(client, f"user{index:04d}.{n}@{DEMO_DOMAIN}", rng.choice(first_names),
                                     lastname, perms)
    for _ in range(rng.choice((0, 1, 1, 2, 3))):
        notes.add_note(client, rng.choice(NOTES))
    if status in ("suspended", "fraud") or rng.random() < 0.1:
        notes.add_note(client, rng.choice(STICKY_NOTES), sticky=True)

    fields = ref["fields"]
    values = {
        "Account code": f"{country}-{index:04d}",
        "Industry": rng.choice(INDUSTRIES),
        "Employees": str(rng.choice((1, 2, 5, 12, 40, 150, 800))) if is_company else "",
        "Newsletter consent": rng.choice(("1", "0")),
        "Contract start": f"{rng.randint(2015, 2025)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        if is_company else "",
        "Preferred contact time": rng.choice(("", "", "Mornings", "After 16:00", "Weekdays 9-12")),
    }
    submitted = {custom_fields.form_key(f): "" for f in fields.values()}  # fields an admin added stay empty
    submitted.update({custom_fields.form_key(fields[name]): v for name, v in values.items() if name in fields})
    try:
        custom_fields.save_values(client, submitted)
    except DomainError:  # an admin's own required field the demo cannot fill: leave the values out
        pass
    return client


def _demo_owner_emails(session) -> set[str]:
    return set(session.scalars(
        select(User.email).join(ClientUser, ClientUser.user_id == User.id)
        .where(ClientUser.is_owner.is_(True), User.email.like(f"client%@{DEMO_DOMAIN}"))
    ))


# Every demo client owner login shares this password (hashed once: hashing is the slow part of a load).
DEMO_CLIENT_PASSWORD = "Demo-client1"


def load_demo(client_count: int = 200, progress: bool = True) -> dict[str, Any]:
    """Create the demo data that is missing; returns a summary (counts, and new staff passwords once)."""
    sm = current_app.appbuilder.sm
    if sm.find_role(CLIENT_ROLE) is None:
        raise DemoError(f"The {CLIENT_ROLE} role does not exist: run `puqpanel init` first.")
    session = get_session()
    ref = _ensure_reference(session)
    managers, passwords = _ensure_managers(session)

    existing = _demo_owner_emails(session)
    taken = set(session.scalars(select(User.email).where(User.email.like(f"%@{DEMO_DOMAIN}"))))
    # Reseller parents among the demo clients already there (so a top-up links to them as well).
    parents = {cid: cid for cid in session.scalars(
        select(Client.id).join(ClientUser, ClientUser.client_id == Client.id).join(User, User.id == ClientUser.user_id)
        .where(Client.is_reseller.is_(True), User.email.like(f"%@{DEMO_DOMAIN}"))
    )}
    todo = [i for i in range(1, client_count + 1) if demo_email(i) not in existing and demo_email(i) not in taken]
    created = 0
    owner_hash = hash_password(DEMO_CLIENT_PASSWORD)
    for index in tqdm(todo, desc="Demo clients", unit="client", disable=not progress):
        _make_client(index, ref, managers, parents, owner_hash)
        created += 1

    summary: dict[str, Any] = {
        "clients": len(_demo_owner_emails(session)),
        "new clients": created,
        "currencies": session.scalar(select(func.count()).select_from(Currency)),
        "home companies": session.scalar(select(func.count()).select_from(HomeCompany)),
        "tax rules": session.scalar(select(func.count()).select_from(TaxRule)),
        "client groups": session.scalar(select(func.count()).select_from(ClientGroup)),
        "tags": session.scalar(select(func.count()).select_from(Tag)),
        "custom fields": session.scalar(select(func.count()).select_from(CustomField)),
        "staff managers": ", ".join(m.username for m in managers),
    }
    from ..billing.demo import load_billing_demo

    summary.update(load_billing_demo(progress=progress))
    summary["client owner logins"] = f"client0001@{DEMO_DOMAIN} … password {DEMO_CLIENT_PASSWORD}"
    summary.update(passwords)
    return summary
