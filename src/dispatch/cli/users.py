"""Console accounts: `dispatch users add|list|set-role|disable|enable|reset`. Passwords come
from standard input (`--password-stdin`) or a hidden prompt, never from an argument (which
`ps` and shell history would show)."""

from __future__ import annotations

import getpass
import sys
from typing import Annotated

import typer

from dispatch.cli.common import ConfigOption, group, load_with_store, now, print_table, say
from dispatch.errors import DispatchError, Problem

# The store is imported inside each command: start-up stays quick.

users_app = group("Console accounts: editors, operators and admins (the /admin/ pages).")

PasswordStdin = Annotated[bool, typer.Option(
    "--password-stdin", help="Read the password from standard input (one line) instead of "
                             "prompting.")]


def _password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        if not line.strip():
            raise DispatchError(Problem("--password-stdin", "no password on standard input"))
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise DispatchError(Problem("password", "no terminal to prompt on: use "
                                                "--password-stdin"))
    first = getpass.getpass("Password: ")
    if getpass.getpass("Repeat it: ") != first:
        raise DispatchError(Problem("password", "the two entries differ; nothing changed"))
    return first


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


@users_app.command("add")
def users_add(
    email: Annotated[str, typer.Argument(help="The person's address (their sign-in name).")],
    role: Annotated[str, typer.Option(help="editor, operator or admin.")],
    password_stdin: PasswordStdin = False,
    config: ConfigOption = None,
) -> None:
    """Create a console account. It asks for the password (or reads one line from standard
    input with --password-stdin).

    Example: dispatch users add ana@example.org --role editor
    """
    from dispatch.store import accounts, audit

    accounts.check_role(role)
    accounts.account_key(email)
    _, engine = load_with_store(config)
    user = accounts.add_user(engine, email, _password(password_stdin), role, now())
    audit.record(engine, _actor(), "user.add", user.email, now(), f"role {user.role}")
    say(f"added {user.email} ({user.role})")


@users_app.command("list")
def users_list(config: ConfigOption = None) -> None:
    """Every console account with its role and whether it is disabled.

    Example: dispatch users list
    """
    from dispatch.store import accounts

    _, engine = load_with_store(config)
    people = accounts.list_users(engine)
    print_table(("email", "role", "state", "created"),
                ((u.email, u.role, "disabled" if u.disabled else "active",
                  f"{u.created_at:%Y-%m-%d}") for u in people))
    say(f"{len(people)} account(s)")


@users_app.command("set-role")
def users_set_role(
    email: Annotated[str, typer.Argument(help="The account's address.")],
    role: Annotated[str, typer.Argument(help="editor, operator or admin.")],
    config: ConfigOption = None,
) -> None:
    """Change an account's role (takes effect on its next page).

    Example: dispatch users set-role ana@example.org operator
    """
    from dispatch.store import accounts, audit

    _, engine = load_with_store(config)
    user = accounts.set_role(engine, email, role)
    audit.record(engine, _actor(), "user.set-role", user.email, now(), f"role {user.role}")
    say(f"{user.email} is now {user.role}")


@users_app.command("disable")
def users_disable(
    email: Annotated[str, typer.Argument(help="The account's address.")],
    enable: Annotated[bool, typer.Option("--enable", help="Enable it again instead.")] = False,
    config: ConfigOption = None,
) -> None:
    """Disable an account and sign it out everywhere (or --enable it again).

    Example: dispatch users disable ana@example.org
    """
    from dispatch.store import accounts, audit

    _, engine = load_with_store(config)
    user = accounts.set_disabled(engine, email, not enable)
    audit.record(engine, _actor(), "user.enable" if enable else "user.disable", user.email,
                 now())
    say(f"{user.email} {'enabled' if enable else 'disabled and signed out'}")


@users_app.command("reset")
def users_reset(
    email: Annotated[str, typer.Argument(help="The account's address.")],
    password_stdin: PasswordStdin = False,
    config: ConfigOption = None,
) -> None:
    """Set a new password for an account and sign it out everywhere.

    It asks for the new password (or reads it with --password-stdin).

    Example: dispatch users reset ana@example.org
    """
    from dispatch.store import accounts, audit

    _, engine = load_with_store(config)
    accounts.require_user(engine, email)
    user = accounts.reset_password(engine, email, _password(password_stdin))
    audit.record(engine, _actor(), "user.reset", user.email, now())
    say(f"new password set for {user.email}; its sessions are signed out")
