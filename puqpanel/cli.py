"""`puqpanel` console script: the Flask CLI of the bundled app plus puqpanel's own commands.

In a host app the same commands are under `flask puqpanel ...`.
"""
from __future__ import annotations

import click
from flask import current_app
from flask.cli import FlaskGroup, with_appcontext


@click.command("init")
@with_appcontext
def init_command():
    """Migrate the database to head, create the roles and sync permissions (idempotent)."""
    from flask_migrate import upgrade

    from .paths import MIGRATIONS_DIR
    from .security import sync_roles

    upgrade(directory=MIGRATIONS_DIR)
    roles = sync_roles()
    click.echo(f"Database at head; roles synced: {', '.join(roles)}")


@click.command("create-admin")
@click.option("--username", default="admin", show_default=True)
@click.option("--email", default="admin@example.com", show_default=True)
@click.option("--firstname", default="Admin", show_default=True)
@click.option("--lastname", default="User", show_default=True)
@click.option("--password", default=None, help="Blank: generate one and print it.")
@click.option("--role", default="Admin", show_default=True)
@with_appcontext
def create_admin_command(username, email, firstname, lastname, password, role):
    """Create a staff user (Admin by default); prints the credentials once. Re-running keeps the user."""
    from .domain.passwords import generate_password

    sm = current_app.appbuilder.sm
    user = sm.find_user(username=username)
    if user is not None:
        click.echo(f"User {username} already exists; nothing changed.")
        return
    role_obj = sm.find_role(role)
    if role_obj is None:
        raise click.ClickException(f"Role {role} does not exist: run `puqpanel init` first.")
    password = password or generate_password()
    if not sm.add_user(username, firstname, lastname, email, role_obj, password):
        raise click.ClickException("Could not create the user (email already used?).")
    click.echo(f"Created {role} user  username: {username}  password: {password}")


@click.command("demo")
@click.option("--clients", default=200, show_default=True, help="How many demo clients to have.")
@with_appcontext
def demo_command(clients):
    """Load realistic demo data (idempotent): home company, currencies, tax rules, groups, tags, clients."""
    from .domain.demo import load_demo

    summary = load_demo(client_count=clients, progress=True)
    click.echo("Demo data ready: " + ", ".join(f"{k} {v}" for k, v in summary.items()))


@click.command("verify-ledger")
@with_appcontext
def verify_ledger_command():
    """Prove balance == sum of ledger rows for every client and unbroken before/after chains.

    Prints "ledger OK: N clients, M transactions" and exits 0, else one line per broken client and exits 1.
    """
    from sqlalchemy import func, select

    from .billing.ledger import verify
    from .domain.session import get_session
    from .models import Client, Transaction

    problems = verify()
    if problems:
        for problem in problems:
            click.echo(f"client {problem.client_id}: {problem.problem}", err=True)
        clients = len({p.client_id for p in problems})
        click.echo(f"ledger BROKEN: {clients} client(s)", err=True)
        raise SystemExit(1)
    session = get_session()
    clients = session.scalar(select(func.count(Client.id))) or 0
    transactions = session.scalar(select(func.count(Transaction.id))) or 0
    click.echo(f"ledger OK: {clients} clients, {transactions} transactions")


from .billing_cli import billing_group  # noqa: E402

commands = [init_command, create_admin_command, demo_command, verify_ledger_command, billing_group]


@click.group("puqpanel")
def puqpanel_group():
    """puqpanel commands."""


for _command in commands:
    puqpanel_group.add_command(_command)


def _create_app():
    from .app import create_app

    return create_app()


def main() -> None:  # console script `puqpanel`
    cli = FlaskGroup(create_app=_create_app, help="puqpanel: the Flask CLI of the bundled app.")
    cli.main(prog_name="puqpanel")


if __name__ == "__main__":
    main()
