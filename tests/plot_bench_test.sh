#!/usr/bin/env bash
# plot_bench_test.sh SOURCE_DIR - scripts/lib/plot_bench.py on a fixed set
# of figures: every figure with a py. twin is drawn with the right ratio
# (rates C/Python, times Python/C), the others are listed as without twin,
# and a file without any pair is refused. Skipped (77) without gnuplot.
set -euo pipefail
SRC=$1
command -v gnuplot >/dev/null || { echo "skipped: gnuplot not installed"; exit 77; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cat >"$TMP/results.txt" <<'R'
queue.msgs_per_s: 1.2e+07 msgs_per_s
pipe.rtt_us: 4 us
dist.master_rss_1m_queued_mib: 166 MiB
some noise line that is not a figure
py.queue.msgs_per_s: 300000 msgs_per_s
py.pipe.rtt_us: 48 us
R
python3 "$SRC/scripts/lib/plot_bench.py" "$TMP/results.txt" "$TMP/chart.svg" >"$TMP/out"
cat "$TMP/out"
grep -qx 'queue.msgs_per_s: 40x' "$TMP/out"
grep -qx 'pipe.rtt_us: 12x' "$TMP/out"
[ "$(wc -l <"$TMP/out")" -eq 2 ]
grep -q '<svg' "$TMP/chart.svg"
grep -q 'queue.msgs_per_s' "$TMP/chart.svg"
grep -q '40x (12M vs 300k msgs_per_s)' "$TMP/chart.svg"
grep -q 'no Python twin: dist.master_rss_1m_queued_mib' "$TMP/chart.svg"
if python3 "$SRC/scripts/lib/plot_bench.py" /dev/null "$TMP/none.svg" 2>"$TMP/err"; then
    echo "a file without figures was accepted" >&2; exit 1
fi
grep -q 'no figure' "$TMP/err"
echo "plot_bench: ok"
