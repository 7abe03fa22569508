"""Which pool a model name reaches: a bare name only where one pool serves it."""

import asyncio
import json
import threading

import kubernetes

from gpucost.gateway import PoolLoad, Route
from gpucost.gatewaykube import KubeDirectory


class Pools:
    client = kubernetes.client.ApiClient()

    def __init__(self, pools):
        self.pools = pools

    def inference_pools(self):
        return self.pools


def pool(namespace, name, served=None, deleting=False):
    meta = {"namespace": namespace, "name": name}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-02T00:00:00Z"
    return {"metadata": meta, "spec": {"servedModelName": served} if served else {}}


class Directory(KubeDirectory):
    def _endpoints(self, namespace, service):
        return [f"{namespace}-{service}:8000"]


def test_a_name_two_namespaces_serve_is_only_routed_qualified():
    d = Directory(Pools([pool("a", "llm"), pool("b", "llm"), pool("b", "chat", served="c")]), "g")
    d.refresh()
    assert d.lookup("llm") is None
    assert d.lookup("a/llm").endpoints == ["a-llm:8000"] and d.lookup("b/llm").namespace == "b"
    assert d.lookup("c").name == "chat" and d.lookup("b/c").model == "c"


def test_a_pools_hold_settings_reach_its_route():
    scaling = {"holdTimeout": "2m", "holdQueue": 7, "ttftObjective": "1500ms"}
    held = pool("a", "llm") | {"spec": {"autoscaling": scaling, "maxConcurrency": 3}}
    d = Directory(Pools([held, pool("b", "chat")]), "g")
    d.refresh()
    route = d.lookup("llm")
    assert (route.hold_timeout_s, route.hold_queue, route.max_in_flight) == (120, 7, 3)
    assert route.ttft_objective_s == 1.5 and d.lookup("chat").ttft_objective_s is None


def test_a_pool_being_deleted_gives_its_name_up():
    d = Directory(Pools([pool("a", "llm", deleting=True), pool("b", "llm")]), "g")
    d.refresh()
    assert d.lookup("llm").namespace == "b" and d.lookup("a/llm") is None


def test_a_burst_of_held_requests_is_a_write_or_two_each_with_the_load_as_it_is_then():
    class Slow(Directory):
        def __init__(self, *args):
            super().__init__(*args)
            self.writes, self.first = [], threading.Event()

        def _write(self, route, load):
            self.first.wait(5)  # the API is slow: the burst arrives during the first write
            self.writes.append(load.wire(0)["held"])

    async def burst():
        d = Slow(Pools([]), "g")
        route, load = Route("ns", "llm"), PoolLoad()
        for _ in range(1000):
            load.held += 1
            await d.signal(route, load)
        d.first.set()
        await d._writers[("ns", "llm")]
        return d.writes

    writes = asyncio.run(burst())
    assert len(writes) <= 2 and writes[-1] == 1000


def test_a_load_that_changes_while_its_write_is_in_flight_is_written_again():
    load = PoolLoad(in_flight=1)
    sent = []

    class Custom:
        def patch_namespaced_custom_object(self, *args):
            sent.append(json.loads(next(iter(args[-1]["metadata"]["annotations"].values()))))
            if len(sent) == 1:  # the request ends, with its cold start, while the API answers
                load.in_flight, load.cold_start = 0, 1.5

    pools = Pools([])
    pools.custom = Custom()
    d = Directory(pools, "g")
    asyncio.run(d.flush({("ns", "llm"): load}))
    asyncio.run(d.flush({("ns", "llm"): load}))
    asyncio.run(d.flush({("ns", "llm"): load}))  # nothing new: no third write
    assert [(s["inFlight"], s["coldStart"]) for s in sent] == [(1, None), (0, 1.5)]
