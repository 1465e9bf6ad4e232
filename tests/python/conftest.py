import os

import openai
import pytest


@pytest.fixture(scope="session")
def client():
    base = os.environ["OASIS_BASE_URL"]
    return openai.OpenAI(base_url=base + "/v1", api_key="sk-anything", max_retries=0)
