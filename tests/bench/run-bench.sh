#!/bin/sh
# run-bench.sh — runs every benchmark program (tests/bench/bench_*.c, built by `make bench` into BENCH_DIR),
# each in a process of its own, after building the FAISS baseline when libfaiss-dev is installed (and bench_ann's
# hnswlib baseline, tests/bench/ann_baseline.cpp, when libhnswlib-dev is). Each program
# prints its own table and appends one JSON object per figure to $BENCH_RESULTS (build/bench/results.jsonl,
# emptied first); at the end this script prints the whole table again and writes it as Markdown to
# build/bench/results.md. A program that fails is reported and the others still run; the exit status is then 1.
#
# usage: tests/bench/run-bench.sh BENCH_DIR [bench_name ...]     (default: every bench_* in BENCH_DIR)
# knobs: BENCH_SCALE (multiplies the call counts, default 1), BENCH_ONLY (sections, e.g. "one-core,latency"),
#        BENCH_<SOURCE>_N, ENGRAM_CORPUS (the Debian corpus), OMP_NUM_THREADS for FAISS (default 1).
set -u

BENCH_DIR=${1:?usage: run-bench.sh BENCH_DIR [bench_name ...]}
shift
OUT_DIR=build/bench
mkdir -p "$OUT_DIR"
BENCH_RESULTS=${BENCH_RESULTS:-$OUT_DIR/results.jsonl}
export BENCH_RESULTS
: > "$BENCH_RESULTS"

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
echo "engram benchmarks — $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: $(nproc) cores, ${cpu:-unknown CPU}, $mem; load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "results: $BENCH_RESULTS (ratio = engram / baseline; for latency and memory lower is better)"

# The FAISS baseline of bench_vector: built here because it is C++ and optional.
FAISS_QPS=""
if [ -f /usr/include/faiss/IndexFlat.h ]; then
  if c++ -O3 -march=native -fopenmp tests/bench/faiss_baseline.cpp -o "$BENCH_DIR/faiss_baseline" \
       -lfaiss -lblas -llapack -lm 2> "$OUT_DIR/faiss_build.log"; then
    FAISS_QPS=$(OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$BENCH_DIR/faiss_baseline" \
      "${BENCH_VECTOR_N:-100000}" "${BENCH_VECTOR_DIM:-384}" "${BENCH_VECTOR_Q:-100}" 10) || FAISS_QPS=""
  else
    echo "(FAISS baseline did not build: see $OUT_DIR/faiss_build.log)"
  fi
else
  echo "(libfaiss-dev not installed: the vector comparison runs against the scalar loop only)"
fi
export BENCH_FAISS_QPS="$FAISS_QPS"

# The hnswlib baseline of bench_ann (C++, header-only: libhnswlib-dev); bench_ann runs it on its own vectors.
if [ -f /usr/include/hnswlib/hnswlib.h ]; then
  if c++ -O3 -march=native -Itests/bench tests/bench/ann_baseline.cpp -o "$BENCH_DIR/ann_baseline" \
       2> "$OUT_DIR/ann_baseline_build.log"; then
    export BENCH_ANN_BASELINE="$BENCH_DIR/ann_baseline"
  else
    echo "(hnswlib baseline did not build: see $OUT_DIR/ann_baseline_build.log)"
  fi
else
  echo "(libhnswlib-dev not installed: bench_ann runs without its hnswlib comparison)"
fi

if [ $# -gt 0 ]; then
  benches=""
  for b in "$@"; do benches="$benches $BENCH_DIR/$b"; done
else
  # A fixed order: the in-process cache first, then the servers, then the embedded stores and the corpus.
  benches=""
  for b in bench_cache bench_redis bench_postgres bench_sqlite bench_vector bench_corpus; do
    [ -x "$BENCH_DIR/$b" ] && benches="$benches $BENCH_DIR/$b"
  done
  for b in "$BENCH_DIR"/bench_*; do
    case " $benches " in *" $b "*) ;; *) [ -x "$b" ] && benches="$benches $b" ;; esac
  done
fi

failed=""
start=$(date +%s)
for b in $benches; do
  t0=$(date +%s)
  printf '\n######## %s\n' "$(basename "$b")"
  if ! "$b"; then
    failed="$failed $(basename "$b")"
    echo "!!!!!!!! $(basename "$b") failed"
  fi
  echo "($(basename "$b"): $(( $(date +%s) - t0 )) s)"
done

# The whole table, from the JSON lines.
summary() {
  awk -v md="$1" '
    function field(name,   re, v) {
      re = "\"" name "\": (\"[^\"]*\"|[^,}]*)"
      if (!match($0, re)) return ""
      v = substr($0, RSTART + length(name) + 4, RLENGTH - length(name) - 4)
      gsub(/^"|"$/, "", v)
      return v
    }
    function num(v) {
      if (v == "" || v == "null") return "-"
      if (v + 0 >= 1000 || v + 0 <= -1000) return sprintf("%.0f", v)
      if (v + 0 >= 10 || v + 0 <= -10) return sprintf("%.1f", v)
      return sprintf("%.3f", v)
    }
    BEGIN {
      if (md) { print "| source | metric | engram | baseline | ratio | unit |"; print "|---|---|---:|---:|---:|---|" }
      else printf "%-8s %-52s %12s %12s %7s  %s\n", "source", "metric", "engram", "baseline", "ratio", "unit"
    }
    {
      b = field("bench"); m = field("metric"); e = num(field("engram")); base = num(field("baseline"));
      r = field("ratio"); r = (r == "" || r == "null") ? "-" : sprintf("%.2f", r); u = field("unit")
      if (md) printf "| %s | %s | %s | %s | %s | %s |\n", b, m, e, base, r, u
      else printf "%-8s %-52s %12s %12s %7s  %s\n", b, m, e, base, r, u
    }' "$BENCH_RESULTS"
}

echo
echo "================ summary ($(( $(date +%s) - start )) s; load average now: $(cut -d' ' -f1-3 /proc/loadavg))"
summary 0
summary 1 > "$OUT_DIR/results.md"
echo
echo "written: $BENCH_RESULTS, $OUT_DIR/results.md"
if [ -n "$failed" ]; then
  echo "FAILED:$failed"
  exit 1
fi
exit 0
