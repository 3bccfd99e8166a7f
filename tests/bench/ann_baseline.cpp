// ann_baseline.cpp — the hnswlib baseline of bench_ann.c: the same clustered vectors (tests/bench/vecgen.h,
// vecgen_clustered), the same held-out queries and the exact top 10 that bench_ann computed (TRUTH_FILE: Q × 10
// uint32 rows), indexed by hnswlib's HierarchicalNSW<float> (libhnswlib-dev, header-only) with the inner-product
// space, one thread. Built by tests/bench/run-bench.sh and `make bench-ann` when the header is installed.
// Prints "build <items/s> <bytes/item>", then answers "ef <ef> <recall@10> <queries/s>" for each ef_search: the
// ones given as arguments, or, without any, each line "<ef>" read from stdin until it closes — so that bench_ann
// can take the two libraries' query phases in turn, close in time, on a machine whose load changes by the minute.
// usage: ann_baseline N DIM Q CENTRES SIGMA M EF_CONSTRUCTION TRUTH_FILE [EF...]
#include <hnswlib/hnswlib.h>

#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "vecgen.h"

// The thread's CPU clock, as bench_ann times its own index (the machine may be busy with other work).
static double now() {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static long rss_bytes() {
  long pages = 0, rss = 0;
  FILE *f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  if (std::fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = 0;
  std::fclose(f);
  return rss * 4096;
}

int main(int argc, char **argv) {
  if (argc < 9) {
    std::fprintf(stderr, "usage: %s N DIM Q CENTRES SIGMA M EF_CONSTRUCTION TRUTH_FILE [EF...]\n", argv[0]);
    return 2;
  }
  size_t n = std::strtoul(argv[1], nullptr, 10), d = std::strtoul(argv[2], nullptr, 10),
         q = std::strtoul(argv[3], nullptr, 10);
  unsigned centres = (unsigned)std::atoi(argv[4]);
  double sigma = std::atof(argv[5]);
  size_t m = std::strtoul(argv[6], nullptr, 10), efc = std::strtoul(argv[7], nullptr, 10);
  const size_t k = 10;
  std::vector<float> x(n * d), qs(q * d);
  std::vector<uint32_t> truth(q * k);
  for (size_t i = 0; i < n; i++) vecgen_clustered(i, x.data() + i * d, d, centres, sigma);
  for (size_t i = 0; i < q; i++) vecgen_clustered(3000000000ull + i, qs.data() + i * d, d, centres, sigma);
  FILE *f = std::fopen(argv[8], "rb");
  if (f == nullptr || std::fread(truth.data(), sizeof(uint32_t), q * k, f) != q * k) {
    std::fprintf(stderr, "cannot read %s\n", argv[8]);
    return 1;
  }
  std::fclose(f);
  hnswlib::InnerProductSpace space(d);
  // $BENCH_ANN_GRAPH (bench_ann.c): the graph kept between runs in that path + ".hnswlib" — loaded when the file
  // exists (no build figures: "build -1 -1"), saved after the build when it does not.
  std::string saved = std::getenv("BENCH_ANN_GRAPH") && *std::getenv("BENCH_ANN_GRAPH")
                          ? std::string(std::getenv("BENCH_ANN_GRAPH")) + ".hnswlib" : std::string();
  FILE *probe = saved.empty() ? nullptr : std::fopen(saved.c_str(), "rb");
  long before = rss_bytes();
  if (probe != nullptr) std::fclose(probe);
  std::unique_ptr<hnswlib::HierarchicalNSW<float>> built(
      probe != nullptr ? new hnswlib::HierarchicalNSW<float>(&space, saved, false, n)
                       : new hnswlib::HierarchicalNSW<float>(&space, n, m, efc, 100));
  hnswlib::HierarchicalNSW<float> &index = *built;
  double t, build = -1, bytes = -1;
  if (probe == nullptr) {
    t = now();
    for (size_t i = 0; i < n; i++) index.addPoint(x.data() + i * d, i);
    build = (double)n / (now() - t);
    bytes = (double)(rss_bytes() - before) / (double)n;
    if (!saved.empty()) index.saveIndex(saved);
  }
  std::printf("build %.1f %.1f\n", build, bytes);
  std::fflush(stdout);
  char line[64];
  for (int a = 9; argc > 9 ? a < argc : std::fgets(line, sizeof line, stdin) != nullptr; a++) {
    size_t ef = std::strtoul(argc > 9 ? argv[a] : line, nullptr, 10);
    size_t hits = 0;
    if (ef == 0) continue;
    index.setEf(ef);
    t = now();
    for (size_t i = 0; i < q; i++) {
      auto res = index.searchKnn(qs.data() + i * d, k);
      while (!res.empty()) {
        size_t label = res.top().second;
        res.pop();
        for (size_t j = 0; j < k; j++)
          if (truth[i * k + j] == label) {
            hits++;
            break;
          }
      }
    }
    double qps = (double)q / (now() - t);
    std::printf("ef %zu %.4f %.1f\n", ef, (double)hits / (double)(q * k), qps);
    std::fflush(stdout);
  }
  return 0;
}
