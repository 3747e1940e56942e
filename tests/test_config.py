from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dispatch.config import load_settings
from dispatch.errors import ConfigError


def test_shipped_config_loads(settings):
    assert settings.newsletter.name
    assert settings.newsletter.from_email.endswith("@example.org")
    assert set(settings.topics) >= {"east-asia", "diplomacy", "security"}
    assert settings.store.url.startswith("sqlite:///")
    assert settings.store.url.endswith("dispatch.db")
    assert settings.segments["security-desk"].exclude == ("economy",)


def test_settings_are_frozen(settings):
    with pytest.raises(AttributeError):
        settings.smtp.port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        settings.topics["new"] = None  # type: ignore[index]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


MINIMAL = """
[newsletter]
name = "N"
from = "N <n@example.org>"
base_url = "https://news.example.org"
address = "1 Main St"
[topics.world]
label = "World"
"""


def test_every_problem_reported_at_once_with_key_path_and_line(tmp_path):
    path = write(tmp_path, MINIMAL + """
[smtp]
port = "abc"
security = "ssl"
pasword_env = "X"
[delivery]
connections = 0
[segments.s]
topics = ["nope"]
""")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    lines = [str(p) for p in info.value.problems]
    assert any('smtp.port: expected an integer 1-65535, got "abc"' in l for l in lines)
    assert any("smtp.security: expected one of starttls, tls, none" in l for l in lines)
    assert any("smtp.pasword_env: unknown key" in l for l in lines)
    assert any("delivery.connections: expected an integer 1-64, got 0" in l for l in lines)
    assert any("segments.s.topics: unknown topic 'nope'" in l for l in lines)
    assert len(lines) == 5
    port = next(p for p in info.value.problems if "smtp.port" in p.message)
    assert port.line == 11  # the `port = "abc"` line
    assert info.value.exit_code == 2


def test_password_in_file_is_refused(tmp_path):
    path = write(tmp_path, MINIMAL + '[smtp]\npassword = "hunter2"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    (problem,) = info.value.problems
    assert "password_env" in problem.message and "hunter2" not in problem.message


def test_password_comes_from_environment(tmp_path, monkeypatch):
    path = write(tmp_path, MINIMAL + '[smtp]\npassword_env = "DISPATCH_TEST_PW"\n')
    monkeypatch.setenv("DISPATCH_TEST_PW", "s3cret")
    assert load_settings(path).smtp.password() == "s3cret"


@pytest.mark.parametrize("text, expected", [
    ("[newsletter\nname=1", "invalid TOML"),
    (MINIMAL.replace('from = "N <n@example.org>"', 'from = "N <n@>"'), "newsletter.from: invalid"),
    (MINIMAL.replace("https://news.example.org", "news.example.org"), "newsletter.base_url"),
    (MINIMAL + "[newsletter.extra]\n", "unknown key"),
    (MINIMAL.replace('label = "World"', ""), "topics.world.label: required key is missing"),
    (MINIMAL + '[[schedules]]\ncron = "every friday"\nfolder = "x"\nsubject = "s"\n',
     "schedules[0].cron: expected a five-field cron"),
    (MINIMAL + '[newsletter2]\n', "newsletter2: unknown key"),
    (MINIMAL + '[[schedules]]\ncron = "0 25 * * fri"\nfolder = "x"\nsubject = "s"\n',
     "schedules[0].cron: invalid cron expression"),
    (MINIMAL + '[[schedules]]\ncron = "0 7 1 * fri"\nfolder = "x"\nsubject = "s"\n',
     "not both"),
    (MINIMAL + '[[schedules]]\ncron = "0 7 * * fri"\nfolder = "x"\nsubject = "{week}"\n',
     "schedules[0].subject: subject may only use {date}"),
    (MINIMAL + '[[schedules]]\nname = "Weekly Digest"\ncron = "0 7 * * fri"\nfolder = "x"\n'
     'subject = "s"\n', "schedules[0].name: expected lower-case letters"),
    (MINIMAL + '[schedule]\ngrace = "an hour"\n', ('schedule.grace: expected seconds or a '
                                                   'duration like "1h"')),
    (MINIMAL + '[schedule]\ndefault_timezone = "Mars/Olympus"\n',
     "schedule.default_timezone: unknown IANA time zone"),
    (MINIMAL + "[web]\nport = 0\n", "web.port: expected an integer 1-65535"),
    (MINIMAL + '[web]\nconfirm_expiry = "5m"\n', "web.confirm_expiry: expected at least 10"),
    (MINIMAL + '[web]\nsignup_limit = "many"\n', "web.signup_limit: expected an integer"),
    (MINIMAL + "[web]\nlisten = 80\n", "web.listen: unknown key"),
])
def test_bad_config_values(tmp_path, text, expected):
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text))
    assert expected in str(info.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.toml")


def test_config_env_variable(tmp_path, monkeypatch):
    path = write(tmp_path, MINIMAL)
    monkeypatch.setenv("DISPATCH_CONFIG", str(path))
    assert load_settings().newsletter.name == "N"


def test_cli_bad_config_exits_2_without_traceback(tmp_path):
    path = write(tmp_path, MINIMAL + "[smtp]\nport = 70000\n")
    result = subprocess.run([sys.executable, "-m", "dispatch", "check", "--config", str(path)],
                            check=False, capture_output=True, text=True)
    assert result.returncode == 2
    assert "smtp.port: expected an integer 1-65535, got 70000" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_schedule_settings(tmp_path):
    settings = load_settings(write(tmp_path, MINIMAL + '[schedule]\ngrace = "1h30m"\n'))
    assert settings.schedule.grace.total_seconds() == 5400
    assert settings.schedule.default_timezone == settings.newsletter.timezone
    settings = load_settings(write(tmp_path, MINIMAL + "[schedule]\ngrace = 600\nsync = 0.5\n"))
    assert settings.schedule.grace.total_seconds() == 600 and settings.schedule.sync == 0.5


def test_web_settings(tmp_path):
    assert load_settings(write(tmp_path, MINIMAL)).web is None  # `dispatch run` serves nothing
    settings = load_settings(write(tmp_path, MINIMAL + '[web]\nhost = "0.0.0.0"\nport = 8080\n'
                                   'confirm_expiry = "7d"\nsignup_limit = 20\n'
                                   'trusted_proxies = ["10.0.0.2"]\n'))
    assert settings.web is not None
    assert (settings.web.host, settings.web.port, settings.web.signup_limit) == ("0.0.0.0", 8080,
                                                                                20)
    assert settings.web.confirm_expiry.total_seconds() == 7 * 86400
    assert settings.web.trusted_proxies == ("10.0.0.2",)
    defaults = load_settings(write(tmp_path, MINIMAL + "[web]\n")).web
    assert defaults is not None and defaults.port == 8025 and defaults.signup_limit == 5
