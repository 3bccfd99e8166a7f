#!/bin/sh
# Runs every example briefly (CI): each must exit 0 within its time limit. Examples that serve forever take
# their own bounded-run flags here.
set -eu
dir="$1"
for ex in "$dir"/*; do
  [ -x "$ex" ] || continue
  name=$(basename "$ex")
  echo "--- example $name"
  case "$name" in
    server|game_loop|multi_source_agent|agent_memory) [ -f "examples/$name/ci.sh" ] && sh "examples/$name/ci.sh" "$ex" ;;
    *) timeout 60 "$ex" ;;
  esac
done
echo "examples: all ran"
