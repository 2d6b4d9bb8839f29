"""The items resource end to end: HTTP in, SQL on a real Postgres, problem details out."""

import httpx

from service.models import BIGINT_MAX

PROBLEM = "application/problem+json"


async def create(client: httpx.AsyncClient, name: str, price: int = 100) -> dict[str, object]:
    response = await client.post("/items", json={"name": name, "price_cents": price})
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


async def test_create_returns_201_with_location_and_the_item(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/items", json={"name": "lamp", "description": "brass", "price_cents": 4200}
    )
    assert response.status_code == 201
    item = response.json()
    assert item["name"] == "lamp"
    assert item["description"] == "brass"
    assert item["price_cents"] == 4200
    assert response.headers["location"] == f"http://testserver/items/{item['id']}"
    fetched = await client.get(response.headers["location"])
    assert fetched.status_code == 200
    assert fetched.json() == item


async def test_unknown_item_is_404_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/items/424242")
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM
    assert response.json() == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "detail": "item 424242 does not exist",
        "instance": "/items/424242",
    }


async def test_duplicate_name_is_409(client: httpx.AsyncClient) -> None:
    await create(client, "chair")
    response = await client.post("/items", json={"name": "chair", "price_cents": 1})
    assert response.status_code == 409
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["title"] == "Conflict"


async def test_validation_errors_list_every_field(client: httpx.AsyncClient) -> None:
    response = await client.post("/items", json={"name": "", "price_cents": -1, "colour": "red"})
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    locations = sorted(tuple(error["loc"]) for error in problem["errors"])
    assert locations == [("body", "colour"), ("body", "name"), ("body", "price_cents")]


async def test_out_of_range_numbers_are_422_not_500(client: httpx.AsyncClient) -> None:
    too_big = await client.post("/items", json={"name": "x", "price_cents": 10**30})
    assert too_big.status_code == 422
    huge_id = await client.get(f"/items/{BIGINT_MAX + 1}")
    assert huge_id.status_code == 422
    not_a_number = await client.get("/items/abc")
    assert not_a_number.status_code == 422


async def test_invalid_json_body_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/items", content=b'{"name": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["type"] == "json_invalid"


async def test_keyset_pagination_walks_every_item_once(client: httpx.AsyncClient) -> None:
    created = [(await create(client, f"item-{n}"))["id"] for n in range(5)]
    seen: list[object] = []
    after = 0
    pages = 0
    while True:
        page = (await client.get("/items", params={"after": after, "limit": 2})).json()
        pages += 1
        seen += [item["id"] for item in page["items"]]
        if page["next_after"] is None:
            break
        after = page["next_after"]
    assert seen == created
    assert pages == 3


async def test_list_limit_is_bounded(client: httpx.AsyncClient) -> None:
    assert (await client.get("/items", params={"limit": 101})).status_code == 422
    assert (await client.get("/items", params={"limit": 0})).status_code == 422


async def test_partial_update_changes_only_given_fields(client: httpx.AsyncClient) -> None:
    item = await create(client, "desk", 500)
    response = await client.patch(f"/items/{item['id']}", json={"price_cents": 450})
    assert response.status_code == 200
    updated = response.json()
    assert updated["price_cents"] == 450
    assert updated["name"] == "desk"
    assert str(updated["updated_at"]) > str(item["updated_at"])

    cleared = await client.patch(f"/items/{item['id']}", json={"description": None})
    assert cleared.status_code == 200
    assert cleared.json()["description"] is None


async def test_update_rejects_null_for_required_fields(client: httpx.AsyncClient) -> None:
    item = await create(client, "shelf")
    response = await client.patch(f"/items/{item['id']}", json={"name": None})
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "name"]


async def test_update_conflict_and_missing(client: httpx.AsyncClient) -> None:
    await create(client, "first")
    second = await create(client, "second")
    conflict = await client.patch(f"/items/{second['id']}", json={"name": "first"})
    assert conflict.status_code == 409
    missing = await client.patch("/items/999999", json={"name": "x"})
    assert missing.status_code == 404


async def test_delete_is_204_then_404(client: httpx.AsyncClient) -> None:
    item = await create(client, "bin")
    deleted = await client.delete(f"/items/{item['id']}")
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert (await client.get(f"/items/{item['id']}")).status_code == 404
    assert (await client.delete(f"/items/{item['id']}")).status_code == 404
