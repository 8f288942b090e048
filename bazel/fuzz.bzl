"""cc_fuzz_test: a libFuzzer target built with clang under ASan/UBSan, run for a bounded time.

Bazel's C++ toolchain here is gcc, so the fuzzer binary is built by a genrule calling clang++
with -fsanitize=fuzzer,address,undefined over the target's own sources and the library sources
it exercises (listed explicitly: everything fuzzed is compiled instrumented). The test replays
the committed corpus, then fuzzes for `max_total_time` seconds on a scratch copy of it; any
crash, leak, sanitizer report or timeout fails the test.
"""

def cc_fuzz_test(name, srcs, hdrs = [], corpus = None, max_total_time = 15, linkopts = [], **kwargs):
    """Defines <name>_bin (the fuzzer) and <name> (the sh_test that runs it).

    Args:
      name: test name.
      srcs: .cc files: the LLVMFuzzerTestOneInput file plus the library sources under test.
      hdrs: headers those sources include.
      corpus: a filegroup label of the committed corpus files (one directory).
      max_total_time: seconds of fuzzing after the corpus replay.
      linkopts: libraries to link (-lre2 ...).
      **kwargs: passed to sh_test (tags, size...).
    """
    native.genrule(
        name = name + "_build",
        srcs = srcs + hdrs,
        outs = [name + "_bin"],
        cmd = " ".join([
            "clang++ -std=c++17 -g -O1 -fno-omit-frame-pointer",
            "-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined",
            "-I. -I$(GENDIR)",
        ] + ["$(location %s)" % s for s in srcs] + ["-o $@"] + linkopts),
        message = "clang++ (libFuzzer) %s" % name,
        testonly = True,
    )
    native.sh_test(
        name = name,
        srcs = ["//tests:fuzz_runner.sh"],
        args = [
            "$(location :%s_bin)" % name,
            str(max_total_time),
        ] + (["$(locations %s)" % corpus] if corpus else []),
        data = [":" + name + "_bin"] + ([corpus] if corpus else []),
        **kwargs
    )
