"""Settings from the environment, checked at start-up (docs/operations.md, Settings)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gateway.settings import Settings, SettingsError


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.redis_url is None
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.heartbeat_seconds == 15.0
    assert settings.retention_seconds == 86400 and settings.output_ttl_seconds == 3600


def test_values_are_read() -> None:
    settings = Settings.from_env({
        "REDIS_URL": "redis://example:6380/0", "PORT": "9000",
        "GATEWAY_HEARTBEAT_SECONDS": "0.5", "GATEWAY_RETRY_MS": "1500",
    })
    assert settings.redis_url == "redis://example:6380/0"
    assert settings.port == 9000
    assert settings.heartbeat_seconds == 0.5 and settings.retry_ms == 1500
    assert Settings.from_env({"PORT": "9000", "GATEWAY_PORT": "9100"}).port == 9100


@pytest.mark.parametrize(("name", "value"), [
    ("GATEWAY_HEARTBEAT_SECONDS", "soon"),
    ("GATEWAY_HEARTBEAT_SECONDS", "0"),
    ("GATEWAY_HEARTBEAT_SECONDS", "nan"),
    ("GATEWAY_RETRY_MS", "1.5"),
    ("GATEWAY_PORT", "70000"),
    ("PORT", "http"),
    ("REDIS_URL", "http://localhost"),
    ("GATEWAY_LOG_LEVEL", "loud"),
    ("GATEWAY_RETENTION_SECONDS", "-1"),
    ("GATEWAY_REDIS_CONNECTIONS", "0"),
])
def test_a_bad_value_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/7", "redis://127.0.0.1/03",
                                 "redis://127.0.0.1?db=2", "unix:///tmp/r.sock?db=1"])
def test_a_database_other_than_0_is_refused(url: str) -> None:
    """Issue 10, item 8: pub/sub ignores the database, so a gateway on /7 streamed the jobs
    of /8 and ended its streams on /8's changes. Every database but 0 is refused."""
    with pytest.raises(SettingsError, match=r"REDIS_URL=.*database [0-9]+.*pub/sub"):
        Settings.from_env({"REDIS_URL": url})
    assert Settings.from_env({"REDIS_URL": "redis://127.0.0.1:6379/00"}).redis_url


def test_a_bad_url_is_named_without_its_password() -> None:
    """Issue 10, item 17: the message named the variable and echoed its secret."""
    for url in ("http://user:hunter2@example", "redis://user:hunter2@example/5",
                "redis://:hunter2@example:notaport"):
        with pytest.raises(SettingsError, match="REDIS_URL") as refused:
            Settings.from_env({"REDIS_URL": url})
        assert "hunter2" not in str(refused.value)


def test_the_command_stops_on_a_bad_value() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve"],
        env={"GATEWAY_HEARTBEAT_SECONDS": "never", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2
    assert "GATEWAY_HEARTBEAT_SECONDS" in result.stderr
    assert "Traceback" not in result.stderr


def test_auth_settings_are_read() -> None:
    settings = Settings.from_env({
        "GATEWAY_INSECURE": "true", "GATEWAY_TOKEN_SECRET": "s" * 32,
        "GATEWAY_CORS_ORIGINS": "https://dash.example, http://localhost:3000/",
        "GATEWAY_MAX_STREAMS_PER_TENANT": "5", "GATEWAY_MAX_STREAM_SECONDS": "60",
    })
    assert settings.insecure and settings.token_secret == "s" * 32
    assert settings.cors_origins == ("https://dash.example", "http://localhost:3000")
    assert (settings.max_streams_per_tenant, settings.max_stream_seconds) == (5, 60.0)


@pytest.mark.parametrize("origin", ["*", "https://dash.example/app", "dash.example",
                                    "ftp://dash.example", "https://u@dash.example"])
def test_a_cors_origin_must_be_an_origin(origin: str) -> None:
    with pytest.raises(SettingsError, match="GATEWAY_CORS_ORIGINS"):
        Settings.from_env({"GATEWAY_CORS_ORIGINS": origin})


def test_a_short_token_secret_is_refused_without_being_shown() -> None:
    with pytest.raises(SettingsError, match="GATEWAY_TOKEN_SECRET") as refused:
        Settings.from_env({"GATEWAY_TOKEN_SECRET": "hunter2-is-short"})
    assert "hunter2" not in str(refused.value)


def test_cors_origins_are_written_as_browsers_send_them() -> None:
    """Found in review: an origin listed in capitals or with its default port never
    matched the Origin a browser sends."""
    settings = Settings.from_env({"GATEWAY_CORS_ORIGINS":
                                  "HTTPS://Dash.Example:443,http://LOCALHOST:80,http://h:8080"})
    assert settings.cors_origins == ("https://dash.example", "http://localhost", "http://h:8080")


def test_cluster_mode_takes_one_node_or_several() -> None:
    settings = Settings.from_env({"GATEWAY_REDIS_CLUSTER": "true",
                                  "REDIS_URL": "redis://:pw@a:7000,b:7001, redis://c:7002"})
    assert settings.redis_cluster
    assert Settings.from_env({"GATEWAY_REDIS_CLUSTER": "yes",
                              "REDIS_URL": "rediss://a:7000"}).redis_cluster
    assert not Settings.from_env({}).redis_cluster


@pytest.mark.parametrize(("env", "says"), [
    ({"GATEWAY_REDIS_CLUSTER": "true"}, "GATEWAY_REDIS_CLUSTER=true needs REDIS_URL"),
    ({"GATEWAY_REDIS_CLUSTER": "true", "REDIS_URL": "unix:///run/redis.sock"}, "unix socket"),
    ({"REDIS_URL": "redis://a:7000,b:7001"}, "set GATEWAY_REDIS_CLUSTER=true"),
    ({"GATEWAY_REDIS_CLUSTER": "true", "REDIS_URL": "redis://a:1,b"}, "node 2 is neither"),
    ({"GATEWAY_REDIS_CLUSTER": "true", "REDIS_URL": "redis://a:1,b:99999"}, "node 2"),
    ({"GATEWAY_REDIS_CLUSTER": "true", "REDIS_URL": "redis://a:1,http://b:2"}, "node"),
    ({"GATEWAY_REDIS_CLUSTER": "true", "REDIS_URL": "redis://a:1,redis://b:2/3"}, "database 3"),
    ({"GATEWAY_REDIS_CLUSTER": "maybe", "REDIS_URL": "redis://a:1"}, "GATEWAY_REDIS_CLUSTER="),
])
def test_a_cluster_setting_that_cannot_work_is_refused(env: dict[str, str], says: str) -> None:
    with pytest.raises(SettingsError, match=says) as refused:
        Settings.from_env(env)
    assert "pw" not in str(refused.value)


def test_a_comma_in_a_single_servers_password_is_no_list_and_is_never_shown() -> None:
    url = "redis://u:p,ss@127.0.0.1:6379/0"
    assert Settings.from_env({"REDIS_URL": url}).redis_url == url
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"REDIS_URL": "redis://u:p,ss@127.0.0.1:6379/4"})
    assert "p,ss" not in str(refused.value) and "ss@" not in str(refused.value)


def test_several_nodes_are_named_without_their_passwords() -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"REDIS_URL": "redis://u:secret1@a:1,redis://u:secret2@b:2"})
    assert "secret" not in str(refused.value) and "REDACTED" in str(refused.value)
