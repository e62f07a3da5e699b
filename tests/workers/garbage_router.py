"""A raw pyzmq child (no multifrost) that answers bounce(garbage, value) with each garbage message
of ``garbage`` (a list of frame lists, sent after the peer identity) first, then the right reply;
and huge(n) with a result of n bytes, whatever the parent's limits (no checks here).

``garbage_router.py SERVICE_ID``: a connect-mode service instead (binds a free port and
registers it in the JSON registry at $MULTIFROST_REGISTRY); it stops on SIGTERM."""
import os
import sys
import time

import msgpack
import zmq

APP = "comlink_ipc_v4"

ctx = zmq.Context()
sock = ctx.socket(zmq.ROUTER)
sock.setsockopt(zmq.LINGER, 0)
if len(sys.argv) > 1 and sys.argv[1] != "--worker":  # spawned by a Python parent: ["--worker"]
    from multifrost.registry import FileRegistry  # only to be found: nothing else of multifrost runs here

    port = sock.bind_to_random_port("tcp://127.0.0.1")
    FileRegistry(os.environ["MULTIFROST_REGISTRY"]).register(sys.argv[1], port)
else:
    sock.connect(f"tcp://127.0.0.1:{os.environ['COMLINK_ZMQ_PORT']}")
while True:
    frames = sock.recv_multipart()
    peer, message = frames[0], msgpack.unpackb(frames[-1], timestamp=3)
    kind = message.get("type")
    if kind == "shutdown":
        break
    if kind == "heartbeat":
        metadata = {**message.get("metadata", {}), "hb_response": True}
        echo = {"app": APP, "id": message["id"], "type": "heartbeat", "timestamp": time.time(), "metadata": metadata}
        sock.send_multipart([peer, b"", msgpack.packb(echo)])
    elif kind == "call" and message.get("function") == "huge":
        reply = {"app": APP, "id": message["id"], "type": "response", "timestamp": time.time(),
                 "result": b"\0" * message["args"][0]}
        sock.send_multipart([peer, b"", msgpack.packb(reply)])
    elif kind == "call":
        garbage, value = message["args"]
        for parts in garbage:
            sock.send_multipart([peer, *parts])
        reply = {"app": APP, "id": message["id"], "type": "response", "timestamp": time.time(), "result": value}
        sock.send_multipart([peer, b"", msgpack.packb(reply)])
sock.close()
ctx.term()
