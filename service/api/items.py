"""/items: the example CRUD resource."""

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response

from service.api.deps import ItemServiceDep
from service.api.errors import UNAVAILABLE
from service.models import BIGINT_MAX, Item, ItemCreate, ItemPage, ItemUpdate, Problem

router = APIRouter(prefix="/items", tags=["items"], responses=UNAVAILABLE)

ItemId = Annotated[int, Path(ge=1, le=BIGINT_MAX)]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Problem}}
CONFLICT: dict[int | str, dict[str, Any]] = {409: {"model": Problem}}


@router.post("", response_model=Item, status_code=201, responses=CONFLICT)
async def create_item(
    data: ItemCreate, items: ItemServiceDep, request: Request, response: Response
) -> Item:
    item = await items.create(data)
    response.headers["Location"] = str(request.url_for("get_item", item_id=item.id))
    return item


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


@router.patch("/{item_id}", response_model=Item, status_code=200, responses=NOT_FOUND | CONFLICT)
async def update_item(item_id: ItemId, changes: ItemUpdate, items: ItemServiceDep) -> Item:
    return await items.update(item_id, changes)


@router.delete("/{item_id}", status_code=204, responses=NOT_FOUND)
async def delete_item(item_id: ItemId, items: ItemServiceDep) -> None:
    await items.delete(item_id)
