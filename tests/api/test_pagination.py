"""Pagination across more than 1,000 source servers: MGN's default page of 1,000, maxResults, nextToken, and
boto3's paginator, on each backend."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from .conftest import Api, ServerFactory, make_api

pytestmark = pytest.mark.slow  # registering 1,050 servers takes 20-40 s

COUNT = 1050


@pytest.fixture(scope="module")
def many(servers: ServerFactory) -> tuple[Api, list[str]]:
    """A server holding 1,050 source servers, registered through the agent API as agents would."""
    api = make_api(servers.new("--max-active-source-servers", "2000"))
    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(lambda i: str(api.agent.register(f"fleet-{i:04d}")["sourceServerID"]), range(COUNT)))
    assert len(set(ids)) == COUNT
    # Registered concurrently, so the servers' order is the order their registrations committed.
    listed = api.mgn.get_paginator("describe_source_servers").paginate().build_full_result()["items"]
    order = [s["sourceServerID"] for s in listed]
    assert sorted(order) == sorted(ids)
    return api, order


def test_default_page_is_1000_then_the_rest(many: tuple[Api, list[str]]) -> None:
    api, ids = many
    first = api.mgn.describe_source_servers()
    assert len(first["items"]) == 1000 and first["nextToken"]
    second = api.mgn.describe_source_servers(nextToken=first["nextToken"])
    assert len(second["items"]) == COUNT - 1000 and "nextToken" not in second
    # Stable order (registration), each server exactly once.
    assert [s["sourceServerID"] for s in first["items"] + second["items"]] == ids


def test_max_results_pages(many: tuple[Api, list[str]]) -> None:
    api, ids = many
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        kwargs = {"maxResults": 100, **({"nextToken": token} if token else {})}
        page = api.mgn.describe_source_servers(**kwargs)
        assert len(page["items"]) <= 100
        seen += [s["sourceServerID"] for s in page["items"]]
        pages += 1
        token = page.get("nextToken")
        if not token:
            break
    assert pages == 11 and seen == ids


def test_boto3_paginator_and_filters(many: tuple[Api, list[str]]) -> None:
    api, ids = many
    paginator = api.mgn.get_paginator("describe_source_servers")
    pages = list(paginator.paginate(PaginationConfig={"PageSize": 300}))
    assert [len(p["items"]) for p in pages] == [300, 300, 300, 150]
    assert [s["sourceServerID"] for p in pages for s in p["items"]] == ids
    filtered = paginator.paginate(filters={"lifeCycleStates": ["NOT_READY"], "isArchived": False},
                                  PaginationConfig={"PageSize": 1000}).build_full_result()
    assert len(filtered["items"]) == COUNT
    subset = ids[5:205]  # the filter takes at most 200 IDs
    by_id = paginator.paginate(filters={"sourceServerIDs": subset}, PaginationConfig={"PageSize": 64}).build_full_result()
    assert [s["sourceServerID"] for s in by_id["items"]] == subset
    assert paginator.paginate(filters={"lifeCycleStates": ["CUTOVER"]}).build_full_result()["items"] == []
