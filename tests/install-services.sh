#!/usr/bin/env bash
# Installs and starts what the tests talk to for real, from Debian's packages: PostgreSQL
# (a server on 127.0.0.1:5432 with a `dispatch` role and `dispatch_test` database), Chromium and
# its chromedriver (headless screenshots, clicking through the web app), and Postfix: smtp-sink/smtp-source for the delivery benchmark, and
# the daemon for tests/inbound/test_postfix.py, which starts a private instance of its own (config and queue under a temporary folder, a
# loopback port) and stops it; no system-wide instance is configured or started here. Dovecot's IMAP server
# (dovecot-imapd) for tests/inbound/test_imap.py, which likewise runs a private instance (its own config, passwd-file user and
# Maildir under a temporary folder, a loopback port); the system's Dovecot config is never touched. The judges of sent mail:
# SpamAssassin (run as `spamassassin -L -t`, no daemon) and OpenDKIM's opendkim-testmsg (no milter). Idempotent. Without root or apt-get it says so, and the tests that
# need these programs skip with a reason.
set -euo pipefail

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
[ -x /usr/sbin/smtp-sink ] || missing+=(postfix)
command -v spamassassin >/dev/null 2>&1 || missing+=(spamassassin)
command -v opendkim-testmsg >/dev/null 2>&1 || missing+=(opendkim-tools)
command -v dovecot >/dev/null 2>&1 && [ -e /usr/lib/dovecot/imap ] || missing+=(dovecot-imapd)
# The README's commands make a virtualenv; Debian's Python needs this package for it.
python3 -c "import ensurepip" >/dev/null 2>&1 || missing+=(python3-venv)

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "services: not root or no apt-get: not installing ${missing[*]:-anything}; tests that need missing services will skip"
    exit 0
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "services: installing ${missing[*]} from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    # "No configuration": the postfix package then installs its tools and runs no daemon.
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# PostgreSQL: start the packaged cluster and make the test role and database.
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    cluster=$(pg_lsclusters --no-header | awk 'NR==1 {print $1" "$2}')
    pg_ctlcluster $cluster start
    for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
(cd / && su postgres -c "psql -q -tc \"SELECT 1 FROM pg_roles WHERE rolname='dispatch'\" | grep -q 1 || psql -q -c \"CREATE ROLE dispatch LOGIN CREATEDB PASSWORD 'dispatch'\"")
(cd / && su postgres -c "psql -q -tc \"SELECT 1 FROM pg_database WHERE datname='dispatch_test'\" | grep -q 1 || createdb -O dispatch dispatch_test")
echo "services: PostgreSQL ready on 127.0.0.1:5432, Chromium at $(command -v chromium), chromedriver at $(command -v chromedriver), spamassassin at $(command -v spamassassin), opendkim-testmsg at $(command -v opendkim-testmsg)"
