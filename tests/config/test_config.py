from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
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
    assert any('smtp.port: expected an integer 1-65535, got "abc"' in line for line in lines)
    assert any("smtp.security: expected one of starttls, tls, none" in line for line in lines)
    assert any("smtp.pasword_env: unknown key" in line for line in lines)
    assert any("delivery.connections: expected an integer 1-64, got 0" in line for line in lines)
    assert any("segments.s.topics: unknown topic 'nope'" in line for line in lines)
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


@pytest.mark.parametrize("pasted", ["hunter2!", "correct horse", "Tr0ub4dor&3", "1secret"])
def test_a_password_pasted_into_password_env_is_not_echoed(tmp_path, pasted):
    path = write(tmp_path, MINIMAL + f'[smtp]\npassword_env = "{pasted}"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    (problem,) = info.value.problems
    assert problem.message == ("smtp.password_env: does not look like an environment variable "
                               "name (letters, digits and _, not starting with a digit); the "
                               "value is not shown")
    assert problem.line == 10
    assert pasted not in str(info.value)


@pytest.mark.parametrize("value, state", [(None, "not set"), ("", "empty")])
def test_an_unset_or_empty_password_variable_is_an_error(tmp_path, monkeypatch, value, state):
    path = write(tmp_path, MINIMAL + '[smtp]\nusername = "u"\npassword_env = "DISPATCH_TEST_PW"\n')
    if value is None:
        monkeypatch.delenv("DISPATCH_TEST_PW", raising=False)
    else:
        monkeypatch.setenv("DISPATCH_TEST_PW", value)
    smtp = load_settings(path).smtp  # loading needs no password: only sending does
    for call in (smtp.password, smtp.check_credentials):
        with pytest.raises(ConfigError) as info:
            call()
        assert str(info.value) == (f"smtp.password_env: the environment variable "
                                   f"DISPATCH_TEST_PW is {state}: set it to the SMTP password")
    monkeypatch.setenv("DISPATCH_TEST_PW", "s3cret")
    smtp.check_credentials()


def test_a_username_without_a_password_variable_is_an_error(tmp_path):
    smtp = load_settings(write(tmp_path, MINIMAL + '[smtp]\nusername = "u"\n')).smtp
    with pytest.raises(ConfigError, match="smtp.username is set but no password"):
        smtp.check_credentials()
    load_settings(write(tmp_path, MINIMAL)).smtp.check_credentials()  # no AUTH: nothing needed


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
    (MINIMAL + '[web]\nwelcome = "yes"\n', 'web.welcome: expected true or false, got "yes"'),
    (MINIMAL + "[web]\nwelcome = 1\n", "web.welcome: expected true or false, got 1"),
    (MINIMAL + '[web]\nprivacy_url = "javascript:alert(1)"\n',
     'web.privacy_url: expected an http:// or https:// URL, got "javascript:alert(1)"'),
    (MINIMAL + '[web]\nprivacy_url = "ftp://example.org/privacy"\n',
     "web.privacy_url: expected an http:// or https:// URL"),
    (MINIMAL + '[web]\nprivacy_url = "https://example.org/our policy"\n',
     "web.privacy_url: expected an http:// or https:// URL"),
    (MINIMAL + '[web]\nprivacy_url = "https://example.org@evil.example/"\n',
     "web.privacy_url: expected an http:// or https:// URL"),
    (MINIMAL + '[web]\nprivacy_url = "https://example.org/\\u0000"\n',
     "web.privacy_url: expected text without control characters"),
    (MINIMAL + '[web]\nprivacy_url = "/privacy"\n',
     "web.privacy_url: expected an http:// or https:// URL"),
    (MINIMAL + f'[web]\nprivacy_url = "https://example.org/{"p" * 2000}"\n',
     "web.privacy_url: expected a URL of at most 2000 characters, got 2020"),
    (MINIMAL + f'[web]\nconsent = "{"We care. " * 40}"\n',
     "web.consent: expected at most 300 characters (one or two sentences), got 359"),
    (MINIMAL + '[web]\nconsent = "Two\\nlines"\n',
     "web.consent: expected text without control characters"),
    (MINIMAL + '[web]\nconsent = "Bell\\u0007"\n',
     "web.consent: expected text without control characters"),
    (MINIMAL + '[web]\nconsent = "  "\n', "web.consent: expected a string"),
    (MINIMAL + '[console]\nenabled = "yes"\n', 'console.enabled: expected true or false, '
                                               'got "yes"'),
    (MINIMAL + "[console]\nenabled = true\nport = 70000\n",
     "console.port: expected an integer 1-65535"),
    (MINIMAL + '[console]\nenabled = true\nhost = "0.0.0.0"\n', "console: host needs port"),
    (MINIMAL + '[console]\nidle_timeout = "2d"\n',
     "console: idle_timeout is longer than session_lifetime"),
    (MINIMAL + "[console]\nlogin_failures = 0\n",
     "console.login_failures: expected an integer 1-1000"),
    (MINIMAL + "[console]\npassword = 1\n", "console.password: unknown key"),
])
def test_bad_config_values(tmp_path, text, expected):
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text))
    assert expected in str(info.value)


def test_privacy_and_consent_problems_are_located_at_their_line(tmp_path):
    path = write(tmp_path, MINIMAL + '[web]\nport = 8080\nprivacy_url = "mailto:dpo@example.org"'
                 '\nconsent = "Line\\tbreak"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    lines = MINIMAL.count("\n")
    assert str(info.value).splitlines() == [
        f'{path}:{lines + 3}: web.privacy_url: expected an http:// or https:// URL, got '
        '"mailto:dpo@example.org"',
        f'{path}:{lines + 4}: web.consent: expected text without control characters, got '
        '"Line\\tbreak"']
    web = load_settings(write(tmp_path, MINIMAL + '[web]\nprivacy_url = "https://example.org/'
                              'privacy?lang=en#data"\nconsent = " We keep it short. "\n')).web
    assert web is not None
    assert web.privacy_url == "https://example.org/privacy?lang=en#data"
    assert web.consent == "We keep it short."


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


def test_console_settings(tmp_path):
    assert load_settings(write(tmp_path, MINIMAL)).console.enabled is False
    console = load_settings(write(tmp_path, MINIMAL + '[console]\nenabled = true\nport = 8030\n'
                                                      'idle_timeout = "10m"\n')).console
    assert console.enabled and console.port == 8030 and console.host is None
    assert console.idle_timeout == timedelta(minutes=10) and console.login_failures == 10


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
    assert defaults.welcome is True
    quiet = load_settings(write(tmp_path, MINIMAL + "[web]\nwelcome = false\n")).web
    assert quiet is not None and quiet.welcome is False


# ---- The pydantic schema: what the hand-written reader did not cover -------------------------

def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text))
    assert info.value.exit_code == 2
    return [f":{p.line}: {p.message}" if p.line else f": {p.message}"
            for p in info.value.problems]


@pytest.mark.parametrize("text, expected", [
    ("", [": newsletter: required key is missing"]),
    ("# nothing yet\n", [": newsletter: required key is missing"]),
    (MINIMAL.replace("[newsletter]", "[news]"),
     [": newsletter: required key is missing", ":2: news: unknown key"]),
    ("newsletter = 5\n", [":1: newsletter: expected a table, got 5"]),
    (MINIMAL.replace('from = "N <n@example.org>"\n', ""),
     [":2: newsletter.from: required key is missing"]),
])
def test_missing_tables_and_keys_are_located_problems(tmp_path, text, expected):
    assert problems(tmp_path, text) == expected


def test_empty_config_exits_2_without_traceback(tmp_path):
    path = write(tmp_path, "")
    result = subprocess.run([sys.executable, "-m", "dispatch", "check", "--config", str(path)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "newsletter: required key is missing" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize("old, new, key", [
    ('name = "N"', r'name = "N\r\nBcc: all@example.org"', "newsletter.name"),
    ('name = "N"', r'name = "N\nX"', "newsletter.name"),
    ('name = "N"', r'name = "N\u0007X"', "newsletter.name"),  # BEL
    ('name = "N"', r'name = "N\u0085X"', "newsletter.name"),  # C1 NEL
    ('name = "N"', r'name = "N\u2029X"', "newsletter.name"),
    ('from = "N <n@example.org>"', r'from = "N\rBcc: x <n@example.org>"', "newsletter.from"),
    ('label = "World"', 'label = "World"\nkeywords = ["a\\u2028b"]', "topics.world.keywords"),
])
def test_control_characters_never_reach_a_header(tmp_path, old, new, key):
    (problem,) = problems(tmp_path, MINIMAL.replace(old, new))
    assert f"{key}: expected text without control characters" in problem
    assert "\n" not in problem and "\r" not in problem  # shown escaped, on one line


def test_a_line_break_in_the_postal_address_is_fine(tmp_path):
    text = MINIMAL.replace('address = "1 Main St"', r'address = "1 Main St\nSpringfield"')
    assert load_settings(write(tmp_path, text)).newsletter.address == "1 Main St\nSpringfield"


def test_types_are_not_coerced(tmp_path):
    found = problems(tmp_path, MINIMAL + '[smtp]\nport = true\ntimeout = "5"\n'
                                         '[delivery]\nconnections = 2.0\nrate = false\n')
    assert found == [':10: smtp.port: expected an integer 1-65535, got True',
                     ':11: smtp.timeout: expected a number 0.1-3600, got "5"',
                     ':13: delivery.connections: expected an integer 1-64, got 2.0',
                     ':14: delivery.rate: expected a number 0-100000, got False']


def test_addresses_and_names(tmp_path):
    nl = load_settings(write(tmp_path, MINIMAL.replace(
        'from = "N <n@example.org>"', 'from = "n@example.org"\nreply_to = "Eds <e@example.org>"'
        ))).newsletter
    # No display name: the newsletter's name; reply_to is the address alone.
    assert (nl.from_name, nl.from_email, nl.reply_to) == ("N", "n@example.org", "e@example.org")
    (problem,) = problems(tmp_path, MINIMAL.replace('address = "1 Main St"',
                                                    'address = "1 Main St"\nreply_to = "e@"'))
    assert problem.startswith(":7: newsletter.reply_to: invalid address 'e@': ")


def test_relative_paths_are_relative_to_the_config_folder(tmp_path, monkeypatch):
    monkeypatch.chdir("/")
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "dkim.pem").write_text("A" * 43 + "=")  # a base64 Ed25519 seed
    settings = load_settings(write(tmp_path, MINIMAL + '[store]\nurl = "sqlite:///data/x.db"\n'
                                   '[dkim]\ndomain = "example.org"\nselector = "news"\n'
                                   'key_file = "keys/dkim.pem"\n'))
    assert settings.store.url == f"sqlite:///{tmp_path / 'data' / 'x.db'}"
    assert settings.dkim is not None and settings.dkim.key_file == tmp_path / "keys" / "dkim.pem"
    assert settings.path == tmp_path / "config.toml" and settings.root == tmp_path
    memory = load_settings(write(tmp_path, MINIMAL + '[store]\nurl = "sqlite:///:memory:"\n'))
    assert memory.store.url == "sqlite:///:memory:" and memory.dkim is None
    assert problems(tmp_path, MINIMAL + '[dkim]\ndomain = "example.org"\nselector = "news"\n'
                                        'key_file = "gone.pem"\n') == [
        f":12: dkim.key_file: no such file: {tmp_path / 'gone.pem'}"]


def test_zones_default_to_the_newsletter_zone(tmp_path):
    text = MINIMAL.replace('address = "1 Main St"', 'address = "1 Main St"\n'
                           'timezone = "Asia/Seoul"') + SCHEDULE + SCHEDULE.replace(
        'cron = "0 7 * * fri"', 'cron = "0 7 * * fri"\ntimezone = "Europe/Paris"')
    settings = load_settings(write(tmp_path, text))
    assert settings.schedule.default_timezone == "Asia/Seoul"
    assert [(s.name, s.timezone) for s in settings.schedules] == [
        ("digest-1", "Asia/Seoul"), ("digest-2", "Europe/Paris")]
    # A bad newsletter zone is one problem, not one more wherever it would be inherited.
    assert problems(tmp_path, text.replace("Asia/Seoul", "Mars/Olympus")) == [
        ':7: newsletter.timezone: unknown IANA time zone "Mars/Olympus"']


SCHEDULE = '[[schedules]]\ncron = "0 7 * * fri"\nfolder = "inbox"\nsubject = "Week of {date}"\n'


def test_references_are_reported_with_the_tables_other_mistakes(tmp_path):
    found = problems(tmp_path, MINIMAL + '[segments.s]\ntopics = ["world", "nope"]\n'
                     'match = "some"\nexclude = ["gone"]\n'
                     + SCHEDULE.replace("[[schedules]]", '[[schedules]]\nname = "weekly"')
                     + SCHEDULE.replace("[[schedules]]", '[[schedules]]\nname = "weekly"')
                     .replace("0 7 * * fri", "0 7 * *"))
    assert sorted(found) == [
        ":10: segments.s.topics: unknown topic 'nope' (declared: world)",
        ':11: segments.s.match: expected one of any, all, got "some"',
        ":12: segments.s.exclude: unknown topic 'gone' (declared: world)",
        ":19: schedules[1].name: another schedule is already named 'weekly'",
        ':20: schedules[1].cron: expected a five-field cron expression like "0 7 * * fri", '
        'got "0 7 * *"']


@pytest.mark.parametrize("text, expected", [
    (MINIMAL.replace('label = "World"', 'label = "World"\nkey = "earth"'),
     ":9: topics.world.key: unknown key"),
    (MINIMAL + '[segments.s]\nname = "t"\n', ":10: segments.s.name: unknown key"),
    (MINIMAL + '[topics."World News"]\nlabel = "W"\n',
     ":9: topics.World News: topic keys are lower-case letters, digits and hyphens"),
    (MINIMAL.replace('[topics.world]\nlabel = "World"\n', "[topics]\n"),
     ":7: topics: declare at least one topic"),
    (MINIMAL + "[schedules]\nweekly = 1\n", ":9: schedules: expected [[schedules]] entries"),
    (MINIMAL + '[smtp]\npassword = "hunter2"\nport = 0\n',
     ":11: smtp.port: expected an integer 1-65535, got 0"),
])
def test_tables_of_tables(tmp_path, text, expected):
    assert expected in problems(tmp_path, text)


def test_domain_rates(tmp_path):
    text = MINIMAL + '[delivery.domain_rates]\n"Gmail.com" = 20\n'
    settings = load_settings(write(tmp_path, text))
    assert dict(settings.delivery.domain_rates) == {"gmail.com": 20.0}
    with pytest.raises(TypeError):
        settings.delivery.domain_rates["x.org"] = 1  # type: ignore[index]
    assert problems(tmp_path, text + '"nodot" = 1\n"y.org" = 0\n') == [
        ":11: delivery.domain_rates.nodot: expected a domain name as the key",
        ":12: delivery.domain_rates.y.org: expected a number 0.001-100000, got 0"]


def test_a_byte_order_mark_is_tolerated(tmp_path):
    path = tmp_path / "config.toml"
    path.write_bytes("\ufeff".encode() + MINIMAL.encode())
    assert load_settings(path).newsletter.name == "N"


def test_settings_built_in_code(settings):
    from dispatch.config import Segment, Topic, WebSettings
    web = WebSettings()
    assert (web.host, web.port, web.signup_limit) == ("127.0.0.1", 8025, 5)
    assert web.confirm_expiry.total_seconds() == 2 * 86400
    assert Segment(name="s", topics=("a",), match="all").exclude == ()
    assert Topic(key="k", label="K").keywords == ()
    copy = settings.model_copy(update={"smtp": settings.smtp.model_copy(update={"port": 2525})})
    assert (copy.smtp.port, copy.path, settings.smtp.port) == (2525, settings.path, 8026)
    with pytest.raises(AttributeError):
        copy.newsletter.name = "x"  # type: ignore[misc]


def test_toml_error_names_the_line():
    import tomllib

    from dispatch.config import toml_error
    with pytest.raises(tomllib.TOMLDecodeError) as info:
        tomllib.loads('a = 1\nb = "unterminated\n')
    message, line = toml_error(info.value)
    assert message.startswith("invalid TOML: ") and "line" not in message and line == 2


@pytest.mark.parametrize("value", ["inf", "nan", "1e300", '"9999999999d"', '""', "-5", "true"])
def test_impossible_durations_are_problems(tmp_path, value):
    (problem,) = problems(tmp_path, MINIMAL + f"[schedule]\ngrace = {value}\n")
    assert problem.startswith(':10: schedule.grace: expected seconds or a duration like "1h"')


def _dkim(domain: str, key: str = "dkim.pem") -> str:
    return f'[dkim]\ndomain = "{domain}"\nselector = "news"\nkey_file = "{key}"\n'


def test_dkim_domain_must_align_with_from(tmp_path):
    """Relaxed alignment without the Public Suffix List: From's domain (example.org), a
    parent of it or a subdomain; siblings and other domains are refused."""
    (tmp_path / "dkim.pem").write_text("A" * 43 + "=")
    for domain in ("example.org", "mail.example.org", "EXAMPLE.ORG"):
        assert load_settings(write(tmp_path, MINIMAL + _dkim(domain))).dkim is not None
    sub = MINIMAL.replace("n@example.org", "n@news.example.org")
    assert load_settings(write(tmp_path, sub + _dkim("example.org"))).dkim is not None
    for domain, sender in (("example.net", "n@example.org"), ("a.example.org", "n@b.example.org"),
                           ("badexample.org", "n@example.org")):
        text = MINIMAL.replace("n@example.org", sender) + _dkim(domain)
        assert problems(tmp_path, text) == [
            f":10: dkim.domain: {domain!r} is not aligned with the From address's domain "
            f"{sender.split('@')[1]!r}: DMARC requires the signing domain to be From's "
            "domain, a parent or a subdomain of it"], domain


def test_dkim_keys_rsa_and_ed25519_are_recognised_and_anything_else_refused(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    from dispatch.config.dkim import dkim_key

    pem = serialization.PrivateFormat.PKCS8
    rsa_pem = rsa.generate_private_key(public_exponent=65537, key_size=1024).private_bytes(
        serialization.Encoding.PEM, pem, serialization.NoEncryption())
    ed_pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, pem, serialization.NoEncryption())
    assert dkim_key(rsa_pem).algorithm == b"rsa-sha256"
    assert dkim_key(ed_pem).algorithm == b"ed25519-sha256"
    assert len(__import__("base64").b64decode(dkim_key(ed_pem).key)) == 32
    for junk in (b"", b"hello", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"):
        with pytest.raises(ValueError):
            dkim_key(junk)
    (tmp_path / "dkim.pem").write_text("not a key")
    assert problems(tmp_path, MINIMAL + _dkim("example.org")) == [
        f":12: dkim.key_file: {tmp_path / 'dkim.pem'}: not a PEM private key (RSA or Ed25519) "
        "nor a base64 Ed25519 seed"]


@pytest.mark.parametrize("value", ["a:b", "with space", "", "x" * 65, "é"])
def test_feedback_id_sender_id_is_checked(tmp_path, value):
    found = problems(tmp_path, MINIMAL + f'[delivery]\nfeedback_id = "{value}"\n')
    assert len(found) == 1 and "delivery.feedback_id" in found[0], found


def test_inbound_settings(tmp_path):
    assert load_settings(write(tmp_path, MINIMAL)).inbound is None  # `dispatch run`: no server
    settings = load_settings(write(tmp_path, MINIMAL + '[delivery]\nverp_domain = '
                                   '"bounces.example.org"\nsoft_bounce_limit = 2\n'
                                   'soft_bounce_window = "14d"\nmax_bounce_rate = 2.5\n'
                                   '[inbound]\nport = 25\nmax_size = 200000\n'
                                   'spool = "var/spool"\n'))
    assert settings.inbound is not None
    assert (settings.inbound.port, settings.inbound.max_size) == (25, 200_000)
    assert settings.inbound.spool == tmp_path / "var" / "spool"  # beside config.toml
    delivery = settings.delivery
    assert (delivery.soft_bounce_limit, delivery.soft_bounce_window.days,
            delivery.max_bounce_rate, delivery.max_complaint_rate) == (2, 14, 2.5, 0.3)
    defaults = load_settings(write(tmp_path, MINIMAL)).delivery
    assert (defaults.soft_bounce_limit, defaults.soft_bounce_window.days,
            defaults.max_bounce_rate) == (3, 30, 5.0)


def test_inbound_mistakes_are_located(tmp_path):
    # No VERP domain: nothing to receive for. The server's own keys are checked too.
    assert problems(tmp_path, MINIMAL + "[inbound]\nport = 0\nmax_size = 10\nrelay = true\n") == [
        ":10: inbound.port: expected an integer 1-65535, got 0",
        ":11: inbound.max_size: expected an integer 10000-100000000, got 10",
        # [inbound] has more than eight keys since its connection limits: none is listed.
        ":12: inbound.relay: unknown key",
        ":9: inbound: set delivery.verp_domain too: the domain bounces and mailto "
        "unsubscribes are addressed to"]
    assert problems(tmp_path, MINIMAL + '[delivery]\nverp_domain = "x"\nmax_bounce_rate = 101\n'
                    '[inbound]\n') == [
        ':10: delivery.verp_domain: expected a domain name, got "x"',
        ":11: delivery.max_bounce_rate: expected a number 0-100, got 101"]


def test_mistyped_keys_topics_and_zones_get_a_suggestion(tmp_path):
    text = MINIMAL.replace('address = "1 Main St"', 'address = "1 Main St"\n'
                           'timezone = "Asia/Seul"\nbase_ulr = "x"')
    assert problems(tmp_path, text + '[smtp]\nprot = 25\n[segments.s]\ntopics = ["wrold"]\n'
                    '[schedule]\ndefault_timezone = "europe/berlin"\n') == [
        ':7: newsletter.timezone: unknown IANA time zone "Asia/Seul" (did you mean '
        "'Asia/Seoul'?)",
        ":8: newsletter.base_ulr: unknown key (did you mean 'base_url'?)",
        ":12: smtp.prot: unknown key (did you mean 'port'?)",
        ':16: schedule.default_timezone: unknown IANA time zone "europe/berlin" (did you mean '
        "'Europe/Berlin'?)",
        ":14: segments.s.topics: unknown topic 'wrold' (did you mean 'world'?) (declared: "
        "world)"]
    # Nothing near: no suggestion, and a long table lists no keys.
    assert problems(tmp_path, MINIMAL + "[delivery]\nzzzzzz = 1\n") == [
        ":10: delivery.zzzzzz: unknown key"]


def test_a_mistyped_topic_gets_a_suggestion_wherever_topics_are_chosen():
    from dispatch.config.topics import check_topics
    from dispatch.errors import DispatchError
    known = {"east-asia": 1, "security": 2}
    with pytest.raises(DispatchError) as caught:
        check_topics(["secrity", "astrology"], known, "--topics")
    assert str(caught.value.problems[0]) == (
        "--topics: unknown topic(s) secrity (did you mean 'security'?), astrology "
        "(declared: east-asia, security)")
