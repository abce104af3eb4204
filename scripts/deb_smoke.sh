#!/usr/bin/env bash
# The Debian package's smoke test (run by scripts/test.sh after the test suite): package the
# binary the suite built and tested (stripped by cargo-deb), install it with
# `dpkg -i`, check what it installed, remove it again.
#
# It installs into this machine's system directories (/usr/bin, /lib/systemd/system, a
# `dockwatch` system user), which is why it refuses to run where a dockwatch package is
# installed already: it would replace it.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

if dpkg -s dockwatch >/dev/null 2>&1; then
  log "a dockwatch package is installed here already: not replacing it (deb smoke test skipped)"
  exit 0
fi
apt_install man-db bash-completion
deb="$(./scripts/package.sh --binary target/debug/dockwatch)"
[ -f "$deb" ] || { echo "deb smoke test: no package built" >&2; exit 1; }
log "installing $deb"
trap 'as_root dpkg --purge dockwatch >/dev/null 2>&1 || true' EXIT
as_root dpkg -i "$deb" >/dev/null

fail() { echo "deb smoke test: $*" >&2; exit 1; }
want="dockwatch $(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
got="$(/usr/bin/dockwatch --version)"
[ "$got" = "$want" ] || fail "--version says '$got', expected '$want'"
MANPAGER=cat MANWIDTH=80 man dockwatch 2>/dev/null | grep -q -- "--docker-image" \
  || fail "man dockwatch does not show the options"
bash -c 'source /usr/share/bash-completion/bash_completion
         source /usr/share/bash-completion/completions/dockwatch
         complete -p dockwatch' | grep -q dockwatch || fail "no bash completion for dockwatch"
for f in /usr/share/zsh/vendor-completions/_dockwatch /usr/share/fish/vendor_completions.d/dockwatch.fish; do
  [ -s "$f" ] || fail "$f is missing"
done
getent passwd dockwatch >/dev/null || fail "no dockwatch system user"
for u in dockwatch-download dockwatch-agent dockwatch-on-upload dockwatch-ship; do
  f="/lib/systemd/system/$u.service"
  [ -f "$f" ] || fail "$f is missing"
  grep -q '^User=dockwatch$' "$f" && grep -q '^ProtectSystem=strict$' "$f" \
    && grep -q '^StateDirectory=dockwatch$' "$f" || fail "$f is not hardened"
done
grep -q '^AmbientCapabilities=CAP_DAC_READ_SEARCH$' /lib/systemd/system/dockwatch-ship.service \
  || fail "dockwatch-ship.service cannot read the engine's log files"
# The units' syntax and settings (offline; units they need, like docker.service, may be absent).
if command -v systemd-analyze >/dev/null 2>&1; then
  out="$(systemd-analyze verify /lib/systemd/system/dockwatch-*.service 2>&1 || true)"
  if echo "$out" | grep -v -e 'docker.service' -e 'network-online' -e '^$' | grep -qi -e 'unknown' -e 'invalid' -e 'failed to parse'; then
    fail "systemd-analyze verify: $out"
  fi
fi
as_root dpkg --purge dockwatch >/dev/null
getent passwd dockwatch >/dev/null && fail "the purge left the dockwatch user"
[ ! -e /usr/bin/dockwatch ] || fail "the purge left /usr/bin/dockwatch"
trap - EXIT
log "deb smoke test: installed, checked and purged $deb"
