"""Just enough of the protobuf wire format to write a SentencePiece ``ModelProto`` without the
protobuf package (see :mod:`.gguf_vocabulary`)."""
import struct


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int32/int64 values are written as 10-byte two's complement
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def proto_varint(field: int, value: int) -> bytes:
    return varint(field << 3) + varint(value)


def proto_float(field: int, value: float) -> bytes:
    return varint(field << 3 | 5) + struct.pack("<f", value)


def proto_message(field: int, payload: bytes) -> bytes:
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def proto_string(field: int, value: str) -> bytes:
    return proto_message(field, value.encode("utf-8"))
