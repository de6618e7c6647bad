#!/usr/bin/env bash
# Compiles every handler source (handlers/*.bpf.c, examples/, test/, and test/verifier/: the
# verifier corpus) to the object committed beside it. `--check` recompiles into a temporary folder and fails when any object
# differs from the committed one (CI runs this so the objects cannot drift from the sources).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
CLANG=${CLANG:-clang}
FLAGS=(-O2 -target bpf -mcpu=v3 -Wall -Werror -I "$here/include")
check=0
[ "${1:-}" = "--check" ] && check=1
status=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for src in "$here"/*.bpf.c "$here"/examples/*.bpf.c "$here"/test/*.bpf.c "$here"/test/verifier/*.bpf.c; do
    [ -e "$src" ] || continue
    obj=${src%.c}.o
    # Compile from the handlers folder with relative paths so objects do not depend on where
    # the checkout lives.
    rel=${src#"$here"/}
    out="$tmp/$(basename "$obj")"
    # The verifier corpus carries line information (-g: .BTF and .BTF.ext), so rejections
    # name their C line; the handlers stay lean. Paths are recorded relative to handlers/, so
    # the objects do not depend on where the checkout lives.
    extra=()
    case "$rel" in test/verifier/*) extra=(-g "-fdebug-prefix-map=$here=.") ;; esac
    (cd "$here" && "$CLANG" "${FLAGS[@]}" "${extra[@]}" -c "$rel" -o "$out")
    if [ $check = 1 ]; then
        if ! cmp -s "$out" "$obj"; then
            echo "handlers: $rel compiles to different bytes than the committed ${obj#"$here"/}" >&2
            status=1
        fi
    else
        cp "$out" "$obj"
        echo "built ${obj#"$here"/}"
    fi
done
[ $check = 1 ] && [ $status = 0 ] && echo "handlers: all objects match their sources"
exit $status
