import os
import socket

import openai
import pytest

import scripted_upstream


def make_client(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base + "/v1", api_key="sk-anything", max_retries=0, timeout=60)


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
    """Oasis without an upstream: the built-in `oasis-local` model answers every run."""
    return make_client(os.environ["OASIS_BASE_URL"])


@pytest.fixture(scope="session")
def upstream_client():
    """Oasis whose upstream is the scripted server: model `scripted-model` goes there."""
    # Both are required: a missing one is an error, not a skip.
    if "SCRIPTED_UPSTREAM_FD" not in os.environ and "SCRIPTED_UPSTREAM_PORT" not in os.environ:
        raise KeyError("SCRIPTED_UPSTREAM_FD or SCRIPTED_UPSTREAM_PORT")
    return make_client(os.environ["OASIS_UPSTREAM_OASIS_URL"])


@pytest.fixture(params=["local", "upstream"])
def backend(request):
    """(client, model): the built-in model (asked for "gpt-4o", as the cookbook does) or the
    scripted upstream model."""
    if request.param == "local":
        return request.getfixturevalue("local_client"), "gpt-4o"
    return request.getfixturevalue("upstream_client"), scripted_upstream.MODEL
