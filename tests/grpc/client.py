"""A gRPC client for switchyard's tests (grpcio, raw bytes). Prints one JSON object.

  client.py TARGET calls            all four call kinds, with metadata
  client.py TARGET load N           N unary calls: status codes by serving version
  client.py TARGET deadline MS T    Sleep(MS) with a deadline of T seconds
"""

import json
import sys

import grpc

ECHO = [("x-echo", "hello"), ("x-echo-bin", b"\x00\x01\xfe")]


def metadata(pairs):
    out = {}
    for key, value in pairs or ():
        out[key] = value.hex() if isinstance(value, bytes) else value
    return out


def outcome(call):
    return {
        "code": call.code().name,
        "details": call.details(),
        "initial": metadata(call.initial_metadata()),
        "trailing": metadata(call.trailing_metadata()),
    }


def unary(channel, method, request, timeout=None):
    stub = channel.unary_unary(method)
    try:
        response, call = stub.with_call(request, metadata=ECHO, timeout=timeout)
        result = outcome(call)
        result["response"] = response.decode()
    except grpc.RpcError as err:
        result = outcome(err)
    return result


def calls(channel):
    out = {"unary": unary(channel, "/test.Echo/Unary", b"ping")}

    stream = channel.unary_stream("/test.Echo/ServerStream")(b"3", metadata=ECHO)
    responses = [r.decode() for r in stream]
    out["server_stream"] = dict(outcome(stream), responses=responses)

    stub = channel.stream_unary("/test.Echo/ClientStream")
    response, call = stub.with_call(iter([b"a", b"b", b"c"]), metadata=ECHO)
    out["client_stream"] = dict(outcome(call), response=response.decode())

    # Bidirectional, interleaved: each answer is read before the next request is sent,
    # which only works when neither direction is buffered whole.
    import queue

    requests = queue.Queue()
    stream = channel.stream_stream("/test.Echo/Bidi")(
        iter(requests.get, None), metadata=ECHO
    )
    answers = []
    for word in ["x", "y", "z"]:
        requests.put(word.encode())
        answers.append(next(stream).decode())
    requests.put(None)
    answers.extend(r.decode() for r in stream)
    out["bidi"] = dict(outcome(stream), responses=answers)
    return out


def load(channel, n):
    codes = {}
    stub = channel.unary_unary("/test.Echo/Unary")
    for _ in range(n):
        try:
            _, call = stub.with_call(b"x", timeout=10)
        except grpc.RpcError as err:
            call = err
        version = dict(call.initial_metadata() or ()).get("switchyard-version", "?")
        key = f"{version} {call.code().name}"
        codes[key] = codes.get(key, 0) + 1
    return {"codes": codes}


def main():
    target, command = sys.argv[1], sys.argv[2]
    with grpc.insecure_channel(target) as channel:
        if command == "calls":
            out = calls(channel)
        elif command == "load":
            out = load(channel, int(sys.argv[3]))
        elif command == "deadline":
            out = unary(
                channel, "/test.Echo/Sleep", sys.argv[3].encode(), float(sys.argv[4])
            )
        elif command == "unary":
            out = unary(channel, "/test.Echo/Unary", b"ping")
        else:
            sys.exit(f"unknown command {command}")
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
