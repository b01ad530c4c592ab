"""An HTTP/2 (h2c) upstream that sends an honest graceful GOAWAY every EVERY streams.

Usage: goaway_upstream.py PORT EVERY
On a connection's EVERY-th request it sends GOAWAY(NO_ERROR, last_stream_id = that
stream): streams at or below it are answered, streams above it are never processed
(RFC 9113 section 6.8), then the connection closes. Needs the `h2` package (pip).
Prints, on SIGTERM or exit, how many streams it answered and how many it never processed.
"""
import asyncio
import signal
import sys

import h2.config
import h2.connection
import h2.events

EVERY = int(sys.argv[2])
answered = 0
unprocessed = 0


async def serve(reader, writer):
    global answered, unprocessed
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    conn.initiate_connection()
    writer.write(conn.data_to_send())
    taken = 0
    last = None
    open_streams = set()
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    if last is not None and event.stream_id > last:
                        unprocessed += 1
                        continue
                    taken += 1
                    if taken == EVERY:
                        last = event.stream_id
                    if event.stream_ended:
                        answer(conn, event.stream_id)
                    else:
                        open_streams.add(event.stream_id)
                elif isinstance(event, h2.events.DataReceived):
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    if event.stream_id in open_streams:
                        open_streams.discard(event.stream_id)
                        answer(conn, event.stream_id)
            if last is not None and not open_streams:
                # Every stream taken is answered (h2 sends nothing after its GOAWAY).
                conn.close_connection(error_code=0, last_stream_id=last)
                writer.write(conn.data_to_send())
                await writer.drain()
                await drain_then_close(reader, writer)
                return
            writer.write(conn.data_to_send())
            await writer.drain()
    except Exception:
        return
    finally:
        writer.close()


async def drain_then_close(reader, writer):
    """Closes as a graceful server does: the client reads the GOAWAY before the connection
    goes. Closing with unread bytes would send RST, which can destroy the GOAWAY unread."""
    global unprocessed
    try:
        writer.write_eof()
        while await asyncio.wait_for(reader.read(65536), timeout=2):
            pass
    except (asyncio.TimeoutError, ConnectionError):
        pass


def answer(conn, stream_id):
    global answered
    body = b"ok\n"
    conn.send_headers(stream_id, [(":status", "200"), ("content-length", str(len(body)))])
    conn.send_data(stream_id, body, end_stream=True)
    answered += 1


async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        await stop.wait()
    print(f"answered {answered} never-processed {unprocessed}", flush=True)


asyncio.run(main())
