#!/usr/bin/env bash
# Print the path of a Python >= 3.12 interpreter found on this machine, or fail with one line.
# Order: python3.13 / python3.12 on PATH (only if they actually run, pyenv shims may not),
# then pyenv's installed 3.13.x / 3.12.x versions.
set -u
ok() { "$1" -c 'import sys, venv; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; }
for cand in python3.13 python3.12; do
    if command -v "$cand" >/dev/null 2>&1 && ok "$cand"; then
        "$cand" -c 'import sys; print(sys.executable)'
        exit 0
    fi
done
roots=()
if command -v pyenv >/dev/null 2>&1; then roots+=("$(pyenv root 2>/dev/null)"); fi
roots+=("${PYENV_ROOT:-$HOME/.pyenv}")
for root in "${roots[@]}"; do
    [ -d "$root/versions" ] || continue
    for cand in $(ls -d "$root"/versions/3.13.* "$root"/versions/3.12.* 2>/dev/null | sort -rV); do
        if [ -x "$cand/bin/python" ] && ok "$cand/bin/python"; then
            echo "$cand/bin/python"
            exit 0
        fi
    done
done
echo "error: no Python >= 3.12 found (tried python3.13, python3.12 and pyenv versions); install one, e.g. 'pyenv install 3.12' or your system's python3.12 package" >&2
exit 1
