"""A gRPC server podprobe did not write: Python's grpcio, with only the
reflection service (--reflection, from grpcio-reflection) and/or the
standard grpc.health.v1.Health (--health).

Every call it answered is one JSON line on stdout, its method UNIMPLEMENTED
ones included:
    {"peer": "10.244.0.2:41234", "method": "/grpc.health.v1.Health/Check", "code": 12}
so tests can count calls per connection and compare with podprobe's evidence.

Usage: grpc_py_server.py --listen ADDR:PORT [--health] [--reflection]
                         [--max-connection-age-ms N]
"""

import argparse
import json
import os
import signal
import sys
from concurrent import futures

import grpc


def log(peer: str, method: str, code: grpc.StatusCode) -> None:
    # grpcio names peers "ipv4:10.244.0.2:41234"; keep ADDR:PORT.
    peer = peer.split(":", 1)[1] if peer.startswith(("ipv4:", "ipv6:")) else peer
    line = json.dumps({"peer": peer, "method": method, "code": code.value[0]}) + "\n"
    # One write per line, unbuffered, so a SIGKILL loses no line.
    os.write(1, line.encode())


class Logged(grpc.ServerInterceptor):
    """Logs every unary call; answers unknown methods UNIMPLEMENTED itself
    (as grpcio would) so those calls are logged too."""

    def intercept_service(self, continuation, details):
        handler = continuation(details)
        method = details.method
        if handler is None:
            def unimplemented(_request, context):
                log(context.peer(), method, grpc.StatusCode.UNIMPLEMENTED)
                context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")

            return grpc.unary_unary_rpc_method_handler(unimplemented)
        if handler.unary_unary is None:
            return handler

        def served(request, context):
            reply = handler.unary_unary(request, context)
            log(context.peer(), method, context.code() or grpc.StatusCode.OK)
            return reply

        return grpc.unary_unary_rpc_method_handler(
            served,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", required=True)
    parser.add_argument("--health", action="store_true")
    parser.add_argument("--reflection", action="store_true")
    parser.add_argument("--max-connection-age-ms", type=int)
    args = parser.parse_args()

    options = []
    if args.max_connection_age_ms:
        options += [
            ("grpc.max_connection_age_ms", args.max_connection_age_ms),
            ("grpc.max_connection_age_grace_ms", 10000),
        ]
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8),
        interceptors=[Logged()],
        options=options,
    )
    names = []
    if args.health:
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc

        servicer = health.HealthServicer()
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        names.append(health_pb2.DESCRIPTOR.services_by_name["Health"].full_name)
    if args.reflection:
        from grpc_reflection.v1alpha import reflection

        names.append(reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server)
    if server.add_insecure_port(args.listen) == 0:
        sys.exit(f"cannot listen on {args.listen}")
    server.start()
    print(f"grpcio server listening on {args.listen}", file=sys.stderr, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: server.stop(0))
    server.wait_for_termination()


if __name__ == "__main__":
    main()
