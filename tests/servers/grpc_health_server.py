"""A gRPC server podprobe did not write: grpcio with only the standard
grpc.health.v1.Health service (no podprobe.v1.Identity).

Usage: grpc_health_server.py ADDR   (e.g. 0.0.0.0:50051)
"""

import signal
import sys
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


def main() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    if server.add_insecure_port(sys.argv[1]) == 0:
        sys.exit(f"cannot listen on {sys.argv[1]}")
    server.start()
    signal.signal(signal.SIGTERM, lambda *_: server.stop(0))
    server.wait_for_termination()


if __name__ == "__main__":
    main()
