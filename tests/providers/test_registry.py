"""The adapter and simulator registries: every entry imports, and one that does
not is reported by name instead of silently dropping its provider."""

from __future__ import annotations

from pathlib import Path

import pytest

import providers
from providers import PROVIDERS, Provider, get_provider_class, import_errors, simulators
from providers.simulators import SIMULATORS, Simulator, get_simulator_class


def test_every_registered_adapter_imports() -> None:
    assert import_errors() == {}
    for slug in PROVIDERS:
        cls = get_provider_class(slug)
        assert issubclass(cls, Provider) and cls.slug == slug


def test_every_registered_simulator_imports() -> None:
    assert simulators.import_errors() == {}
    assert simulators.available() == list(SIMULATORS)
    for slug in SIMULATORS:
        assert issubclass(get_simulator_class(slug), Simulator)


def test_available_no_longer_hides_adapters() -> None:
    assert not hasattr(providers, "available")


@pytest.fixture
def exploding_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "exploding_adapter.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "exploding_adapter"


def test_import_errors_names_each_broken_entry(exploding_module: str) -> None:
    registry = {
        "together": PROVIDERS["together"],
        "missing": ("providers.no_such_adapter", "NoProvider", "Missing"),
        "noclass": ("providers.together", "NoSuchClass", "No class"),
        "notprovider": ("providers.base", "JobSpec", "Not a provider"),
        "wrongslug": ("providers.lamini", "LaminiProvider", "Wrong slug"),
        "exploding": (exploding_module, "Provider", "Exploding"),
    }
    errors = import_errors(registry)
    assert set(errors) == {"missing", "noclass", "notprovider", "wrongslug", "exploding"}
    assert errors["missing"].startswith("providers.no_such_adapter.NoProvider: ModuleNotFoundError")
    assert "AttributeError" in errors["noclass"] and "NoSuchClass" in errors["noclass"]
    assert "is not a Provider subclass" in errors["notprovider"]
    assert "'lamini'" in errors["wrongslug"] and "'wrongslug'" in errors["wrongslug"]
    assert errors["exploding"].endswith("RuntimeError: boom at import")


def test_get_provider_class_raises_what_the_import_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(PROVIDERS, "missing", ("providers.no_such_adapter", "X", "Missing"))
    with pytest.raises(ModuleNotFoundError):
        get_provider_class("missing")
    assert "missing" in import_errors()
    with pytest.raises(KeyError, match="nope"):
        get_provider_class("nope")


def test_simulator_import_errors_and_start_all_fails_loudly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broken = {"together": SIMULATORS["together"], "gone": ("providers.simulators.gone", "X")}
    errors = simulators.import_errors(broken)
    assert list(errors) == ["gone"] and "ModuleNotFoundError" in errors["gone"]
    monkeypatch.setitem(SIMULATORS, "gone", ("providers.simulators.gone", "X"))
    stopped: list[str] = []
    real_stop = Simulator.stop

    def spy(self: Simulator) -> None:
        stopped.append(self.name)
        real_stop(self)

    monkeypatch.setattr(Simulator, "stop", spy)
    with pytest.raises(ModuleNotFoundError):
        simulators.start_all()
    assert stopped == list(SIMULATORS)[:-1]  # every one started before the broken one
