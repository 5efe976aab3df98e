#!/usr/bin/env python3
"""A Steadfast client that is not ours: Python grpcio stubs generated from proto/ alone.

Usage: client.py ADDR WORKFLOW_TYPE INPUT_JSON
Starts a run, waits for its result with AwaitResult, checks that an unknown run id gets
NOT_FOUND, and prints one JSON line: {"run_id": ..., "status": ..., "result": ...}.
Exit code 0 only if the run completed.
"""
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROTO_DIR = os.path.join(ROOT, "proto")


def generate_stubs(out_dir):
    from grpc_tools import protoc  # installed by .ci/run (pip install grpcio-tools)

    files = [f"steadfast/v1/{n}.proto" for n in ("common", "history", "service")]
    args = ["protoc", f"-I{PROTO_DIR}", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", *files]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    sys.path.insert(0, out_dir)


def main():
    addr, wf_type, input_json = sys.argv[1], sys.argv[2], sys.argv[3]
    json.loads(input_json)  # fail early on a bad argument
    with tempfile.TemporaryDirectory() as out:
        generate_stubs(out)
        import grpc
        from steadfast.v1 import common_pb2, service_pb2, service_pb2_grpc

        target = addr.replace("http://", "")
        with grpc.insecure_channel(target) as ch:
            client = service_pb2_grpc.ClientServiceStub(ch)
            start = client.StartWorkflow(service_pb2.StartWorkflowRequest(
                workflow_type=wf_type,
                input=common_pb2.Payload(encoding="json/plain", data=input_json.encode()),
            ), timeout=10)
            run_id = start.run_id
            while True:
                res = client.AwaitResult(service_pb2.AwaitResultRequest(run_id=run_id, timeout_ms=5000), timeout=30)
                if res.closed:
                    break
            run = res.run
            try:
                client.DescribeRun(service_pb2.DescribeRunRequest(run_id="01890000-0000-7000-8000-000000000000"), timeout=10)
                raise SystemExit("an unknown run id was not refused")
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.NOT_FOUND:
                    raise SystemExit(f"unknown run id: expected NOT_FOUND, got {e.code()}")
            status = common_pb2.RunStatus.Name(run.status)
            result = json.loads(run.result.data) if run.result.data else None
            print(json.dumps({"run_id": run_id, "status": status, "result": result}))
            return 0 if run.status == common_pb2.RUN_STATUS_COMPLETED else 1


if __name__ == "__main__":
    sys.exit(main())
