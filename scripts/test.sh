#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with Rust: installs what
# the tests need (idempotently, from Debian and PyPI packages), then runs
# every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for pkg_bin in skopeo:skopeo docker-registry:docker-registry iproute2:ip openssl:openssl gzip:gzip curl:curl \
    containerd:containerd containerd:ctr apache2-utils:htpasswd podman:podman \
    systemd:systemd-analyze prometheus:promtool chromium:chromium; do
    pkg=${pkg_bin%%:*} bin=${pkg_bin##*:}
    command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || [ -x "/usr/bin/$bin" ] || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

py=python3
pip_install() {
    $py -m pip install -q --disable-pip-version-check "$@" 2>/dev/null \
        || $py -m pip install -q --disable-pip-version-check --break-system-packages "$@"
}
$py -c 'import oras' >/dev/null 2>&1 || pip_install oras
# A real S3 server (moto) and an independent client (boto3) for the object-store tests.
$py -c 'import moto.server, boto3' >/dev/null 2>&1 || pip_install 'moto[server]' boto3

# Tests that need an external tool fail instead of skipping when it is absent.
export CAIRN_REQUIRE_TOOLS=1
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast "$@"
else
    cargo test --workspace --no-fail-fast "$@"
fi
