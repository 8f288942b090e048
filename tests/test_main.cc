// The Catch2 main of every test binary.
// - Prints one summary line "arbor-tests: N passed, N failed, N skipped" that .ci/run sums.
// - Test cases tagged [gpu] need a CUDA device: without one they are skipped (and counted as
//   skipped), so the same binaries pass in CI and exercise the GPU on a GPU host.
// - Test cases tagged [testbed] need the testbed models kept on the branch `testbed`
//   (tools/train/testbed.sh restore, which tools/test.sh runs where the branch is reachable):
//   without models/testbed/policy they are skipped and counted the same way.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <cstdio>
#include <filesystem>
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

int CountTagged(const std::string& name) {
  int n = 0;
  for (const auto& tc : Catch::getRegistryHub().getTestCaseRegistry().getAllTests()) {
    for (const auto& tag : tc.getTestCaseInfo().tags) {
      if (tag == name) ++n;
    }
  }
  return n;
}

// Adds "not [tag]" to every filter of the session (or makes it the filter).
void Exclude(Catch::Session& session, const std::string& tag) {
  auto& cfg = session.configData();
  if (cfg.testsOrTags.empty()) {
    cfg.testsOrTags.push_back("~[" + tag + "]");
  } else {
    for (auto& spec : cfg.testsOrTags) spec += " ~[" + tag + "]";
  }
  session.useConfigData(cfg);
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
    if (const int n = CountTagged("gpu"); n > 0) {
      std::printf("no CUDA device visible: skipping %d [gpu] test case(s)\n", n);
      g_skipped += n;
      Exclude(session, "gpu");
    }
  }
  if (!std::filesystem::exists("models/testbed/policy/config.json")) {
    if (const int n = CountTagged("testbed"); n > 0) {
      std::printf("models/testbed/policy missing (tools/train/testbed.sh restore): skipping %d "
                  "[testbed] test case(s)\n", n);
      g_skipped += n;
      Exclude(session, "testbed");
    }
  }
  // A binary whose every case is [gpu] runs nothing without a GPU; that is a clean skip.
  session.configData().warnings = Catch::WarnAbout::Nothing;
  return session.run();
}
