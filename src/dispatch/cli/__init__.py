"""The `dispatch` command: a thin shell over the library. Every command has help and an example.

Each command group lives in its own module; this one assembles them in the order
`dispatch --help` lists them.
"""

from __future__ import annotations

from typing import Annotated

import typer

from dispatch import __version__
from dispatch.cli import compose, daemon, demo, inbound, sending, start, subscribers, users
from dispatch.cli.archive import archive_app
from dispatch.cli.common import DispatchGroup, keep_examples, out
from dispatch.cli.schedule import schedule_app

app = typer.Typer(cls=DispatchGroup, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None,  # plain help: Rich's help renderer costs 0.1 s of start-up
                  add_completion=False,
                  help=keep_examples("""dispatch: compose newsletter issues from briefs and
                  deliver them.

                  New here? `dispatch demo` runs the whole path on this machine, and
                  `dispatch init news` starts a project of your own.

                  Example: dispatch check"""))


def _version(value: bool) -> None:
    if value:
        out.print(f"dispatch {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version,
                                                is_eager=True, help="Show the version.")] = False
          ) -> None:
    """dispatch: compose newsletter issues from briefs and deliver them.

    Example: dispatch check
    """


for command in (start.init, compose.check, compose.preview, subscribers.segments, sending.send,
                sending.worker, sending.status, demo.demo, demo.sink, sending.pause,
                sending.resume, daemon.run, daemon.serve):
    app.command()(command)
compose.brief_app.command("new")(start.brief_new)
app.add_typer(compose.brief_app, name="brief")
app.add_typer(start.issue_app, name="issue")
app.add_typer(subscribers.subscribers_app, name="subscribers")
app.add_typer(subscribers.db_app, name="db")
app.add_typer(schedule_app, name="schedule")
app.add_typer(inbound.inbound_app, name="inbound")
app.add_typer(archive_app, name="archive")
app.add_typer(users.users_app, name="users")


def main() -> None:
    app()
