import os
import socket
import threading

import httpx2
import openai
import pytest

import scripted_upstream


class RoundRobin(httpx2.BaseTransport):
    """Sends each request to the next of several Oasis nodes of one cluster, in turn (a load
    balancer in front of them): `bases` are the nodes' base URLs, which differ only in host and
    port."""

    def __init__(self, bases: list[str]):
        self._nodes = [httpx2.URL(b) for b in bases]
        self._turn = 0
        self._lock = threading.Lock()
        self._inner = httpx2.HTTPTransport()

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        with self._lock:
            node = self._nodes[self._turn % len(self._nodes)]
            self._turn += 1
        request.url = request.url.copy_with(scheme=node.scheme, host=node.host, port=node.port)
        request.headers["Host"] = node.netloc.decode("ascii")
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


def make_client(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base + "/v1", api_key="sk-anything", max_retries=0, timeout=60)


def make_cluster_client(bases: str) -> openai.OpenAI:
    """A client of the nodes of one Oasis cluster, `bases` their comma-separated base URLs:
    each request goes to the next node."""
    nodes = [b.strip() for b in bases.split(",") if b.strip()]
    http_client = httpx2.Client(transport=RoundRobin(nodes), timeout=60, trust_env=False)
    return openai.OpenAI(base_url=nodes[0] + "/v1", api_key="sk-anything", max_retries=0, timeout=60,
                         http_client=http_client)


def client_of(var: str) -> openai.OpenAI:
    """A client of the Oasis at $var, or of the cluster whose nodes $var + "S" lists."""
    if os.environ.get(var + "S"):
        return make_cluster_client(os.environ[var + "S"])
    return make_client(os.environ[var])


@pytest.fixture(scope="session")
def client():
    base = os.environ["OASIS_BASE_URL"]
    return openai.OpenAI(base_url=base + "/v1", api_key="sk-anything", max_retries=0)


@pytest.fixture(scope="session", autouse=True)
def scripted_upstream_server():
    """The scripted Chat Completions server the second Oasis (OASIS_UPSTREAM_OASIS_URL) uses as
    its upstream, in this process (tests script it through the module), on the listening socket
    inherited as descriptor $SCRIPTED_UPSTREAM_FD (how the Rust test starts this suite: it binds
    port 0 itself, so the port is known before that Oasis starts), or on
    127.0.0.1:$SCRIPTED_UPSTREAM_PORT; none when neither is set."""
    fd = os.environ.get("SCRIPTED_UPSTREAM_FD")
    port = os.environ.get("SCRIPTED_UPSTREAM_PORT")
    if fd is not None:
        server = scripted_upstream.serve(sock=socket.socket(fileno=int(fd)))
    elif port is not None:
        server = scripted_upstream.serve(int(port))
    else:
        yield None
        return
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def local_client():
    """Oasis without an upstream: the built-in `oasis-local` model answers every run. With
    OASIS_BASE_URLS (a cluster's nodes, comma-separated), requests are spread over the nodes."""
    return client_of("OASIS_BASE_URL")


@pytest.fixture(scope="session")
def upstream_client():
    """Oasis whose upstream is the scripted server: model `scripted-model` goes there. With
    OASIS_UPSTREAM_OASIS_URLS (a cluster's nodes, comma-separated), requests are spread over
    the nodes."""
    # Both are required: a missing one is an error, not a skip.
    if "SCRIPTED_UPSTREAM_FD" not in os.environ and "SCRIPTED_UPSTREAM_PORT" not in os.environ:
        raise KeyError("SCRIPTED_UPSTREAM_FD or SCRIPTED_UPSTREAM_PORT")
    return client_of("OASIS_UPSTREAM_OASIS_URL")


@pytest.fixture(params=["local", "upstream"])
def backend(request):
    """(client, model): the built-in model (asked for "gpt-4o", as the cookbook does) or the
    scripted upstream model."""
    if request.param == "local":
        return request.getfixturevalue("local_client"), "gpt-4o"
    return request.getfixturevalue("upstream_client"), scripted_upstream.MODEL
