"""The database password of every new connection, for rotation without a restart
(SECURITY.md, "Rotating the database password").

From a file (APP_DATABASE_PASSWORD_FILE) it is read again for each connection, so that
connections made after `scripts/rotate-db-password` use the new password while those already
open carry on (Postgres checks a password only when a session starts)."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from service.settings import Settings

Connect = Callable[..., Awaitable[asyncpg.Connection]]

# The rotation changes the role's password a moment before it renames the new file into place:
# a connection refused in between waits up to this long for the file to change, then tries once
# more. Well within the connect timeout, and long past the rotation's own gap (milliseconds).
ROTATION_GRACE_SECONDS = 1.0
ROTATION_POLL_SECONDS = 0.05


class Password:
    """Connects with the password as it is now, and once more when it was just rotated."""

    def __init__(self, settings: Settings, connect: Connect = asyncpg.connect) -> None:
        self._file = settings.database_password_file
        fixed = settings.database_password
        self._fixed = fixed.get_secret_value() if fixed else None
        self._connect = connect

    async def current(self) -> str | None:
        if self._file is None:
            return self._fixed
        return (await asyncio.to_thread(self._file.read_text)).strip()

    async def connect(self, *args: Any, **kwargs: Any) -> asyncpg.Connection:
        password = await self.current()
        try:
            return await self._connect(*args, **{**kwargs, "password": password})
        except asyncpg.InvalidPasswordError:
            rotated = await self._rotated(password)
            if rotated is None:
                raise
            return await self._connect(*args, **{**kwargs, "password": rotated})

    async def _rotated(self, refused: str | None) -> str | None:
        """The file's new password once it differs from the one refused; None when it stays
        the same for ROTATION_GRACE_SECONDS (the password is wrong, not rotating)."""
        if self._file is None:
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ROTATION_GRACE_SECONDS
        while loop.time() < deadline:
            await asyncio.sleep(ROTATION_POLL_SECONDS)
            password = await self.current()
            if password != refused:
                return password
        return None
