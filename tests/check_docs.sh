#!/bin/sh
# The documents a user reads, checked by make test-readme (run from the repository root):
# - README.md has at most 300 lines (the rest belongs in docs/);
# - README.md links nowhere outside the repository: no http(s) address anywhere in it, no other
#   absolute link (a scheme such as mailto:, or a path from /), no path that climbs above the
#   repository's root;
# - README.md has no words of the tracker the work is planned in (issue, session, ticket);
# - every relative link in README.md and docs/*.md ([text](path), ![alt](path), [name]: path,
#   href="path", src="path"; outside code) names a file or folder that exists, and none of them
#   climbs above the repository's root. (A docs/ page may link to an http(s) address.)
# Prints each problem with its file and line; exits 1 if there is any.
set -u
fail=0
max_lines=300
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT

lines=$(wc -l < README.md)
if [ "$lines" -gt "$max_lines" ]; then
    echo "README.md: $lines lines, more than $max_lines (move the detail to a page in docs/)"
    fail=1
fi
if grep -Eiwn 'issues?|sessions?|tickets?' README.md; then
    echo "README.md: the lines above use tracker words (issue, session, ticket)"
    fail=1
fi
if grep -Ein 'https?://' README.md; then
    echo "README.md: the lines above hold http(s) addresses; link to a file in the repository"
    fail=1
fi

# Every link of a document, as "LINE TARGET" lines: fenced code blocks and `code spans` are
# skipped, a target's title ("...") and #anchor are dropped.
links() {
    awk '
    function emit(t) {
        sub(/^[ \t]*</, "", t); sub(/>$/, "", t)
        split(t, part, /[ \t]+/); t = part[1]
        sub(/#.*/, "", t)
        if (t != "") print FNR, t
    }
    /^[ \t]*(```|~~~)/ { fence = !fence; next }
    fence { next }
    {
        s = $0
        gsub(/`[^`]*`/, "", s)
        if (match(s, /^[ \t]*\[[^]]+\]:[ \t]+/)) { emit(substr(s, RLENGTH + 1)); next }
        while (match(s, /\]\([^)]*\)/)) {
            emit(substr(s, RSTART + 2, RLENGTH - 3))
            s = substr(s, RSTART + RLENGTH)
        }
        while (match(s, /(href|src)="[^"]*"/)) {
            t = substr(s, RSTART, RLENGTH); sub(/^[a-z]+="/, "", t); sub(/"$/, "", t)
            emit(t)
            s = substr(s, RSTART + RLENGTH)
        }
    }' "$1"
}

# The path of TARGET, linked from a document in DIR, from the repository's root; "OUTSIDE" if
# it climbs above the root.
resolve() {
    printf '%s/%s\n' "$1" "$2" | awk -F/ '{
        n = 0
        for (i = 1; i <= NF; i++) {
            if ($i == "" || $i == ".") continue
            if ($i == "..") { if (n == 0) { print "OUTSIDE"; exit } n--; continue }
            seg[++n] = $i
        }
        p = "."
        for (i = 1; i <= n; i++) p = p "/" seg[i]
        print p
    }'
}

for doc in README.md docs/*.md; do
    [ -f "$doc" ] || continue
    dir=$(dirname "$doc")
    links "$doc" > "$tmp"
    while read -r line target; do
        case "$target" in
        http://* | https://*)
            if [ "$doc" = README.md ]; then
                echo "$doc:$line: $target leaves the repository"
                fail=1
            fi
            continue
            ;;
        /* | [A-Za-z]*:*)
            echo "$doc:$line: $target is an absolute link; link to a file in the repository"
            fail=1
            continue
            ;;
        esac
        path=$(resolve "$dir" "$target")
        if [ "$path" = OUTSIDE ]; then
            echo "$doc:$line: $target leaves the repository"
            fail=1
        elif [ ! -e "$path" ]; then
            echo "$doc:$line: $target does not exist"
            fail=1
        fi
    done < "$tmp"
done
if [ "$fail" = 0 ]; then
    echo "README and docs: README.md within $max_lines lines ($lines), every link inside the repository and to a file that exists"
fi
exit "$fail"
