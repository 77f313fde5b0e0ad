"""Worker settings: flags over SAGALOG_* variables, and clear messages for bad values."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from sagalog.engine.worker_process import tune_gc
from sagalog.engine.worker_settings import WorkerSettings, settings_from_env

from sagalog.errors import ConfigurationError


def test_environment_then_overrides() -> None:
    env = {
        "SAGALOG_DB": "postgresql://app@db/app",
        "SAGALOG_CONCURRENCY": "7",
        "SAGALOG_LEASE": "12.5",
        "SAGALOG_METRICS_PORT": "9100",
        "SAGALOG_LOG_LEVEL": "debug",
    }
    settings = settings_from_env(env, concurrency=3, worker_id=None)
    assert settings.url == "postgresql://app@db/app"
    assert settings.concurrency == 3  # the flag wins
    assert settings.lease_seconds == 12.5 and settings.heartbeat_seconds == pytest.approx(12.5 / 3)
    assert settings.metrics_port == 9100
    assert settings.owner  # generated when not given


def test_gc_threshold_from_the_environment_and_its_default() -> None:
    assert settings_from_env({"SAGALOG_GC_THRESHOLD": "20000"}).gc_threshold == 20_000
    assert settings_from_env({}).gc_threshold == 50_000


@pytest.fixture
def gc_restored() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


@pytest.mark.usefixtures("gc_restored")
def test_tune_gc_sets_the_youngest_threshold_and_freezes_what_is_loaded() -> None:
    older = gc.get_threshold()[1:]
    tune_gc(12_345)
    assert gc.get_threshold() == (12_345, *older)
    assert gc.get_freeze_count() > 1000  # the imported modules, classes and functions


@pytest.mark.usefixtures("gc_restored")
def test_tune_gc_zero_leaves_python_alone() -> None:
    before = gc.get_threshold()
    tune_gc(0)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_defaults_use_the_embedded_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAGALOG_DB", raising=False)
    settings = settings_from_env({})
    assert settings.url == "sqlite:///.sagalog/journal.db"
    assert settings == WorkerSettings()


@pytest.mark.parametrize(
    ("env", "overrides", "message"),
    [
        ({"SAGALOG_CONCURRENCY": "many"}, {}, "SAGALOG_CONCURRENCY='many' is not a valid int"),
        ({"SAGALOG_LEASE": "2s"}, {}, "SAGALOG_LEASE='2s' is not a valid float"),
        ({}, {"concurrency": 0}, "concurrency must be at least 1, not 0"),
        ({}, {"lease_seconds": 0.1}, "lease must be at least 0.5 seconds, not 0.1"),
        ({}, {"grace_seconds": -1.0}, "grace period cannot be negative (-1)"),
        ({}, {"log_level": "chatty"}, "unknown log level 'chatty': use one of DEBUG, INFO, WARNING, ERROR"),
        ({}, {"metrics_port": 70000}, "metrics port must be between 0 and 65535, not 70000"),
        ({"SAGALOG_GC_THRESHOLD": "lots"}, {}, "SAGALOG_GC_THRESHOLD='lots' is not a valid int"),
        ({}, {"gc_threshold": -1}, "gc threshold cannot be negative (-1)"),
    ],
)
def test_bad_values_are_refused_with_a_message(
    env: dict[str, str], overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        settings_from_env(env, **overrides)
    assert str(caught.value) == message
