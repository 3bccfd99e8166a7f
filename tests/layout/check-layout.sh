#!/bin/sh
# Checks the architecture the tree promises (docs/architecture.md), from the compiled objects and the sources:
#  1. no cycle among the files of src/ or among the files of one backend: file A "uses" file B when A's object
#     references a symbol B's object defines (nm), or A includes B's header; a .c and its own .h are one node;
#  2. layers call down only: src/shared uses nothing above it, src/request only shared, src/actor request and
#     shared, src/manager anything below, src/tools, src/thread and src/export (front layers on the public API;
#     export also on manager/bulk.h) anything below; a backend uses only the public API;
#  3. no backend file includes anything outside include/ and its own folder.
# Usage: tests/layout/check-layout.sh OBJDIR (the build's obj/ folder). Prints each violation; exits 1 on any.
set -eu
obj="$1"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
# node name of an object or a source: its path without the extension, relative to the tree
for o in $(find "$obj/src" "$obj/sources" -name '*.o' | sort); do
  n=${o#"$obj"/}; n=${n%.o}
  nm --defined-only -g "$o" | awk -v n="$n" 'NF == 3 {print $3, n}' >> "$tmp/defs"
  nm --undefined-only -g "$o" | awk -v n="$n" '{print $NF, n}' >> "$tmp/uses"
done
sort -k1,1 "$tmp/defs" > "$tmp/defs.s"; sort -k1,1 "$tmp/uses" > "$tmp/uses.s"
# edges from symbol use: user -> definer
join "$tmp/uses.s" "$tmp/defs.s" | awk '$2 != $3 {print $2, $3}' > "$tmp/edges"
# edges from includes of project headers (resolved against the including file's folder, src/ and include/)
for f in $(find src sources -name '*.[ch]' | sort); do
  d=$(dirname "$f"); n=${f%.*}
  grep -o '^#include "[^"]*"' "$f" | sed 's/#include "\(.*\)"/\1/' | while read -r h; do
    for cand in "$d/$h" "src/$h"; do
      if [ -f "$cand" ]; then
        c=$(realpath --relative-to=. "$cand"); c=${c%.*}
        [ "$c" != "$n" ] && echo "$n $c"
        break
      fi
    done
    case "$f" in
      sources/*)
        case "$h" in
          engram.h|engram/*.h) ;;
          */*|../*) echo "backend file $f includes \"$h\": outside include/ and its own folder" >> "$tmp/bad" ;;
          *) [ -f "$d/$h" ] || echo "backend file $f includes \"$h\": not in its folder" >> "$tmp/bad" ;;
        esac ;;
    esac
  done
done >> "$tmp/edges"
sort -u "$tmp/edges" -o "$tmp/edges"
layer() {
  case "$1" in
    src/shared/*) echo 1 ;; src/request/*) echo 2 ;; src/actor/*) echo 3 ;; src/manager/*) echo 4 ;;
    src/tools/*|src/thread/*|src/export/*) echo 5 ;; sources/*) echo B ;; *) echo 0 ;;
  esac
}
while read -r a b; do
  la=$(layer "$a"); lb=$(layer "$b")
  if [ "$la" = B ]; then
    ba=$(echo "$a" | cut -d/ -f2); bb=$(echo "$b" | cut -d/ -f2)
    [ "$lb" = B ] && [ "$ba" = "$bb" ] && continue
    [ "$lb" = B ] && { echo "backend $a uses another backend's $b" >> "$tmp/bad"; continue; }
    continue # a backend reaching the core goes through include/engram/source.h: the public API, checked below
  fi
  [ "$lb" = B ] && [ "$a" != src/manager/builtin ] && { echo "core file $a uses backend $b (only src/manager/builtin names backends)" >> "$tmp/bad"; continue; }
  if [ "$lb" != B ] && [ "$la" != 0 ] && [ "$lb" != 0 ] && [ "$lb" -gt "$la" ]; then
    echo "layer violation: $a calls up into $b" >> "$tmp/bad"
  fi
done < "$tmp/edges"
# a backend must reference only public symbols of the core (engram_*, not engram__*)
for o in $(find "$obj/sources" -name '*.o' | sort); do
  n=${o#"$obj"/}; n=${n%.o}; b=$(echo "$n" | cut -d/ -f2)
  nm --undefined-only -g "$o" | awk '{print $NF}' | grep '^engram__' | while read -r s; do
    grep -q "^$s sources/$b/" "$tmp/defs.s" || echo "backend file $n uses the core's internal $s" >> "$tmp/bad"
  done
done
# cycles: repeatedly strip nodes without outgoing edges (within src/, and within each backend); what remains
# lies on a cycle.
cycles() {
  grep -E "$1" "$tmp/edges" | awk -v re="$1" '{ if ($2 ~ re) print }' > "$tmp/g" || true
  while :; do
    awk '{print $1}' "$tmp/g" | sort -u > "$tmp/has_out"
    awk 'NR==FNR {h[$1]=1; next} ($2 in h)' "$tmp/has_out" "$tmp/g" > "$tmp/g2"
    if cmp -s "$tmp/g" "$tmp/g2"; then break; fi
    mv "$tmp/g2" "$tmp/g"
  done
  if [ -s "$tmp/g" ]; then
    echo "cycle among $1: $(awk '{printf "%s -> %s; ", $1, $2}' "$tmp/g")" >> "$tmp/bad"
  fi
}
cycles '^src/'
for b in $(ls sources); do cycles "^sources/$b/"; done
if [ -s "$tmp/bad" ]; then
  sort -u "$tmp/bad"
  fail=1
else
  echo "layout: no cycle in src/ or in any backend, layers call down only, backends see include/ and their folder"
fi
exit $fail
