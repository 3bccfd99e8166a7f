#!/bin/sh
# build-corpus.sh — builds the Debian package-description corpus the agent_memory demo ingests
# (debian-descriptions.jsonl.gz: one {"key", "title", "text", "section", "tags"} object a line) from this
# machine's own apt sources, without touching the system's apt state.
#
# It runs `apt-get update` into a private lists directory (Dir::State::Lists, Dir::Cache, with English
# descriptions: Acquire::Languages=en), reading the machine's sources (Dir::Etc::SourceList and
# Dir::Etc::SourceParts, overridable with APT_SOURCE_LIST / APT_SOURCE_PARTS), decompresses the Packages and
# Translation-en indexes with apt-helper, joins them with corpus.awk (POSIX awk, no Python), sorts by key
# and gzips the result. Network access to the mirrors is needed once; nothing is installed.
#
# With --installed it reads dpkg's status file instead: no network, only the packages installed here (a few
# hundred records; what CI falls back to on a machine without network access).
#
# Usage: examples/corpus/build-corpus.sh [--installed] OUT.jsonl.gz
set -eu

here=$(cd "$(dirname "$0")" && pwd)
if [ "${1:-}" = "--installed" ]; then
  out="${2:?usage: build-corpus.sh [--installed] OUT.jsonl.gz}"
  status=/var/lib/dpkg/status
  [ -r "$status" ] || { echo "build-corpus: $status not readable" >&2; exit 1; }
  mkdir -p "$(dirname "$out")"
  awk -f "$here/corpus.awk" "$status" phase=2 "$status" | LC_ALL=C sort | gzip -c > "$out.tmp"
  mv "$out.tmp" "$out"
  echo "build-corpus: $(gzip -dc "$out" | wc -l) records (installed packages) in $out"
  exit 0
fi
out="${1:?usage: build-corpus.sh [--installed] OUT.jsonl.gz}"
source_list="${APT_SOURCE_LIST:-/etc/apt/sources.list}"
source_parts="${APT_SOURCE_PARTS:-/etc/apt/sources.list.d}"
command -v apt-get >/dev/null 2>&1 || { echo "build-corpus: apt-get not found (a Debian or Ubuntu machine is needed)" >&2; exit 1; }
helper=/usr/lib/apt/apt-helper
[ -x "$helper" ] || { echo "build-corpus: $helper not found" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/engram-corpus.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
# apt downloads as the unprivileged _apt user when run as root: let it write the private directories.
chmod 755 "$work"
if [ "$(id -u)" = 0 ] && id _apt >/dev/null 2>&1; then chown -R _apt "$work/lists" "$work/cache"; fi

echo "build-corpus: apt-get update into a private lists directory ($work/lists)"
apt-get update -q \
  -o Acquire::Languages=en \
  -o Dir::State::Lists="$work/lists" \
  -o Dir::Cache="$work/cache" \
  -o Dir::Etc::SourceList="$source_list" \
  -o Dir::Etc::SourceParts="$source_parts" \
  -o Debug::NoLocking=1 >&2

set -- "$work"/lists/*_Packages*
[ -e "$1" ] || { echo "build-corpus: apt-get update fetched no Packages index" >&2; exit 1; }
"$helper" cat-file "$@" > "$work/Packages"
set -- "$work"/lists/*_Translation-en*
[ -e "$1" ] || { echo "build-corpus: apt-get update fetched no Translation-en index (Acquire::Languages=en)" >&2; exit 1; }
"$helper" cat-file "$@" > "$work/Translation-en"

mkdir -p "$(dirname "$out")"
awk -f "$here/corpus.awk" "$work/Packages" phase=2 "$work/Translation-en" | LC_ALL=C sort | gzip -c > "$out.tmp"
mv "$out.tmp" "$out"
echo "build-corpus: $(gzip -dc "$out" | wc -l) records in $out"
