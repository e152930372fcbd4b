#!/usr/bin/env bash
# layers_check.sh SRC - checks that every quoted #include in a layer folder
# of libdist/src names a header of that folder or of a layer it USES in its
# CMakeLists.txt (dist_layer(... USES ...)). The build enforces the same
# rule through include paths; this test also names the offending line, and
# fails when a header is included from a folder that is not a layer at all.
set -euo pipefail
SRC=${1:?usage: layers_check.sh libdist/src}
bad=0
for dir in "$SRC"/*/; do
    layer=$(basename "$dir")
    cml="$dir/CMakeLists.txt"
    if [ ! -f "$cml" ]; then
        echo "$layer: no CMakeLists.txt (every folder of libdist/src is a layer)"
        bad=1
        continue
    fi
    # The words after USES up to the next keyword or the closing parenthesis.
    uses=$(tr '\n' ' ' < "$cml" | sed -n 's/.*dist_layer(\([^)]*\)).*/\1/p' |
           awk '{on=0; for (i=1;i<=NF;i++) { if ($i=="USES") {on=1; continue}
                 if ($i=="SOURCES"||$i=="LIBS") on=0; if (on) printf "%s ", $i }}')
    allowed="$layer $uses"
    while IFS=: read -r file line text; do
        hdr=$(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' <<<"$text")
        [ -n "$hdr" ] || continue
        case "$hdr" in dist/*|dist.h) continue ;; esac   # public headers
        owner=""
        for d in "$SRC"/*/; do
            if [ -f "$d/$hdr" ]; then owner=$(basename "$d"); fi
        done
        if [ -z "$owner" ]; then
            echo "$file:$line: \"$hdr\" is in no layer folder"
            bad=1
        elif ! grep -qw "$owner" <<<"$allowed"; then
            echo "$file:$line: $layer/ may not include $owner/$hdr (uses: ${uses:-nothing})"
            bad=1
        fi
    done < <(grep -n '#[[:space:]]*include[[:space:]]*"' "$dir"*.c "$dir"*.h 2>/dev/null || true)
done
if [ "$bad" -ne 0 ]; then
    exit 1
fi
echo "layers: every include points to its own layer or one it uses"
