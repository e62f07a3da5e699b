"""The baseline child: a blocking pyzmq ROUTER loop answering every CALL (add, or echo) with msgpack, nothing else.

It connects to MULTIFROST_ENDPOINT, or to every port of COMLINK_ZMQ_PORT (comma-separated: one
DEALER per calling thread)."""
import os
import time

import msgpack
import zmq

ctx = zmq.Context.instance()
sock = ctx.socket(zmq.ROUTER)
if os.environ.get("MULTIFROST_ENDPOINT"):
    sock.connect(os.environ["MULTIFROST_ENDPOINT"])
else:
    for port in os.environ["COMLINK_ZMQ_PORT"].split(","):
        sock.connect(f"tcp://127.0.0.1:{port}")
while True:
    peer, empty, payload = sock.recv_multipart()
    msg = msgpack.unpackb(payload)
    if msg.get("type") == "shutdown":
        break
    if msg.get("type") == "heartbeat":
        reply = {"app": msg["app"], "id": msg["id"], "type": "heartbeat", "timestamp": time.time(),
                 "metadata": msg.get("metadata")}
    else:
        args = msg["args"]
        result = args[0] if msg.get("function") == "echo" else args[0] + args[1]
        reply = {"app": msg["app"], "id": msg["id"], "type": "response", "timestamp": time.time(), "result": result}
    sock.send_multipart([peer, b"", msgpack.packb(reply)])
sock.close(0)
