"""Items: the example resource. Replace it with your domain; keep the shape."""

from service.db import items as queries
from service.db.pool import Connection
from service.domain.errors import Conflict, NotFound
from service.models import Item, ItemCreate, ItemPage, ItemUpdate


class ItemService:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    async def create(self, data: ItemCreate) -> Item:
        try:
            return await queries.insert(
                self._connection, data.name, data.description, data.price_cents
            )
        except queries.DuplicateName as error:
            raise Conflict(f"an item named {data.name!r} exists") from error

    async def get(self, item_id: int) -> Item:
        item = await queries.get(self._connection, item_id)
        if item is None:
            raise NotFound(f"item {item_id} does not exist")
        return item

    async def list(self, after: int, limit: int) -> ItemPage:
        rows = await queries.list_after(self._connection, after, limit + 1)
        has_more = len(rows) > limit
        page = rows[:limit]
        return ItemPage(items=page, next_after=page[-1].id if has_more else None)

    async def update(self, item_id: int, changes: ItemUpdate) -> Item:
        fields = changes.model_dump(exclude_unset=True)
        try:
            item = await queries.update(self._connection, item_id, fields)
        except queries.DuplicateName as error:
            raise Conflict(f"an item named {fields.get('name')!r} exists") from error
        if item is None:
            raise NotFound(f"item {item_id} does not exist")
        return item

    async def delete(self, item_id: int) -> None:
        if not await queries.delete(self._connection, item_id):
            raise NotFound(f"item {item_id} does not exist")
