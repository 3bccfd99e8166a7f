#!/bin/sh
# Runs every example briefly (CI): an example with a ci.sh in its directory (server, game_loop,
# multi_source_agent, agent_memory) is run by that script, which bounds the run and checks the output; any other
# must exit 0 within 60 s. Exits non-zero at the first failure. Run from the repository root:
#   sh examples/run-examples.sh build/examples
set -eu
dir="${1:-build/examples}"
n=0
for ex in "$dir"/*; do
  [ -x "$ex" ] && [ -f "$ex" ] || continue
  name=$(basename "$ex")
  echo "--- example $name"
  if [ -f "examples/$name/ci.sh" ]; then
    sh "examples/$name/ci.sh" "$ex"
  else
    timeout 60 "$ex"
  fi
  n=$((n + 1))
done
[ "$n" -gt 0 ] || { echo "examples: none built in $dir (make examples)" >&2; exit 1; }
echo "examples: all $n ran"
