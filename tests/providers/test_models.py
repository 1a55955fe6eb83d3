"""Model discovery: which providers list their models, which document a fixed
list, and the OpenAI-compatible ``GET /v1/models`` against its simulator."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from providers import PROVIDERS, ErrorKind, ModelInfo, ProviderError, get_provider_class
from providers.bytez import BytezProvider
from providers.mymagic import MyMagicProvider
from providers.openai_compat import OpenAIProvider
from providers.simulators.openai_compat import MODELS, OpenAISimulator


@pytest.mark.parametrize(
    ("slug", "name", "documented"),
    [
        ("mymagic", "llama3_70b", True),
        ("mymagic", " mistral_7b ", True),
        ("mymagic", "llama3-70b", False),
        ("mymagic", "Llama3_70b", False),
        ("mymagic", "", False),
        ("together", "togethercomputer/RedPajama-INCITE-7B-Instruct", None),
        ("together", "anything/else", None),
        ("lamini", "meta-llama/Llama-2-7b-chat-hf", None),
        ("bytez", "openai-community/gpt2", None),
        ("gridrepublic", "gemma:2b", None),
        ("openai", "gpt-4o-mini", None),
    ],
)
def test_model_is_documented(slug: str, name: str, documented: bool | None) -> None:
    assert get_provider_class(slug).model_is_documented(name) is documented


def test_only_mymagic_documents_a_whole_list() -> None:
    assert [s for s in PROVIDERS if get_provider_class(s).documents_model_list] == ["mymagic"]
    assert set(MyMagicProvider.documented_models) == {
        "llama3_70b",
        "llama2_70b",
        "llama2_7b",
        "codellama_70b",
        "mixtral_8x7",
        "mistral_7b",
    }
    with MyMagicProvider(secret="k") as provider:
        assert provider.list_models() == [ModelInfo(n) for n in MyMagicProvider.documented_models]


def test_providers_with_a_list_endpoint() -> None:
    assert [s for s in PROVIDERS if get_provider_class(s).lists_models] == [
        "bytez",
        "openai",
        "anthropic",
    ]
    assert BytezProvider.lists_models and OpenAIProvider.lists_models


@pytest.fixture(scope="module")
def sim() -> Iterator[OpenAISimulator]:
    simulator = OpenAISimulator()
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.mark.parametrize("suffix", ["", "/v1", "/v1/"])
def test_openai_list_models_against_the_simulator(sim: OpenAISimulator, suffix: str) -> None:
    with OpenAIProvider(secret=sim.token, base_url=sim.base_url + suffix) as provider:
        assert provider.list_models() == [ModelInfo(name) for name in MODELS]


def test_openai_list_models_needs_the_key(sim: OpenAISimulator) -> None:
    provider = OpenAIProvider(secret="wrong-key-0123", base_url=sim.base_url)
    with provider, pytest.raises(ProviderError) as caught:
        provider.list_models()
    assert caught.value.kind is ErrorKind.AUTH and caught.value.status_code == 401
