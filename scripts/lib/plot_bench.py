#!/usr/bin/env python3
"""plot_bench.py RESULTS OUT.svg - draw scripts/bench figures beside Python's.

RESULTS holds `name: value unit` lines as scripts/bench prints them, C
figures and `py.`-prefixed Python figures from the same run. Every figure
that has a Python twin becomes one bar: how many times better libdist is
(C/Python for rates, Python/C for times and sizes, so that longer is always
better), on a log scale with a line at 1x (parity). Figures without a twin
are listed under the chart. gnuplot draws the SVG.
"""
import math
import os
import re
import subprocess
import sys
import tempfile

LOWER_IS_BETTER = {"us", "ns", "ms", "s", "MiB", "KiB", "bytes"}
LINE = re.compile(r"^([A-Za-z0-9_.]+): ([-+0-9.eE]+|nan|inf) (\S+)$")


def read(path):
    figures = {}
    with open(path) as f:
        for line in f:
            m = LINE.match(line.strip())
            if m:
                figures[m.group(1)] = (float(m.group(2)), m.group(3))
    return figures


def ratios(figures):
    rows = []
    for name, (value, unit) in figures.items():
        if name.startswith("py.") or ("py." + name) not in figures:
            continue
        py, py_unit = figures["py." + name]
        if py_unit != unit or value <= 0 or py <= 0:
            continue
        r = py / value if unit in LOWER_IS_BETTER else value / py
        rows.append((name, r, value, py, unit))
    return rows


def fmt(v):
    if v >= 1e6:
        return f"{v / 1e6:.3g}M"
    if v >= 1e3:
        return f"{v / 1e3:.3g}k"
    return f"{v:.3g}"


def times(r):
    """1.5x, 12x, 190x: two significant digits, never an exponent."""
    return f"{r:.0f}x" if r >= 10 else f"{r:.2g}x"


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: plot_bench.py RESULTS OUT.svg")
    figures = read(sys.argv[1])
    rows = ratios(figures)
    if not rows:
        sys.exit(f"plot_bench: no figure in {sys.argv[1]} has a py. twin")
    rows.sort(key=lambda r: r[1])
    alone = sorted(n for n in figures if not n.startswith("py.") and n not in {r[0] for r in rows})
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        with open(data, "w") as f:
            for i, (name, r, c, py, unit) in enumerate(rows):
                label = f"{times(r)} ({fmt(c)} vs {fmt(py)} {unit})"
                f.write(f'{i} {r} "{name}" "{label}"\n')
        top = max(r for _, r, *_ in rows)
        low = min(r for _, r, *_ in rows)
        height = 120 + 28 * len(rows) + (16 * ((len(alone) + 3) // 4) if alone else 0)
        note = ""
        if alone:
            note = "no Python twin: " + ", ".join(alone)
        script = f"""
set terminal svg size 900,{height} font "sans,11" background "white" noenhanced
set output "{sys.argv[2]}"
set title "libdist vs Python multiprocessing: times better (log scale, same run)"
set logscale x 10
set xrange [{min(0.5, low / 2)}:{10 ** math.ceil(math.log10(top * 12))}]
set yrange [-0.7:{len(rows) - 0.3}]
set ytics nomirror
set xtics nomirror
set grid xtics
set border 3
set style fill solid 0.8
set arrow from 1, graph 0 to 1, graph 1 nohead dashtype 2 lc "black"
set bmargin 4
set label "{note}" at screen 0.01, screen 0.02 font "sans,9"
unset key
plot "{data}" using (($2 >= 1 ? 1 : $2)):1:(($2 >= 1 ? 1 : $2)):(($2 >= 1 ? $2 : 1)):($1 - 0.35):($1 + 0.35):ytic(3) \\
        with boxxyerror lc rgb "#4a7fb5", \\
     "{data}" using (($2 >= 1 ? $2 : 1)):1:4 with labels left offset 0.5,0 font "sans,9"
"""
        gp = os.path.join(tmp, "plot.gp")
        with open(gp, "w") as f:
            f.write(script)
        subprocess.run(["gnuplot", gp], check=True)
    for name, r, c, py, unit in reversed(rows):
        print(f"{name}: {times(r)}")


if __name__ == "__main__":
    main()
