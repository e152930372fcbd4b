#!/bin/sh
# genman.sh PROGRAM DESCRIPTION OUT
#
# Writes the man page OUT for PROGRAM from its own --help and --version
# (help2man), so that the page never disagrees with the program. When the
# help lists "Commands:" (dist), the output of `PROGRAM help COMMAND` for
# each becomes a part of a COMMANDS section. Run by the build (see
# CMakeLists.txt); needs help2man.
set -eu
prog=$1 desc=$2 out=$3
inc=$out.inc
: >"$inc"
# ASan builds run these programs too: a leak report must not end up in a page.
export ASAN_OPTIONS=detect_leaks=0
# shellcheck disable=SC2046
set -- $("$prog" --help | awk '/^Commands:/ {on = 1; next} on && /^$/ {exit} on && $1 != "help" {print $1}')
if [ "$#" -gt 0 ]; then
    echo '[COMMANDS]' >>"$inc"
    for cmd in "$@"; do
        printf '.SS "%s"\n.nf\n' "$cmd" >>"$inc"
        # Lines starting with . or ' are troff requests: escape them.
        "$prog" help "$cmd" | sed -e 's/\\/\\e/g' -e "s/^\\([.']\\)/\\\\\\&\\1/" >>"$inc"
        printf '.fi\n' >>"$inc"
    done
fi
cat >>"$inc" <<'SEE'
[SEE ALSO]
.BR dist-master (1),
.BR dist-worker (1),
.BR dist (1).
The protocol, reliability guarantees and security model are described in
docs/PROTOCOL.md, and metrics in docs/OBSERVABILITY.md, in the libdist
sources.
SEE
# The footer's centre holds "PROGRAM VERSION": the whole first line of
# --version ("dist-master 0.1.0 (libdist 0.1.0, protocol 1)") overflows
# into the date on an 80-column page, so give help2man the number alone.
version=$("$prog" --version | awk 'NR == 1 {print $2}')
help2man --no-info --no-discard-stderr --section 1 --version-string "$version" \
    --name "$desc" --include "$inc" --output "$out.tmp" "$prog"
# --help may say what it found on this machine ("online CPUs, 2 here"): a
# man page is read on other machines, so drop that part.
sed -e 's/, [0-9][0-9]* here)/)/' "$out.tmp" >"$out"
rm -f "$out.tmp"
rm -f "$inc"
