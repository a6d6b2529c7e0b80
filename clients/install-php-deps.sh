#!/bin/sh
# What `make test-php` needs from Debian: php-cli with mysqli, phpunit, the wordpress package,
# mariadb-server and its client. Installs them when run as root with apt-get; otherwise, or if
# installing fails, says what is missing and exits 1 (the suite then fails rather than skips).
set -eu

PACKAGES="php-cli php-mysql phpunit wordpress mariadb-server mariadb-client"

missing() {
    out=""
    command -v php >/dev/null 2>&1 || out="$out php-cli"
    command -v php >/dev/null 2>&1 && { php -m 2>/dev/null | grep -qx mysqli || out="$out php-mysql"; }
    command -v phpunit >/dev/null 2>&1 || out="$out phpunit"
    [ -f /usr/share/wordpress/wp-settings.php ] || out="$out wordpress"
    { command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ]; } || out="$out mariadb-server"
    command -v mariadb-install-db >/dev/null 2>&1 || out="$out mariadb-server"
    command -v mariadb >/dev/null 2>&1 || out="$out mariadb-client"
    command -v openssl >/dev/null 2>&1 || out="$out openssl"
    echo "$out"
}

need=$(missing)
if [ -n "$need" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test-php: installing$need"
    apt-get update -qq
    # wordpress would pull in apache2 through its recommendations; the tests need none of it.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $PACKAGES openssl >/dev/null
    need=$(missing)
fi
if [ -n "$need" ]; then
    echo "test-php: missing Debian packages:$need (run as root to install them: apt-get install$need)" >&2
    exit 1
fi
