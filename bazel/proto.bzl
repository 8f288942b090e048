"""cc_grpc_library: C++ protobuf + gRPC code from one .proto, via Debian's protoc and plugin."""

def cc_grpc_library(name, src, deps = [], **kwargs):
    """Generates <src>.pb.{h,cc} and <src>.grpc.pb.{h,cc} and compiles them.

    Args:
      name: target name.
      src: the .proto file (in this package).
      deps: extra cc deps.
      **kwargs: passed to cc_library.
    """
    stem = src.rsplit(".", 1)[0]
    pkg = native.package_name()
    outs = [stem + ext for ext in [".pb.h", ".pb.cc", ".grpc.pb.h", ".grpc.pb.cc"]]
    native.genrule(
        name = name + "_codegen",
        srcs = [src],
        outs = outs,
        cmd = " ".join([
            "protoc",
            "--proto_path=.",
            "--cpp_out=$(GENDIR)",
            "--grpc_out=$(GENDIR)",
            "--plugin=protoc-gen-grpc=/usr/bin/grpc_cpp_plugin",
            "%s/%s" % (pkg, src) if pkg else src,
        ]),
        message = "protoc %s" % src,
    )
    native.cc_library(
        name = name,
        srcs = [o for o in outs if o.endswith(".cc")],
        hdrs = [o for o in outs if o.endswith(".h")],
        deps = deps + ["//third_party:grpc", "//third_party:protobuf"],
        **kwargs
    )
