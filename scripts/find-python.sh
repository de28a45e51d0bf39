#!/usr/bin/env sh
# Prints a Python 3.12+ interpreter: python3.13, python3.12, then pyenv's builds.
# pyenv shims exist for versions that are not selected and fail when run, so each
# candidate is asked for its version rather than trusted for existing.
ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; }
for c in python3.13 python3.12 python3; do
  if command -v "$c" >/dev/null 2>&1 && ok "$c"; then command -v "$c"; exit 0; fi
done
root=${PYENV_ROOT:-$HOME/.pyenv}
for p in $(ls -d "$root"/versions/3.13* "$root"/versions/3.12* 2>/dev/null | sort -rV); do
  for c in "$p/bin/python3.13" "$p/bin/python3.12"; do
    if [ -x "$c" ] && ok "$c"; then echo "$c"; exit 0; fi
  done
done
echo "Switchboard needs Python 3.12 or newer (Django 6). Install python3.12 or python3.13" >&2
echo "(apt-get install python3.12, or pyenv install 3.13) and run make again." >&2
exit 1
