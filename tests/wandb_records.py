"""Read an offline W&B run's `.wandb` file back: a LevelDB-style log of protobuf `Record`s (wandb's own format)."""

import struct
from collections.abc import Iterator
from pathlib import Path

BLOCK, HEADER = 32768, 7  # 32 KiB blocks; each chunk: crc32 (4), length (2), type (1: full, 2: first, 3: mid, 4: last)


def _chunks(data: bytes) -> Iterator[bytes]:
    assert data[:4] == b":W&B", "not a .wandb file"
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if left < HEADER or (kind == 0 and length == 0):  # block padding
            pos += left
            continue
        chunk, pos = data[pos + HEADER : pos + HEADER + length], pos + HEADER + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield pending + chunk


def records(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2 as pb

    out = []
    for raw in _chunks(path.read_bytes()):
        record = pb.Record()
        record.ParseFromString(raw)
        out.append(record)
    return out


def summarize(path: Path) -> dict:
    """group, name, exit code, history keys and summary keys of the run in `path`."""
    info: dict = {"history": set(), "summary": set(), "exit_code": None}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            info["group"], info["name"], info["id"] = record.run.run_group, record.run.display_name, record.run.run_id
        elif kind == "history":
            info["history"] |= {item.key or "/".join(item.nested_key) for item in record.history.item}
        elif kind == "summary":
            info["summary"] |= {item.key or "/".join(item.nested_key) for item in record.summary.update}
        elif kind == "exit":
            info["exit_code"] = record.exit.exit_code
    return info
