"""cuda_library: compiles .cu files with nvcc and wraps the objects in a cc_library.

Each .cu file becomes one genrule that runs /usr/local/cuda/bin/nvcc, producing a
position-independent object; the cc_library links those objects with the CUDA runtime and
cuBLAS (//third_party:cuda). Kernels take raw pointers and plain structs, so a .cu file only
includes its own headers (`hdrs`), any listed in `cu_deps_hdrs`, and the toolkit's.
"""

# Hopper is the target that matters (sm_90a unlocks wgmma/TMA); Ampere keeps a portable path.
CUDA_GENCODE = [
    "-gencode=arch=compute_90a,code=sm_90a",
    "-gencode=arch=compute_80,code=sm_80",
]

_NVCC = "/usr/local/cuda/bin/nvcc"

_NVCC_FLAGS = [
    "-std=c++17",
    "-O3",
    "--expt-relaxed-constexpr",
    "-Xcompiler=-fPIC,-Wall,-Wextra",
    "-Werror=all-warnings",
    "-lineinfo",
]

def cuda_library(name, srcs, hdrs = [], cu_deps_hdrs = [], deps = [], nvcc_flags = [], **kwargs):
    """A cc_library whose sources are .cu files compiled by nvcc.

    Args:
      name: target name.
      srcs: .cu files.
      hdrs: public headers (also visible to nvcc).
      cu_deps_hdrs: other headers the .cu files include (labels).
      deps: cc_library deps of the resulting library.
      nvcc_flags: extra nvcc flags.
      **kwargs: passed to cc_library (visibility, tags...).
    """
    objs = []
    for src in srcs:
        base = src.replace("/", "_").rsplit(".", 1)[0]
        obj = "_%s_%s.o" % (name, base)
        native.genrule(
            name = "_%s_%s_nvcc" % (name, base),
            srcs = [src] + hdrs + cu_deps_hdrs,
            outs = [obj],
            cmd = " ".join([_NVCC] + _NVCC_FLAGS + CUDA_GENCODE + nvcc_flags + [
                "-I.",
                "-I$(GENDIR)",
                "-c",
                "$(location %s)" % src,
                "-o",
                "$@",
            ]),
            message = "nvcc %s" % src,
            tags = kwargs.get("tags", []),
        )
        objs.append(obj)
    native.cc_library(
        name = name,
        srcs = objs,
        hdrs = hdrs,
        deps = deps + ["//third_party:cuda"],
        alwayslink = True,
        **kwargs
    )
