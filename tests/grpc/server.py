"""A gRPC server for switchyard's tests, on grpcio's generic handlers with raw bytes
(no protoc). Prints "PORT <n>" once it listens on 127.0.0.1.

Methods of service test.Echo:
  Unary         answers b"<name>:" + request; may fail a share of calls (--fail-code)
  ServerStream  request is a count n: answers n messages b"<name>:<i>"
  ClientStream  answers b"<name>:" + all requests joined by b","
  Bidi          answers each request with b"<name>:" + request
  Sleep         request is milliseconds: sleeps that long, then answers
Every call sends back, in its initial and trailing metadata, "x-served-by" and the
caller's "x-echo" and "x-echo-bin" metadata.
"""

import argparse
import sys
import threading
import time
from concurrent import futures

import grpc


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--fail-code", default=None, help="a grpc.StatusCode name")
    parser.add_argument("--fail-ratio", type=float, default=0.0)
    parser.add_argument("--cert", help="PEM certificate: serve TLS (ALPN h2)")
    parser.add_argument("--key", help="PEM private key of --cert")
    args = parser.parse_args()

    fail_code = getattr(grpc.StatusCode, args.fail_code) if args.fail_code else None
    lock = threading.Lock()
    calls = [0]

    def should_fail():
        # Exactly the ratio over any run of calls, not a random share of it.
        with lock:
            calls[0] += 1
            n = calls[0]
        return int(n * args.fail_ratio) != int((n - 1) * args.fail_ratio)

    def echo_metadata(context):
        pairs = [("x-served-by", args.name)]
        for key, value in context.invocation_metadata():
            if key in ("x-echo", "x-echo-bin"):
                pairs.append((key, value))
        context.send_initial_metadata(pairs)
        context.set_trailing_metadata(pairs)

    prefix = args.name.encode() + b":"

    def unary(request, context):
        echo_metadata(context)
        if fail_code is not None and should_fail():
            context.abort(fail_code, "injected by the test server")
        return prefix + request

    def server_stream(request, context):
        echo_metadata(context)
        for i in range(int(request or b"0")):
            yield prefix + str(i).encode()

    def client_stream(requests, context):
        echo_metadata(context)
        return prefix + b",".join(requests)

    def bidi(requests, context):
        echo_metadata(context)
        for request in requests:
            yield prefix + request

    def sleep(request, context):
        echo_metadata(context)
        time.sleep(int(request) / 1000)
        return prefix + b"slept"

    handler = grpc.method_handlers_generic_handler(
        "test.Echo",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
            "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
            "Sleep": grpc.unary_unary_rpc_method_handler(sleep),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    server.add_generic_rpc_handlers((handler,))
    if args.cert:
        with open(args.key, "rb") as key, open(args.cert, "rb") as cert:
            credentials = grpc.ssl_server_credentials([(key.read(), cert.read())])
        port = server.add_secure_port("127.0.0.1:0", credentials)
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"PORT {port}", flush=True)
    # Ends when the test kills it, or when its stdin closes (the test died).
    sys.stdin.read()
    server.stop(0)


if __name__ == "__main__":
    main()
