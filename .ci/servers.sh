#!/usr/bin/env bash
# Make sure the servers the integration tests start are installed.
# Installs MariaDB from Debian's packages when missing and we are root;
# otherwise says exactly what to install.
set -euo pipefail

need_mariadb=0
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need_mariadb=1
if [ "$need_mariadb" = 1 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing mariadb-server (the tests start their own throwaway server)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || true
    apt-get install -y -qq mariadb-server >/dev/null
    # Debian starts a system server on install; the tests never use it.
    (service mariadb stop || systemctl stop mariadb || true) >/dev/null 2>&1
  else
    echo "MariaDB is missing: run 'sudo apt-get install mariadb-server'" >&2
    exit 1
  fi
fi

# PostgreSQL: Debian keeps initdb and postgres in /usr/lib/postgresql/VERSION/bin, out of PATH.
have_postgres() {
  command -v postgres >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1 && return 0
  for bin in /usr/lib/postgresql/*/bin; do
    [ -x "$bin/postgres" ] && [ -x "$bin/initdb" ] && return 0
  done
  return 1
}
if ! have_postgres; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing postgresql (the tests start their own throwaway server)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || true
    apt-get install -y -qq postgresql >/dev/null
    # Debian creates and may start a system cluster on install; the tests never use it.
    (service postgresql stop || systemctl stop postgresql || true) >/dev/null 2>&1
    if command -v pg_lsclusters >/dev/null 2>&1; then
      pg_lsclusters -h 2>/dev/null | while read -r version cluster _; do
        pg_ctlcluster "$version" "$cluster" stop >/dev/null 2>&1 || true
      done
    fi
  else
    echo "PostgreSQL is missing: run 'sudo apt-get install postgresql'" >&2
    exit 1
  fi
fi

if ! command -v java >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jre-headless >/dev/null
  else
    echo "Java is missing (the Firestore emulator needs it): run 'sudo apt-get install default-jre-headless'" >&2
    exit 1
  fi
fi

emulator=""
for root in "${CLOUDSDK_ROOT_DIR:-}" "$(gcloud info --format='value(installation.sdk_root)' 2>/dev/null || true)" \
            /usr/lib/google-cloud-sdk /usr/share/google-cloud-sdk "$HOME/google-cloud-sdk"; do
  if [ -n "$root" ] && [ -x "$root/platform/cloud-firestore-emulator/cloud_firestore_emulator" ]; then
    emulator="$root/platform/cloud-firestore-emulator/cloud_firestore_emulator"
    break
  fi
done
if [ -z "$emulator" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && apt-cache show google-cloud-cli-firestore-emulator >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq google-cloud-cli-firestore-emulator >/dev/null
  elif command -v gcloud >/dev/null 2>&1; then
    gcloud components install cloud-firestore-emulator --quiet
  else
    echo "The Firestore emulator is missing: install the Google Cloud CLI and run" >&2
    echo "  gcloud components install cloud-firestore-emulator" >&2
    exit 1
  fi
fi
# Chromium, for the test of `empsync web` in a real headless browser.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium (the console-in-a-browser test drives it headless)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "Chromium is missing: run 'sudo apt-get install chromium'" >&2
    exit 1
  fi
fi

postgres_bin=$(command -v postgres || ls -d /usr/lib/postgresql/*/bin/postgres 2>/dev/null | sort -V | tail -1)
echo "servers: mariadbd $(mariadbd --version 2>/dev/null | awk '{print $3}'), $("$postgres_bin" --version 2>/dev/null), firestore emulator ok, $(java -version 2>&1 | head -1), $(chromium --version 2>/dev/null)"
