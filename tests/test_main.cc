// The Catch2 main of every test binary.
// - Prints one summary line "arbor-tests: N passed, N failed, N skipped" that .ci/run sums.
// - Test cases tagged [gpu] need a CUDA device: without one they are skipped (and counted as
//   skipped), so the same binaries pass in CI and exercise the GPU on a GPU host.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <cstdio>
#include <string>
#include <vector>

#ifdef ARBOR_TEST_WITH_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace {

bool GpuVisible() {
#ifdef ARBOR_TEST_WITH_CUDA
  return arbor::kernels::CudaDeviceVisible();
#else
  return false;
#endif
}

int CountGpuTests() {
  int n = 0;
  for (const auto& tc : Catch::getRegistryHub().getTestCaseRegistry().getAllTests()) {
    for (const auto& tag : tc.getTestCaseInfo().tags) {
      if (tag == "gpu") ++n;
    }
  }
  return n;
}

int g_skipped = 0;

struct SummaryListener : Catch::TestEventListenerBase {
  using TestEventListenerBase::TestEventListenerBase;
  void testRunEnded(const Catch::TestRunStats& stats) override {
    const auto& t = stats.totals.testCases;
    std::printf("arbor-tests: %zu passed, %zu failed, %d skipped\n", t.passed + t.failedButOk,
                t.failed, g_skipped);
    std::fflush(stdout);
  }
};

}  // namespace

CATCH_REGISTER_LISTENER(SummaryListener)

int main(int argc, char** argv) {
  Catch::Session session;
  if (int rc = session.applyCommandLine(argc, argv); rc != 0) return rc;
  if (!GpuVisible()) {
    g_skipped = CountGpuTests();
    if (g_skipped > 0) {
      std::printf("no CUDA device visible: skipping %d [gpu] test case(s)\n", g_skipped);
      auto& cfg = session.configData();
      // Keep the user's own filters and add "not [gpu]" to each of them.
      if (cfg.testsOrTags.empty()) {
        cfg.testsOrTags.push_back("~[gpu]");
      } else {
        for (auto& spec : cfg.testsOrTags) spec += " ~[gpu]";
      }
      session.useConfigData(cfg);
    }
  }
  // A binary whose every case is [gpu] runs nothing without a GPU; that is a clean skip.
  session.configData().warnings = Catch::WarnAbout::Nothing;
  return session.run();
}
