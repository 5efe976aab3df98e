"""python -m steadfast_worker --module tools.py [--module pkg.mod] --task-queue Q ...

Imports the modules (their @activity functions register themselves) and runs a worker.
"""
import argparse
import importlib
import importlib.util
import logging
import os
import sys

from .worker import Worker, WorkerError


def _import(spec):
    if spec.endswith(".py") or os.sep in spec:
        name = os.path.splitext(os.path.basename(spec))[0]
        s = importlib.util.spec_from_file_location(name, spec)
        if s is None or s.loader is None:
            raise SystemExit(f"cannot import {spec!r}")
        mod = importlib.util.module_from_spec(s)
        sys.modules[name] = mod
        s.loader.exec_module(mod)
        return mod
    return importlib.import_module(spec)


def main(argv=None):
    env = os.environ.get
    p = argparse.ArgumentParser(prog="steadfast-worker", description=__doc__)
    p.add_argument("--addr", default=env("STEADFAST_ADDR", "http://127.0.0.1:7233"))
    p.add_argument("--namespace", default=env("STEADFAST_NAMESPACE", "default"))
    p.add_argument("--task-queue", default="default")
    p.add_argument("--module", action="append", required=True, help="a module name or .py file with @activity functions")
    p.add_argument("--token", default=env("STEADFAST_TOKEN"), help="bearer token (default: STEADFAST_TOKEN)")
    p.add_argument("--tls-ca", default=env("STEADFAST_TLS_CA"))
    p.add_argument("--tls-cert", default=env("STEADFAST_TLS_CERT"))
    p.add_argument("--tls-key", default=env("STEADFAST_TLS_KEY"))
    p.add_argument("--tls-domain", default=env("STEADFAST_TLS_DOMAIN"))
    p.add_argument("--worker-id")
    p.add_argument("--max-concurrent", type=int, default=8)
    p.add_argument("--log-level", default=env("STEADFAST_LOG", "info"))
    a = p.parse_args(argv)
    logging.basicConfig(level=a.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for m in a.module:
        _import(m)
    try:
        Worker(
            addr=a.addr, task_queue=a.task_queue, namespace=a.namespace, token=a.token,
            tls_ca=a.tls_ca, tls_cert=a.tls_cert, tls_key=a.tls_key, tls_domain=a.tls_domain,
            worker_id=a.worker_id, max_concurrent=a.max_concurrent,
        ).run()
    except WorkerError as e:
        print(f"steadfast-worker: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
