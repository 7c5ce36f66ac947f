#!/bin/sh
# README.md's "Where the method is in perpo.h": on every row of its table, the line of perpo.h
# that the row names holds the text the row shows between backticks. Fails when perpo.h moves and
# the table does not follow (then correct the line numbers in README.md).
set -u
tab=$(printf '\t')
rows=$(awk -F'|' '
    /^## Where the method is in perpo\.h$/ { f = 1; next }
    /^## / { f = 0 }
    f && /^\|/ && $3 ~ /^ *[0-9]+ *$/ {
        n = $3; gsub(/ /, "", n)
        if (!match($4, /`[^`]+`/)) { print "BAD\t" $0; next }
        print n "\t" substr($4, RSTART + 1, RLENGTH - 2)
    }' README.md)
if [ -z "$rows" ]; then
    echo "README map: no table rows under \"## Where the method is in perpo.h\" in README.md"
    exit 1
fi
fail=0
count=0
while IFS="$tab" read -r n text; do
    if [ "$n" = BAD ]; then
        echo "README map: a row without \`text\` to find: $text"
        fail=1
        continue
    fi
    count=$((count + 1))
    line=$(sed -n "${n}p" perpo.h)
    case "$line" in
    *"$text"*) ;;
    *)
        echo "README map: perpo.h line $n does not hold \"$text\" (it holds: $line)"
        at=$(grep -nF -- "$text" perpo.h | head -3 | cut -d: -f1 | tr '\n' ' ')
        [ -n "$at" ] && echo "  \"$text\" is on line(s) $at"
        fail=1
        ;;
    esac
done <<EOF
$rows
EOF
[ "$fail" = 0 ] && echo "README map: the $count lines README.md names in perpo.h hold what it says"
exit $fail
