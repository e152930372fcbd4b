"""The framing of libdist's protocol (docs/PROTOCOL.md, sections 1, 2 and
11), shared by dist_worker.py and dist_client.py.

A message is three frames: the signature b"DST\\x01", an ASCII command name
and one MessagePack map. Peers connect one DEALER socket to the master's
ROUTER and let ZeroMQ pick the routing id.
"""
import os
import socket

import msgpack
import zmq

SIGNATURE = b"DST\x01"
DEFAULT_MASTER = "tcp://127.0.0.1:5555"
MAX_MESSAGE = 64 << 20  # until WELCOME announces the master's max_message
MAX_BATCH = 10000       # idem for max_batch
VERSION = "libdist-python-example 1"


def default_master():
    """--master default: $DIST_MASTER, else tcp://127.0.0.1:5555."""
    return os.environ.get("DIST_MASTER") or DEFAULT_MASTER


def hostname():
    return socket.gethostname()[:128] or "localhost"


def pack(value):
    """One MessagePack value; bytes become bin, str becomes str."""
    return msgpack.packb(value, use_bin_type=True)


def unpack(data):
    """The inverse of pack. Raises ValueError (or a subclass) on bad input,
    trailing bytes included."""
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def connect(ctx, endpoint, max_message=MAX_MESSAGE):
    """A DEALER connected to the master with the options of section 1.

    CURVE (section 9) would be configured here, before connect(): set
    sock.curve_secretkey, sock.curve_publickey and sock.curve_serverkey
    from the Z85 key files.
    """
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.MAXMSGSIZE, max_message)
    sock.setsockopt(zmq.LINGER, 500)
    sock.setsockopt(zmq.HANDSHAKE_IVL, 3000)
    sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
    sock.setsockopt(zmq.HEARTBEAT_TTL, 3000)
    sock.setsockopt(zmq.SNDHWM, 100000)
    sock.setsockopt(zmq.RCVHWM, 100000)
    sock.setsockopt(zmq.RECONNECT_IVL, 100)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
    sock.connect(endpoint)
    return sock


def send(sock, command, body=None):
    sock.send_multipart([SIGNATURE, command.encode("ascii"), pack(body or {})])


def recv(sock):
    """Reads one message (the caller knows one is waiting). Returns
    (command, body), or None for a message that fails the checks of
    section 2: it is read to its end and dropped."""
    frames = [sock.recv()]
    while sock.getsockopt(zmq.RCVMORE):
        frame = sock.recv()
        if len(frames) < 4:  # keep no more than we need to see it is too long
            frames.append(frame)
    if len(frames) != 3 or frames[0] != SIGNATURE or not 1 <= len(frames[1]) <= 16:
        return None
    try:
        command = frames[1].decode("ascii")
        body = unpack(frames[2])
    except Exception:  # bad UTF-8, bad MessagePack, unhashable map keys...
        return None
    if not isinstance(body, dict):
        return None
    return command, body
