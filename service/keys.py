"""API keys from the command line, inside the app container (no HTTP endpoint makes keys):

    python -m service.keys create --name NAME --scope items:read [--scope ...] [--expires-in-days N]
    python -m service.keys list
    python -m service.keys revoke NAME

`create` prints the key once, as the last line of standard output (messages go to standard
error), so that `KEY=$(... create ...)` captures it. Exit status: 0 done, 1 refused (a live key
of that name exists; no live key of that name), 2 bad arguments.
"""

import argparse
import asyncio
import re
import sys
from collections.abc import Sequence
from datetime import timedelta

from service.db.pool import dedicated_connection
from service.domain.errors import Conflict, NotFound
from service.domain.keys import KeyService
from service.models import KEY_NAME_PATTERN, ApiKey, Scope
from service.settings import Settings


def _name(value: str) -> str:
    if not re.fullmatch(KEY_NAME_PATTERN, value):
        raise argparse.ArgumentTypeError(
            "a name is 1 to 63 of a-z 0-9 . _ -, starting with a letter or digit"
        )
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m service.keys", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="make a key and print it once")
    create.add_argument("--name", type=_name, required=True, help="shown in logs and metrics")
    create.add_argument(
        "--scope",
        dest="scopes",
        action="append",
        required=True,
        choices=[str(scope) for scope in Scope],
        help="repeat for several",
    )
    create.add_argument("--expires-in-days", type=int, help="no expiry without it")
    commands.add_parser("list", help="every key: name, scopes, dates (never the key)")
    revoke = commands.add_parser("revoke", help="a key stops working (within the cache bound)")
    revoke.add_argument("name", type=_name)
    return parser


def _describe(key: ApiKey) -> str:
    state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "live"
    expiry = f"expires {key.expires_at:%Y-%m-%d %H:%M}" if key.expires_at else "no expiry"
    scopes = ",".join(key.scopes)
    return f"{key.name}\t{scopes}\tcreated {key.created_at:%Y-%m-%d %H:%M}\t{expiry}\t{state}"


async def _run(arguments: argparse.Namespace) -> None:
    async with dedicated_connection(Settings()) as connection:
        keys = KeyService(connection)
        if arguments.command == "create":
            days = arguments.expires_in_days
            record, key = await keys.create(
                arguments.name,
                sorted({Scope(scope) for scope in arguments.scopes}),
                timedelta(days=days) if days else None,
            )
            print(f"created: {_describe(record)}", file=sys.stderr)
            print("the key is shown only now; store it as a secret:", file=sys.stderr)
            print(key)
        elif arguments.command == "list":
            for record in await keys.list():
                print(_describe(record))
        else:
            record = await keys.revoke(arguments.name)
            print(f"revoked: {_describe(record)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    try:
        asyncio.run(_run(arguments))
    except (Conflict, NotFound) as refused:
        print(f"error: {refused}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
