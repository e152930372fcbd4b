#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_wire into fuzz/corpus/wire/.

Hand-encoded MessagePack (no msgpack module needed): one valid value of
every kind, plus the malformed frames the validator exists to stop. Run it
again after changing it and commit the files it writes.
"""
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "wire")


def s(text):
    b = text.encode()
    if len(b) < 32:
        return bytes([0xA0 | len(b)]) + b
    if len(b) < 256:
        return b"\xd9" + bytes([len(b)]) + b
    return b"\xda" + struct.pack(">H", len(b)) + b


def arr(*items):
    return bytes([0x90 | len(items)]) + b"".join(items)


def mp(*pairs):
    return bytes([0x80 | len(pairs)]) + b"".join(k + v for k, v in pairs)


SEEDS = {
    # valid
    "ok-nil": b"\xc0",
    "ok-ints": arr(b"\x05", b"\xe0", b"\xcc\xff", b"\xcd\xff\xff", b"\xce\xff\xff\xff\xff",
                   b"\xcf" + b"\xff" * 8, b"\xd0\x80", b"\xd1\x80\x00",
                   b"\xd2\x80\x00\x00\x00", b"\xd3\x80" + b"\x00" * 7),
    "ok-floats": arr(b"\xca" + struct.pack(">f", 1.5), b"\xcb" + struct.pack(">d", -2.25),
                     b"\xcb\x7f\xf8" + b"\x00" * 6),
    "ok-strings": arr(s(""), s("hello"), s("x" * 40), s("y" * 300)),
    "ok-bin-ext": arr(b"\xc4\x02\x00\x01", b"\xc5\x00\x01\xff", b"\xd4\x01\x02",
                      b"\xd5\x02" + b"ab", b"\xd6\xff" + b"\x00" * 4, b"\xd7\xff" + b"\x00" * 8,
                      b"\xd8\x05" + b"z" * 16, b"\xc7\x03\x07abc", b"\xc8\x00\x00\x01"),
    "ok-message": mp((s("v"), b"\x01"), (s("op"), s("submit")),
                     (s("args"), arr(b"\x01", b"\xfe", b"\xc3", b"\xc0")),
                     (s("meta"), mp((s("id"), b"\xcd\x01\x00"), (s("tags"), arr())))),
    "ok-empties": arr(arr(), mp(), s(""), b"\xc4\x00"),
    "ok-empty-key": mp((s(""), b"\x02")),
    "ok-deep16": b"\x91" * 15 + b"\x90",
    "ok-array16": b"\xdc\x00\x20" + b"\xc0" * 32,
    "ok-map32": b"\xdf\x00\x00\x00\x02" + b"\x01\x02\x03\x04",
    # malformed or over a limit
    "bad-c1": b"\x92\x01\xc1",
    "bad-trailing": b"\x01\x02",
    "bad-array32-huge": b"\xdd\x0f\xff\xff\xff",
    "bad-map32-huge": b"\xdf\xff\xff\xff\xff",
    "bad-depth-bomb": b"\xdc\x00\x01" * 32 + b"\xc0",
    "bad-str-truncated": b"\xd9\x05ab",
    "bad-ext-truncated": b"\xc7\x02\x01a",
    "bad-map-odd": b"\x82\x01\x02\x03",
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    print(f"wrote {len(SEEDS)} seeds to {OUT}")


if __name__ == "__main__":
    main()
