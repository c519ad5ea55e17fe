from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from service.runtime.settings import ServiceSettings, SettingsError, env_var_name, load_settings


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("ARVO_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env from the working directory


def test_defaults_are_valid_and_production_safe() -> None:
    settings = load_settings(env_file=None)
    assert settings.producer_idempotence is True
    assert settings.producer_acks == "all"
    assert settings.include_error_stack is False
    assert settings.handler_timeout_s * 1000 < settings.lease_ttl_ms
    assert settings.app == "service.examples:default_app"
    assert settings.dead_letter_topic_name == "arvo.dlq"


def test_environment_variables_with_arvo_prefix_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARVO_KAFKA_BOOTSTRAP_SERVERS", "k1:9092, k2:9092")
    monkeypatch.setenv("ARVO_LEASE_TTL_MS", "45000")
    monkeypatch.setenv("ARVO_CREATE_TOPICS", "false")
    monkeypatch.setenv("ARVO_TOPIC_PREFIX", "staging.")
    monkeypatch.setenv("ARVO_LOG_LEVEL", "debug")
    settings = load_settings(env_file=None)
    assert settings.kafka_bootstrap_servers == "k1:9092,k2:9092"
    assert settings.lease_ttl_ms == 45_000
    assert settings.create_topics is False
    assert settings.log_level == "DEBUG"
    assert settings.dead_letter_topic_name == "staging.arvo.dlq"


def test_dot_env_file_is_read_and_environment_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env_file = tmp_path / "custom.env"
    env_file.write_text("ARVO_CONSUMER_GROUP=from-file\nARVO_TOPIC_PARTITIONS=12\n")
    monkeypatch.setenv("ARVO_TOPIC_PARTITIONS", "3")
    settings = load_settings(env_file=env_file)
    assert settings.consumer_group == "from-file"
    assert settings.topic_partitions == 3


def test_keyword_overrides_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARVO_CONSUMER_GROUP", "env")
    assert load_settings(env_file=None, consumer_group="override").consumer_group == "override"


def test_invalid_value_gives_one_line_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARVO_LEASE_TTL_MS", "abc")
    with pytest.raises(SettingsError) as caught:
        load_settings(env_file=None)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("invalid setting ARVO_LEASE_TTL_MS='abc': Input should be a valid integer")


def test_each_invalid_value_gets_its_own_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARVO_TOPIC_PARTITIONS", "0")
    monkeypatch.setenv("ARVO_LOG_FORMAT", "xml")
    with pytest.raises(SettingsError) as caught:
        load_settings(env_file=None)
    lines = str(caught.value).splitlines()
    assert len(lines) == 2
    assert any(line.startswith("invalid setting ARVO_TOPIC_PARTITIONS='0'") for line in lines)
    assert any(line.startswith("invalid setting ARVO_LOG_FORMAT='xml'") for line in lines)


def test_long_values_are_truncated_in_errors() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(env_file=None, topic_prefix="bad prefix " * 20)
    assert "…" in str(caught.value)
    assert len(str(caught.value)) < 200


def test_secret_values_are_masked_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARVO_REDIS_URL", "http://user:hunter2@redis:6379")
    with pytest.raises(SettingsError) as caught:
        load_settings(env_file=None)
    assert "hunter2" not in str(caught.value)
    assert "ARVO_REDIS_URL='***'" in str(caught.value)


def test_handler_timeout_must_be_below_lease_ttl() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(env_file=None, lease_ttl_ms=10_000, handler_timeout_s=10)
    message = str(caught.value)
    assert message.startswith("invalid setting ARVO_HANDLER_TIMEOUT_S=10:")
    assert "ARVO_LEASE_TTL_MS=10000" in message
    assert load_settings(env_file=None, lease_ttl_ms=10_000, handler_timeout_s=9.5).handler_timeout_s == 9.5


def test_heartbeat_must_be_below_session_timeout() -> None:
    with pytest.raises(SettingsError, match="ARVO_HEARTBEAT_INTERVAL_MS"):
        load_settings(env_file=None, session_timeout_ms=6_000, heartbeat_interval_ms=6_000)


def test_idempotence_requires_acks_all() -> None:
    with pytest.raises(SettingsError, match="ARVO_PRODUCER_IDEMPOTENCE=true needs ARVO_PRODUCER_ACKS=all"):
        load_settings(env_file=None, producer_acks="1")
    settings = load_settings(env_file=None, producer_acks="1", producer_idempotence=False)
    assert settings.producer_kwargs()["acks"] == 1


@pytest.mark.parametrize(
    "url", ["redis://localhost:6379/0", "rediss://user:p%40ss@redis.example:6380/1", "unix:///tmp/redis.sock"]
)
def test_redis_urls_with_tls_and_credentials_are_accepted_and_kept_secret(url: str) -> None:
    settings = load_settings(env_file=None, redis_url=url)
    assert settings.redis_url.get_secret_value() == url
    assert "p%40ss" not in repr(settings)


def test_app_must_be_module_colon_attribute() -> None:
    with pytest.raises(SettingsError, match=r"ARVO_APP='service\.examples'"):
        load_settings(env_file=None, app="service.examples")
    assert load_settings(env_file=None, app="my_pkg.flows:app").app == "my_pkg.flows:app"


def test_topic_prefix_must_use_kafka_topic_characters() -> None:
    with pytest.raises(SettingsError, match="ARVO_TOPIC_PREFIX='a/b'"):
        load_settings(env_file=None, topic_prefix="a/b")


def test_plaintext_kwargs_have_no_tls_or_sasl() -> None:
    settings = load_settings(env_file=None)
    common = settings.kafka_common_kwargs()
    assert common["security_protocol"] == "PLAINTEXT"
    assert "ssl_context" not in common
    assert "sasl_mechanism" not in common


def test_consumer_kwargs_commit_manually() -> None:
    kwargs = load_settings(env_file=None, fetch_max_wait_ms=20, consumer_group="g1").consumer_kwargs()
    assert kwargs["enable_auto_commit"] is False
    assert kwargs["group_id"] == "g1"
    assert kwargs["fetch_max_wait_ms"] == 20
    assert kwargs["max_partition_fetch_bytes"] >= 1_048_576


def test_producer_kwargs_default_to_acks_all_and_idempotence() -> None:
    kwargs = load_settings(env_file=None, producer_linger_ms=7).producer_kwargs()
    assert kwargs["acks"] == "all"
    assert kwargs["enable_idempotence"] is True
    assert kwargs["linger_ms"] == 7
    assert kwargs["compression_type"] is None


def test_sasl_requires_credentials_and_passes_them() -> None:
    with pytest.raises(SettingsError, match="ARVO_KAFKA_SASL_USERNAME"):
        load_settings(env_file=None, kafka_security_protocol="SASL_PLAINTEXT")
    settings = load_settings(
        env_file=None,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="svc",
        kafka_sasl_password="s3cret",
    )
    kwargs = settings.producer_kwargs()
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "svc"
    assert kwargs["sasl_plain_password"] == "s3cret"
    assert "ssl_context" not in kwargs
    assert "s3cret" not in repr(settings)


def test_sasl_ssl_builds_a_verifying_tls_context() -> None:
    settings = load_settings(
        env_file=None,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="svc",
        kafka_sasl_password="pw",
    )
    context = settings.consumer_kwargs()["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True


def test_unreadable_tls_files_raise_settings_error(tmp_path: Path) -> None:
    settings = load_settings(
        env_file=None, kafka_security_protocol="SSL", kafka_ssl_cafile=tmp_path / "missing-ca.pem"
    )
    with pytest.raises(SettingsError, match="ARVO_KAFKA_SSL_CAFILE"):
        settings.ssl_context()


def test_keyfile_without_certfile_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="ARVO_KAFKA_SSL_KEYFILE needs ARVO_KAFKA_SSL_CERTFILE"):
        load_settings(env_file=None, kafka_ssl_keyfile=tmp_path / "k.pem")


def test_env_var_name_maps_fields() -> None:
    assert env_var_name("lease_ttl_ms") == "ARVO_LEASE_TTL_MS"
    assert all(name == name.lower() for name in ServiceSettings.model_fields)


def test_idempotence_without_acks_all_names_both_variables_and_the_value() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(env_file=None, producer_acks="1")
    message = str(caught.value)
    assert "ARVO_PRODUCER_IDEMPOTENCE=true needs ARVO_PRODUCER_ACKS=all (got '1')" in message


# ----------------------------------------------------------------------------- unknown ARVO_* variables


def test_unknown_variables_name_the_closest_setting_from_the_environment_and_dot_env(tmp_path: Path) -> None:
    from service.runtime.settings import unknown_variables

    env_file = tmp_path / "app.env"
    env_file.write_text("ARVO_KAFKA_BOOTSTRAP_SERVER=k:9092\nARVO_LEASE_TTL_MS=30000\nOTHER=1\n")
    environ = {
        "ARVO_CONSUMERGROUP": "g",
        "arvo_redis_uri": "redis://x",  # read case-insensitively, like the settings
        "ARVO_APP": "m:a",
        "ARVO_TEST_KAFKA_BOOTSTRAP": "k:1",  # the test suite's switches
        "ARVO_ZZZ": "1",
        "PATH": "/bin",
    }
    found = [
        (item.name, item.source, item.suggestion)
        for item in unknown_variables(environ=environ, env_file=env_file)
    ]
    assert found == [
        ("ARVO_CONSUMERGROUP", "environment", "ARVO_CONSUMER_GROUP"),
        ("ARVO_KAFKA_BOOTSTRAP_SERVER", f"file {env_file}", "ARVO_KAFKA_BOOTSTRAP_SERVERS"),
        ("ARVO_ZZZ", "environment", None),
        ("arvo_redis_uri", "environment", "ARVO_REDIS_URL"),
    ]
    assert str(unknown_variables(environ={"ARVO_ZZZ": "1"}, env_file=None)[0]) == (
        "ARVO_ZZZ (in the environment) is not a setting"
    )


def test_every_setting_and_the_deployment_variables_are_known() -> None:
    from service.runtime.settings import known_variables, unknown_variables

    environ = dict.fromkeys(known_variables(), "x")
    assert unknown_variables(environ=environ, env_file=None) == []
    assert {"ARVO_APP", "ARVO_STRICT_SETTINGS", "ARVO_KAFKA_BOOTSTRAP_SERVERS"} <= known_variables()


def test_strict_settings_refuse_unknown_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARVO_CONSUMERGROUP", "g")
    assert load_settings(env_file=None).consumer_group == "arvo-service"  # a warning, not an error
    monkeypatch.setenv("ARVO_STRICT_SETTINGS", "true")
    with pytest.raises(SettingsError) as raised:
        load_settings(env_file=None)
    assert str(raised.value) == (
        "invalid settings: ARVO_CONSUMERGROUP (in the environment) is not a setting; did you mean"
        " ARVO_CONSUMER_GROUP? (ARVO_STRICT_SETTINGS=true)"
    )
    monkeypatch.delenv("ARVO_CONSUMERGROUP")
    assert load_settings(env_file=None).strict_settings is True


def test_several_env_files_are_read_and_the_later_one_wins(tmp_path: Path) -> None:
    first, second = tmp_path / "a.env", tmp_path / "b.env"
    first.write_text("ARVO_CONSUMER_GROUP=first\nARVO_TOPIC_PARTITIONS=2\n")
    second.write_text("ARVO_CONSUMER_GROUP=second\n")
    settings = load_settings(env_file=(first, second))
    assert (settings.consumer_group, settings.topic_partitions) == ("second", 2)
