#!/usr/bin/env bash
# dashboard_check.sh DASHBOARD_HTML
#
# Extracts the <script> of the dashboard page (libdist/src/master/dashboard.html)
# and checks that it parses with `node --check`. Exits 77 (ctest: skipped)
# when node is not installed. The page's behaviour in a browser is tested
# end to end elsewhere, against a real cluster.
set -euo pipefail
HTML=$1
if ! command -v node >/dev/null; then
    echo "dashboard_js: skipped (node is not installed)"
    exit 77
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
# The page has exactly one script, between a "<script>" line and a
# "</script>" line.
n=$(grep -c '^<script>$' "$HTML" || true)
if [ "$n" != 1 ] || [ "$(grep -c '^</script>$' "$HTML" || true)" != 1 ]; then
    echo "dashboard_js: expected one <script> ... </script> block on lines of their own" >&2
    exit 1
fi
awk '/^<script>$/ { inside = 1; next } /^<\/script>$/ { inside = 0 } inside' "$HTML" >"$TMP/dashboard.js"
[ -s "$TMP/dashboard.js" ] || { echo "dashboard_js: empty script" >&2; exit 1; }
node --check "$TMP/dashboard.js"
echo "dashboard_js: $(wc -l <"$TMP/dashboard.js") lines of script parse"
