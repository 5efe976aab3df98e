"""gRPC stubs generated from the .proto files at import time (never committed, so they
cannot drift from proto/): the protos bundled at build time, or the repo's proto/ when the
package runs from a checkout. Generated once per proto content into a cache directory.
"""
import hashlib
import importlib
import os
import shutil
import sys
import tempfile

PROTO_FILES = ("common", "history", "schedule", "service")


def proto_dir():
    """Where the .proto files are: STEADFAST_PROTO_DIR, the package's copy, or the repo's."""
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = [
        os.environ.get("STEADFAST_PROTO_DIR"),
        os.path.join(here, "proto"),
        os.path.join(here, "..", "..", "proto"),
    ]
    for c in candidates:
        if c and os.path.isfile(os.path.join(c, "steadfast", "v1", "service.proto")):
            return os.path.abspath(c)
    raise ImportError(
        "steadfast_worker: no steadfast/v1/*.proto found; install the package with "
        "`pip install ./python` from the repo, or set STEADFAST_PROTO_DIR to the repo's proto/"
    )


def _generate(src, out):
    from grpc_tools import protoc

    files = [f"steadfast/v1/{n}.proto" for n in PROTO_FILES]
    args = ["protoc", f"-I{src}", f"--python_out={out}", f"--grpc_python_out={out}", *files]
    if protoc.main(args) != 0:
        raise ImportError(f"steadfast_worker: protoc failed on {src}")


def load():
    """Returns (common_pb2, service_pb2, service_pb2_grpc)."""
    src = proto_dir()
    digest = hashlib.sha256()
    for n in PROTO_FILES:
        with open(os.path.join(src, "steadfast", "v1", f"{n}.proto"), "rb") as f:
            digest.update(f.read())
    cache = os.environ.get("STEADFAST_STUB_CACHE") or os.path.join(
        tempfile.gettempdir(), f"steadfast_worker_stubs_{os.getuid() if hasattr(os, 'getuid') else 0}"
    )
    out = os.path.join(cache, digest.hexdigest()[:16])
    if not os.path.isdir(out):
        os.makedirs(cache, exist_ok=True)
        # Generated aside and renamed: two workers starting at once never see half a tree.
        tmp = tempfile.mkdtemp(dir=cache)
        _generate(src, tmp)
        try:
            os.rename(tmp, out)
        except OSError:
            # Another process generated the same stubs first.
            shutil.rmtree(tmp, ignore_errors=True)
            if not os.path.isdir(out):
                raise
    if out not in sys.path:
        sys.path.insert(0, out)
    common = importlib.import_module("steadfast.v1.common_pb2")
    service = importlib.import_module("steadfast.v1.service_pb2")
    grpc_mod = importlib.import_module("steadfast.v1.service_pb2_grpc")
    return common, service, grpc_mod
