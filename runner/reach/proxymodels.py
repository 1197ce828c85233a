"""The model names a LiteLLM proxy serves (``GET /v1/models``, wildcard routes such as
``openai/*`` included), for ``omni validate --deep``. Plain httpx, imported only when
asked; its errors become a :class:`ModelError`."""

from __future__ import annotations

from runner.core.errors import ModelError


async def proxy_model_names(url: str, key: str | None, wait_s: float) -> list[str]:
    """The ``id`` of every model the proxy at ``url`` lists, in its order (within
    ``wait_s`` seconds)."""
    import httpx  # noqa: PLC0415 # pylint: disable=import-outside-toplevel  # lazy

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        async with httpx.AsyncClient(timeout=wait_s) as client:
            # With its wildcard routes ("*", "openai/*"): names those let through resolve.
            response = await client.get(
                f"{url.rstrip('/')}/v1/models",
                params={"return_wildcard_routes": "true"},
                headers=headers,
            )
    except httpx.HTTPError as exc:
        raise ModelError(None, f"cannot list the proxy's models: {type(exc).__name__}") from None
    if response.status_code != 200:
        raise ModelError(None, f"the proxy's model list answered HTTP {response.status_code}")
    try:
        data = response.json().get("data")
    except (ValueError, AttributeError):
        data = None
    if not isinstance(data, list):
        raise ModelError(None, "the proxy's model list is not OpenAI-shaped ({data: [...]})")
    return [str(item["id"]) for item in data if isinstance(item, dict) and "id" in item]
