"""Which pool a model name reaches: a bare name only where one pool serves it."""

import kubernetes

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


def test_a_pool_being_deleted_gives_its_name_up():
    d = Directory(Pools([pool("a", "llm", deleting=True), pool("b", "llm")]), "g")
    d.refresh()
    assert d.lookup("llm").namespace == "b" and d.lookup("a/llm") is None
