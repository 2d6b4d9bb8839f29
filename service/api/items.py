"""/items: the example CRUD resource."""

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response

from service.api.access import AUTHORIZED
from service.api.access import RESPONSES as GUARDED
from service.api.deps import ItemServiceDep
from service.api.errors import UNAVAILABLE
from service.api.idempotency import RESPONSES as IDEMPOTENT
from service.api.idempotency import IdempotentDep, Outcome
from service.models import BIGINT_MAX, Item, ItemCreate, ItemPage, ItemUpdate, Problem

router = APIRouter(
    prefix="/items", tags=["items"], dependencies=AUTHORIZED, responses=GUARDED | UNAVAILABLE
)

ItemId = Annotated[int, Path(ge=1, le=BIGINT_MAX)]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Problem}}


@router.post("", response_model=Item, status_code=201, responses=IDEMPOTENT)
async def create_item(
    data: ItemCreate, idempotent: IdempotentDep, items: ItemServiceDep, request: Request
) -> Response:
    async def create() -> Outcome:
        item = await items.create(data)
        return Outcome(item, str(request.url_for("get_item", item_id=item.id)))

    return await idempotent(data, create)


@router.get("", response_model=ItemPage, status_code=200)
async def list_items(
    items: ItemServiceDep,
    after: Annotated[int, Query(ge=0, le=BIGINT_MAX, description="Last id seen.")] = 0,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> ItemPage:
    return await items.list(after, limit)


@router.get("/{item_id}", response_model=Item, status_code=200, responses=NOT_FOUND)
async def get_item(item_id: ItemId, items: ItemServiceDep) -> Item:
    return await items.get(item_id)


@router.patch("/{item_id}", response_model=Item, status_code=200, responses=NOT_FOUND | IDEMPOTENT)
async def update_item(
    item_id: ItemId, changes: ItemUpdate, idempotent: IdempotentDep, items: ItemServiceDep
) -> Response:
    async def update() -> Outcome:
        return Outcome(await items.update(item_id, changes))

    return await idempotent(changes, update)


@router.delete("/{item_id}", status_code=204, responses=NOT_FOUND | IDEMPOTENT)
async def delete_item(
    item_id: ItemId, idempotent: IdempotentDep, items: ItemServiceDep
) -> Response:
    async def delete() -> Outcome:
        await items.delete(item_id)
        return Outcome()

    return await idempotent(None, delete)
