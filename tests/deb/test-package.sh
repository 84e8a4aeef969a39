#!/usr/bin/env bash
# Builds the Debian package with `cargo deb`, runs lintian on it (any error or
# warning not overridden in debian/imagegc.lintian-overrides fails), installs
# it on this machine with `dpkg -i`, checks what landed and what did not happen
# (the service is neither enabled nor started, the maintainer scripts wrote
# nothing to stderr), reinstalls it over an edited policy, and purges it,
# checking that nothing is left behind.
#
# Usage (as root, from anywhere; .ci/run calls it after `cargo test`):
#   tests/deb/test-package.sh              # builds with `cargo deb` first
#   tests/deb/test-package.sh FILE.deb     # tests a package built earlier
#
# It refuses to run when an imagegc package, or any file the package would
# install, is already on the machine (it would overwrite and then purge it).
# Whatever happens after it installs the package, it purges it on exit.
set -euo pipefail
# A package named on the command line is relative to the caller's directory.
given_deb=${1:+$(realpath -- "$1")}
cd "$(dirname "$0")/../.."

readonly PKG=imagegc
readonly BIN=/usr/bin/imagegc
readonly POLICY=/etc/imagegc/imagegc.toml
readonly UNIT=/usr/lib/systemd/system/imagegc.service
readonly DOC=/usr/share/doc/imagegc
readonly WANTS_LINK=/etc/systemd/system/multi-user.target.wants/imagegc.service
readonly DSH_STATE=/var/lib/systemd/deb-systemd-helper-enabled
readonly DSH_MASKED=/var/lib/systemd/deb-systemd-helper-masked

script_start=$(date +%s)
step() { printf '\n== %s\n' "$*"; }
ok() { printf '   ok: %s\n' "$*"; }
fail() {
    printf '   FAIL: %s\n' "$*" >&2
    exit 1
}

# Prints dpkg's status word for the package ("installed", "config-files",
# ...), or nothing when dpkg does not know it.
pkg_status() {
    dpkg-query -W -f='${db:Status-Status}' "$PKG" 2>/dev/null || true
}

# Fails unless the file exists and has the same bytes as the source file.
same_file() {
    local path=$1 source=$2
    [ -f "$path" ] || fail "$path is missing"
    cmp -s "$path" "$source" || fail "$path differs from $source"
    ok "$path (= $source)"
}

# The same for a gzipped file (manual pages, the changelog) and its source.
same_gzipped() {
    local path=$1 source=$2
    [ -f "$path" ] || fail "$path is missing"
    zcat -- "$path" | cmp -s - "$source" || fail "$path does not unzip to $source"
    ok "$path (gzip of $source)"
}

# Runs a dpkg command with its stderr (where dpkg puts what the maintainer
# scripts write there, and its own warnings) captured: fails if the command
# fails or if anything reached stderr. A clean install, reinstall or purge
# says nothing there; a line there is a maintainer script or a dpkg warning
# no operator should have to read.
DPKG_STDERR=
quiet_dpkg() {
    local rc=0
    dpkg "$@" </dev/null 2>"$DPKG_STDERR" || rc=$?
    if [ -s "$DPKG_STDERR" ]; then
        echo "   dpkg $* wrote to stderr:" >&2
        sed 's/^/     | /' "$DPKG_STDERR" >&2
        fail "dpkg $* (or a maintainer script) wrote to stderr"
    fi
    [ "$rc" -eq 0 ] || fail "dpkg $* failed (exit $rc)"
    ok "dpkg $*: nothing on stderr"
}

# ---------------------------------------------------------------------------
step "preconditions"

[ "$(id -u)" -eq 0 ] || fail "run as root: the test installs and purges a package with dpkg"
for tool in dpkg dpkg-query dpkg-deb cmp md5sum zcat; do
    command -v "$tool" >/dev/null || fail "$tool is not installed"
done
command -v lintian >/dev/null || fail "lintian is not installed (apt-get install lintian; .ci/run does this)"
ok "running as root, dpkg tools and lintian present"

status=$(pkg_status)
if [ -n "$status" ] && [ "$status" != "not-installed" ]; then
    fail "dpkg already knows an $PKG package (status: $status); this test would replace and purge it. Remove it first (dpkg --purge $PKG) if it is disposable."
fi
for path in "$BIN" /etc/imagegc "$UNIT" /lib/systemd/system/imagegc.service \
    /etc/systemd/system/imagegc.service "$WANTS_LINK" "$DOC" \
    /usr/share/man/man1/imagegc.1.gz /usr/share/lintian/overrides/imagegc; do
    if [ -e "$path" ] || [ -L "$path" ]; then
        fail "$path already exists (installed by hand?); this test would overwrite it and its purge would delete it. Move it away first."
    fi
done
ok "no $PKG package and none of its paths on this machine"

# ---------------------------------------------------------------------------
if [ -n "$given_deb" ]; then
    deb=$given_deb
    step "package: $deb (given)"
else
    step "building the package: cargo deb (release build)"
    build_start=$(date +%s)
    # cargo deb prints the path of the package it wrote on stdout.
    deb=$(cargo deb | tail -n 1)
    echo "   cargo deb took $(($(date +%s) - build_start)) s"
fi
[ -f "$deb" ] || fail "no package file at '$deb'"
ok "$deb ($(du -h "$deb" | cut -f1))"

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
[ "$(dpkg-deb -f "$deb" Package)" = "$PKG" ] || fail "the package is not named $PKG"
[ "$(dpkg-deb -f "$deb" Version)" = "$version-1" ] ||
    fail "package version $(dpkg-deb -f "$deb" Version), expected $version-1 (Cargo.toml)"
ok "package $PKG $version-1"

# ---------------------------------------------------------------------------
step "lintian"
# Errors and warnings fail; informational tags are shown. The overrides ship in
# the package (/usr/share/lintian/overrides/imagegc), each with its reason.
# (Not --show-overrides: with it, lintian 2.116 exits 2 on an overridden tag.)
lintian_out=$(mktemp)
lintian_rc=0
lintian --fail-on error,warning --display-info "$deb" >"$lintian_out" 2>&1 || lintian_rc=$?
sed 's/^/   | /' "$lintian_out"
rm -f "$lintian_out"
[ "$lintian_rc" -eq 0 ] || fail "lintian found errors or warnings in $deb (exit $lintian_rc)"
ok "lintian: no error or warning"

changelog_version=$(dpkg-parsechangelog -l debian/changelog -S Version 2>/dev/null ||
    sed -n '1s/^[^ ]* (\([^)]*\)).*/\1/p' debian/changelog)
[ "$changelog_version" = "$version-1" ] ||
    fail "debian/changelog's top entry is $changelog_version, the package is $version-1: add an entry"
ok "debian/changelog's top entry: $changelog_version"

# ---------------------------------------------------------------------------
# From here on the package may be (partly) installed: purge it on any exit.
# (A name no function uses for a local: bash scopes locals dynamically, and
# the trap runs inside whichever function called exit.)
PACKAGE_INSTALLED_BY_TEST=0
cleanup() {
    local rc=$?
    if [ "$PACKAGE_INSTALLED_BY_TEST" = 1 ]; then
        status=$(pkg_status)
        if [ -n "$status" ] && [ "$status" != "not-installed" ]; then
            echo "   cleaning up: dpkg --purge $PKG" >&2
            dpkg --purge "$PKG" >/dev/null || echo "   dpkg --purge $PKG failed: purge it by hand" >&2
        fi
    fi
    [ -z "$DPKG_STDERR" ] || rm -f "$DPKG_STDERR"
    if [ "$rc" -ne 0 ]; then
        echo "test-package.sh: FAILED after $(($(date +%s) - script_start)) s" >&2
    fi
}
trap cleanup EXIT
DPKG_STDERR=$(mktemp)
trap 'exit 130' INT
trap 'exit 143' TERM

step "dpkg -i"
PACKAGE_INSTALLED_BY_TEST=1
quiet_dpkg -i "$deb"
[ "$(pkg_status)" = "installed" ] || fail "dpkg status is '$(pkg_status)', expected installed"
ok "installed"

step "control fields"
depends=$(dpkg-query -W -f='${Depends}' "$PKG")
[[ "$depends" == *libc6* ]] || fail "Depends ($depends) lacks libc6: cargo-deb's \$auto did not run"
ok "Depends: $depends"
recommends=$(dpkg-query -W -f='${Recommends}' "$PKG")
[ "$recommends" = "docker.io | docker-ce" ] || fail "Recommends is '$recommends'"
ok "Recommends: $recommends"
description=$(dpkg-query -W -f='${Description}' "$PKG")
[ "$(printf '%s\n' "$description" | wc -l)" -ge 5 ] || fail "no extended description: $description"
[[ "$description" == *"neither enabled nor started"* ]] ||
    fail "the description does not say the service is not enabled"
ok "Description: $(printf '%s\n' "$description" | head -n 1) (+ $(($(printf '%s\n' "$description" | wc -l) - 1)) lines)"

step "files"
expected=(
    "$BIN"
    "$POLICY"
    "$UNIT"
    "$DOC/README.md"
    "$DOC/copyright"
    "$DOC/changelog.Debian.gz"
    "$DOC/examples/prometheus.conf"
    /usr/share/lintian/overrides/imagegc
)
for example in config/examples/*.toml; do
    expected+=("$DOC/examples/$(basename "$example")")
done
for page in docs/man/*.1; do
    expected+=("/usr/share/man/man1/$(basename "$page").gz")
done
[ -x "$BIN" ] || fail "$BIN is missing or not executable"
[ "$(stat -c %a "$BIN")" = 755 ] || fail "$BIN has mode $(stat -c %a "$BIN"), expected 755"
ok "$BIN (mode 755)"
same_file "$POLICY" config/imagegc.toml
same_file "$UNIT" systemd/imagegc.service
if [ "$(readlink -f /lib)" = /usr/lib ]; then
    same_file /lib/systemd/system/imagegc.service systemd/imagegc.service
fi
same_file "$DOC/README.md" README.md
for example in config/examples/*.toml; do
    same_file "$DOC/examples/$(basename "$example")" "$example"
done
same_file "$DOC/copyright" debian/copyright
grep -q '^Copyright: ' "$DOC/copyright" || fail "$DOC/copyright has no Copyright: notice"
same_gzipped "$DOC/changelog.Debian.gz" debian/changelog
same_file "$DOC/examples/prometheus.conf" systemd/examples/prometheus.conf
same_file /usr/share/lintian/overrides/imagegc debian/imagegc.lintian-overrides
for page in docs/man/*.1; do
    same_gzipped "/usr/share/man/man1/$(basename "$page").gz" "$page"
done

# Every file dpkg lists is one we expect, and the other way round.
mapfile -t listed < <(dpkg -L "$PKG" | while read -r path; do
    if [ -f "$path" ] && [ ! -d "$path" ]; then echo "$path"; fi
done | sort)
mapfile -t wanted < <(printf '%s\n' "${expected[@]}" | sort)
if [ "${listed[*]}" != "${wanted[*]}" ]; then
    echo "   dpkg -L $PKG lists:" >&2
    printf '     %s\n' "${listed[@]}" >&2
    echo "   expected:" >&2
    printf '     %s\n' "${wanted[@]}" >&2
    fail "the package's file list is not the expected one"
fi
ok "dpkg -L lists exactly these ${#listed[@]} files:"
printf '     %s\n' "${listed[@]}"

step "the binary and the shipped policy"
reported=$("$BIN" --version) || fail "$BIN --version failed"
[ "$reported" = "imagegc $version" ] || fail "$BIN --version printed '$reported', expected 'imagegc $version'"
ok "$BIN --version: $reported"
"$BIN" check-config "$POLICY" || fail "$BIN check-config $POLICY failed"
ok "$BIN check-config $POLICY passes"
for example in "$DOC"/examples/*.toml; do
    "$BIN" check-config "$example" || fail "$BIN check-config $example failed"
done
ok "$BIN check-config passes for every installed example"
if command -v systemd-analyze >/dev/null; then
    # With the binary in place, this also checks that ExecStart= names it.
    systemd-analyze verify "$UNIT" || fail "systemd-analyze verify $UNIT failed"
    ok "systemd-analyze verify $UNIT"
fi

step "the installed unit's reload, as systemd runs it, with no PATH (so no /bin/kill)"
# systemd runs the ExecReload= lines in order and stops at the first that
# fails; MAINPID is in the environment. A stand-in main process exits 42 on
# SIGHUP. No PATH: only the installed binary and the shell's built-ins help.
mapfile -t reload_lines < <(sed -n 's/^ExecReload=//p' "$UNIT")
[ "${#reload_lines[@]}" -eq 2 ] || fail "expected two ExecReload= lines in $UNIT, found ${#reload_lines[@]}"
sh -c "trap 'exit 42' HUP; while :; do sleep 0.1; done" &
standin=$!
sleep 0.3
for line in "${reload_lines[@]}"; do
    # The lines are: a plain command, then /bin/sh -c '...' (one quoted word).
    eval "set -- $line"
    env -i MAINPID="$standin" "$@" || fail "ExecReload=$line failed"
done
standin_rc=0
wait "$standin" || standin_rc=$?
[ "$standin_rc" -eq 42 ] || fail "the reload did not deliver SIGHUP to MAINPID (stand-in exit $standin_rc)"
ok "both ExecReload= lines ran and SIGHUP reached MAINPID"
broken=$(mktemp)
printf '[[policy]]\nname = "x"\nolder_than = "soon"\n' >"$broken"
eval "set -- ${reload_lines[0]}"
[ "$1" = "$BIN" ] || fail "the first ExecReload= does not run $BIN: ${reload_lines[0]}"
check_rc=0
env -i "$1" check-config "$broken" >/dev/null 2>&1 || check_rc=$?
rm -f "$broken"
[ "$check_rc" -ne 0 ] || fail "the reload check passed a broken policy file"
ok "the reload check fails for a broken policy file (exit $check_rc), so no signal is sent"

step "conffile"
conffiles=$(dpkg-query -W -f='${Conffiles}' "$PKG")
echo "   ${conffiles# }"
sum=$(md5sum "$POLICY" | cut -d' ' -f1)
grep -qx " *$POLICY $sum" <<<"$conffiles" || fail "$POLICY is not a registered conffile (with md5 $sum)"
[ "$(grep -c . <<<"$conffiles")" -eq 1 ] || fail "expected exactly one conffile"
ok "$POLICY is the package's only conffile"

step "the service is installed but neither enabled nor started"
links=$(find /etc/systemd -name 'imagegc.service' 2>/dev/null || true)
[ -z "$links" ] || fail "install created enablement links: $links"
ok "no imagegc.service link under /etc/systemd"
if command -v systemctl >/dev/null; then
    enabled=$(systemctl --root=/ is-enabled imagegc.service 2>&1 || true)
    [ "$enabled" = disabled ] || fail "systemctl is-enabled imagegc.service: $enabled, expected disabled"
    ok "systemctl --root=/ is-enabled imagegc.service: disabled"
fi
postinst=/var/lib/dpkg/info/$PKG.postinst
if grep -nE 'deb-systemd-invoke start|_dh_action=start' "$postinst"; then
    fail "$postinst starts the service"
fi
ok "$postinst never starts it (on upgrades it try-restarts it only if it is running)"
if [ -d /run/systemd/system ]; then
    active=$(systemctl is-active imagegc.service || true)
    [ "$active" = inactive ] || fail "systemctl is-active imagegc.service: $active"
    ok "systemctl is-active imagegc.service: inactive"
else
    ok "(systemd is not running here: no live check of is-active)"
fi

step "reinstall over an edited policy: the operator's edit survives"
marker="# edited by tests/deb/test-package.sh"
echo "$marker" >>"$POLICY"
quiet_dpkg -i "$deb"
grep -qx "$marker" "$POLICY" || fail "reinstalling the package replaced the edited $POLICY"
leftovers=$(find /etc/imagegc -name '*.dpkg-*')
[ -z "$leftovers" ] || fail "dpkg left $leftovers"
"$BIN" check-config "$POLICY" || fail "$BIN check-config $POLICY failed after the reinstall"
ok "$POLICY kept the edit, no .dpkg-new/.dpkg-dist next to it"

step "an operator enables the service, then purges the package"
if command -v systemctl >/dev/null; then
    systemctl --root=/ enable imagegc.service
    [ -L "$WANTS_LINK" ] || fail "systemctl enable did not create $WANTS_LINK"
    ok "enabled: $WANTS_LINK"
else
    ok "(no systemctl here: enablement is not tested)"
fi
# What a running service would have written (DynamicUser= keeps StateDirectory=
# under /var/lib/private and links /var/lib/imagegc to it); purge must remove it.
state_paths=()
if [ ! -e /var/lib/imagegc ] && [ ! -L /var/lib/imagegc ] && [ ! -e /var/lib/private/imagegc ]; then
    mkdir -p /var/lib/private/imagegc
    echo '{}' >/var/lib/private/imagegc/state.json
    ln -s private/imagegc /var/lib/imagegc
    state_paths=(/var/lib/imagegc /var/lib/private/imagegc)
    ok "made service state as systemd would: /var/lib/imagegc -> private/imagegc"
else
    ok "(/var/lib/imagegc exists already: not simulating service state)"
fi
quiet_dpkg --purge "$PKG"

step "nothing is left behind"
status=$(pkg_status)
[ -z "$status" ] || [ "$status" = not-installed ] || fail "dpkg still knows $PKG (status: $status)"
ok "dpkg no longer knows $PKG"
for path in "${expected[@]}" /lib/systemd/system/imagegc.service /etc/imagegc "$DOC" \
    "$WANTS_LINK" "$DSH_STATE/imagegc.service.dsh-also" \
    "$DSH_STATE/multi-user.target.wants/imagegc.service" "$DSH_MASKED/imagegc.service" \
    "${state_paths[@]}"; do
    if [ -e "$path" ] || [ -L "$path" ]; then
        fail "$path is still there"
    fi
    ok "gone: $path"
done
stray=$(find /etc/systemd /var/lib/systemd /var/lib/dpkg/info -name "$PKG*" 2>/dev/null || true)
[ -z "$stray" ] || fail "left behind: $stray"
ok "no $PKG* under /etc/systemd, /var/lib/systemd or /var/lib/dpkg/info"

echo
echo "test-package.sh: all checks passed in $(($(date +%s) - script_start)) s"
