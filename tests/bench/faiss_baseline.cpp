// faiss_baseline.cpp — the FAISS baseline of bench_vector: exact inner-product k-NN (IndexFlatIP) over the same
// rows and queries as the engram vector source (tests/bench/vecgen.h), one query at a time, as an agent asks.
// Built and run by tests/bench/run-bench.sh only when libfaiss-dev is installed (OMP_NUM_THREADS=1, so that it
// uses one core like the source's actor). Prints the queries per second on stdout, nothing else.
// usage: faiss_baseline N DIM QUERIES K
#include <faiss/IndexFlat.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "vecgen.h"

static double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

int main(int argc, char **argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: %s N DIM QUERIES K\n", argv[0]);
    return 2;
  }
  long n = std::atol(argv[1]), q = std::atol(argv[3]);
  int d = std::atoi(argv[2]), k = std::atoi(argv[4]);
  std::vector<float> x((size_t)n * d), qs((size_t)q * d);
  for (long i = 0; i < n; i++) vecgen_row((uint64_t)i, x.data() + (size_t)i * d, (size_t)d);
  for (long i = 0; i < q; i++) vecgen_row(VECGEN_QUERY_BASE + (uint64_t)i, qs.data() + (size_t)i * d, (size_t)d);
  faiss::IndexFlatIP idx(d);
  idx.add(n, x.data());
  std::vector<float> dist((size_t)k);
  std::vector<faiss::Index::idx_t> lab((size_t)k);
  idx.search(1, qs.data(), k, dist.data(), lab.data()); // warm-up
  double t = now();
  for (long i = 0; i < q; i++) idx.search(1, qs.data() + (size_t)i * d, k, dist.data(), lab.data());
  std::printf("%.3f\n", (double)q / (now() - t));
  return 0;
}
