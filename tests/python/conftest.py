import os

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
    its upstream, on 127.0.0.1:$SCRIPTED_UPSTREAM_PORT, when that variable is set."""
    port = os.environ.get("SCRIPTED_UPSTREAM_PORT")
    if port is None:
        yield None
        return
    server = scripted_upstream.serve(int(port))
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
    os.environ["SCRIPTED_UPSTREAM_PORT"]  # both are required: a missing one is an error, not a skip
    return make_client(os.environ["OASIS_UPSTREAM_OASIS_URL"])


@pytest.fixture(params=["local", "upstream"])
def backend(request):
    """(client, model): the built-in model (asked for "gpt-4o", as the cookbook does) or the
    scripted upstream model."""
    if request.param == "local":
        return request.getfixturevalue("local_client"), "gpt-4o"
    return request.getfixturevalue("upstream_client"), scripted_upstream.MODEL
