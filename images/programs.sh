#!/bin/sh
# Print podkit's own programs, one per line, in the order pyproject.toml's
# [project.entry-points."podkit.programs"] table declares them: that table is
# the one list (it is what `podkit` runs). images/build.sh, images/publish.py,
# the e2e harness and the examples' test read it here, so a new program is
# built, published and tested by adding its entry point.
set -eu
cd "$(dirname "$0")/.."
sed -n '/^\[project\.entry-points\."podkit\.programs"\]/,/^\[/s/^\([a-z][a-z0-9_-]*\) *= *".*$/\1/p' pyproject.toml
