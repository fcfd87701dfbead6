#!/usr/bin/env bash
# Install the system packages taskpulse needs on a fresh Debian/Ubuntu machine, only
# those that are missing.  Quick and silent when everything is present.
#
#   scripts/install-deps.sh          what `make test` needs (the default)
#   scripts/install-deps.sh python   only what `make run` / `make bench` need (a venv)
#
# What `test` installs (Debian package: the commands the suite runs):
#   docker-compose           docker-compose        (validates docker-compose.yml; no Docker engine)
#   prometheus               prometheus, promtool  (scrape tests, config and rule checks)
#   prometheus-alertmanager  prometheus-alertmanager, amtool (alert delivery, config check)
#   stunnel4                 stunnel4              (loopback TLS proxy for the Kafka TLS test)
#   openssl                  openssl               (the TLS test's throw-away CA and certificates)
#   chromium                 chromium              (the web UI's browser tests, headless)
#   chromium-driver          chromedriver          (Selenium drives chromium through it; no download)
#   python3-venv             python3 -m venv       (the Makefile's virtualenv)
# The Debian prometheus packages start their daemons on install; the tests start their
# own on free ports, so those daemons are stopped again.
#
# Needs root (apt-get).  Not root and something missing: prints the exact command to run
# and exits 1.  TASKPULSE_SKIP_DEPS=1 skips the whole check (you manage the tools yourself).
set -euo pipefail

group="${1:-test}"
case "$group" in
  test | python) ;;
  *) echo "usage: $0 [test|python]" >&2; exit 2 ;;
esac
[ "${TASKPULSE_SKIP_DEPS:-}" = 1 ] && exit 0

need=()
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
if [ "$group" = test ]; then
  # command → the Debian package that ships it
  for pair in docker-compose:docker-compose promtool:prometheus prometheus:prometheus \
              amtool:prometheus-alertmanager prometheus-alertmanager:prometheus-alertmanager \
              stunnel4:stunnel4 openssl:openssl chromium:chromium chromedriver:chromium-driver; do
    cmd="${pair%%:*}" pkg="${pair#*:}"
    command -v "$cmd" >/dev/null 2>&1 && continue
    [[ " ${need[*]-} " == *" $pkg "* ]] || need+=("$pkg")
  done
fi
[ "${#need[@]}" -eq 0 ] && exit 0

cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${need[*]}"
if [ "$(id -u)" -ne 0 ]; then
  {
    echo "install-deps: missing Debian packages: ${need[*]}"
    echo "install-deps: run this as root, then run make again:"
    echo "    sudo sh -c '$cmd'"
    echo "install-deps: (or set TASKPULSE_SKIP_DEPS=1 if you provide the tools another way)"
  } >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-deps: no apt-get here; install the equivalents of: ${need[*]}" >&2
  exit 1
fi

echo "install-deps: installing Debian packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
# Another apt run (unattended upgrades, a parallel job) may hold the lock: wait for it.
apt_opts=(-o DPkg::Lock::Timeout=300 -qq)
apt-get "${apt_opts[@]}" update
apt-get "${apt_opts[@]}" install -y --no-install-recommends "${need[@]}" >/dev/null

# The packages start their daemons (when an init system runs); the tests start their own.
for svc in prometheus prometheus-alertmanager prometheus-node-exporter stunnel4; do
  (service "$svc" stop >/dev/null 2>&1 || true)
done
echo "install-deps: done"
