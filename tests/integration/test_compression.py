"""Compression at the edge: zstd or gzip as the client asks, identity otherwise, same JSON."""

import pytest

from tests.integration.stack import Stack

LARGE_JSON = "/openapi.json"  # several kB of JSON from the app


@pytest.mark.parametrize(
    ("accept", "expected"), [("zstd", "zstd"), ("gzip", "gzip"), ("zstd, gzip", "zstd")]
)
def test_large_json_is_compressed_as_asked(stack: Stack, accept: str, expected: str) -> None:
    with stack.client() as client:
        plain = client.get(LARGE_JSON, headers={"Accept-Encoding": "identity"})
        compressed = client.get(LARGE_JSON, headers={"Accept-Encoding": accept})
    assert "content-encoding" not in plain.headers
    assert compressed.headers["content-encoding"] == expected
    assert "accept-encoding" in compressed.headers["vary"].lower()
    assert int(compressed.headers.get("content-length", 0)) < len(plain.content) or (
        compressed.num_bytes_downloaded < len(plain.content)
    )
    assert compressed.json() == plain.json()  # httpx decodes zstd and gzip


def test_no_accept_encoding_means_identity(stack: Stack) -> None:
    with stack.client() as client:
        response = client.get(LARGE_JSON, headers={"Accept-Encoding": ""})
    assert "content-encoding" not in response.headers
    assert len(response.content) > 1024


def test_tiny_responses_are_not_compressed(stack: Stack) -> None:
    with stack.client() as client:
        response = client.get("/healthz", headers={"Accept-Encoding": "zstd, gzip"})
    assert len(response.content) < 512
    assert "content-encoding" not in response.headers
