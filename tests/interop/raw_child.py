"""A minimal raw Multifrost v4 child (pyzmq + msgpack only) that the Node parent role is tested against.

Spawn mode only: its ROUTER connects to COMLINK_ZMQ_PORT; it answers calls, echoes heartbeats,
exits on SHUTDOWN or when its parent process is gone, and ignores a --worker argument.
"""
import os
import sys
import time
import uuid

import msgpack
import zmq


def envelope(msg_type, msg_id=None, **fields):
    return {"app": "comlink_ipc_v4", "id": msg_id or str(uuid.uuid4()), "type": msg_type,
            "timestamp": time.time(), **fields}


def answer_call(msg, send):
    def say(text):
        send(envelope("stdout", output=text))
        send(envelope("stderr", output=text.upper()))

    methods = {"add": lambda a, b: a + b, "echo": lambda value: value, "say": say,
               "fail": lambda text: 1 / 0, "client_name": lambda: msg.get("clientName"),
               "spawn_info": lambda: {"argv": sys.argv[1:], "worker_mode": os.environ.get("COMLINK_WORKER_MODE")}}
    name = msg["function"]
    if name not in methods:
        return send(envelope("error", msg["id"], error=f"Function '{name}' not found"))
    try:
        send(envelope("response", msg["id"], result=methods[name](*msg["args"])))
    except Exception as exc:  # the error text, then a traceback line, as a Python child sends
        send(envelope("error", msg["id"], error=f"{type(exc).__name__}: {exc}\nTraceback (raw child)"))


def main():
    port = os.environ.get("COMLINK_ZMQ_PORT", "")
    if not port.isdigit() or not 1024 <= int(port) <= 65535:
        sys.exit(f"FATAL: bad COMLINK_ZMQ_PORT {port!r}")
    namespace = os.environ.get("MULTIFROST_NAMESPACE", "default")
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    sock.linger = 1000
    sock.connect(f"tcp://127.0.0.1:{port}")
    parent = os.getppid()
    while os.getppid() == parent:
        if not sock.poll(250):
            continue
        ident, *_, payload = sock.recv_multipart()
        msg = msgpack.unpackb(payload, raw=False, timestamp=3, strict_map_key=False)
        send = lambda m: sock.send_multipart([ident, b"", msgpack.packb(m, use_bin_type=True, datetime=True)])  # noqa: E731
        if msg.get("type") == "heartbeat":
            send(envelope("heartbeat", msg["id"], metadata={**msg["metadata"], "hb_response": True}))
        elif msg.get("type") == "shutdown":
            break
        elif msg.get("type") == "call" and msg.get("namespace", "default") == namespace:
            answer_call(msg, send)
    sock.close()


if __name__ == "__main__":
    main()
