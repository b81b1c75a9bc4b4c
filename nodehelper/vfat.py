"""A small FAT12 filesystem image built in memory (the cloud-init seed's `cidata`
drive): a volume label and a few files in the root directory, each with its long
(VFAT) name, so `meta-data`, `user-data` and `network-config` read back by those
names. What `mkfs.vfat -C` + `mcopy` would make, without needing dosfstools or
mtools on the node.

Standard library only; no I/O. Refuses (ValueError) names and sizes it cannot
hold rather than writing a filesystem a guest would misread.
"""

from __future__ import annotations

import struct

FAT_SECTOR = 512
FAT_SECTORS = 2048  # 1 MiB: every seed fits (FAT12 up to 4084 clusters)
FAT_ROOT_ENTRIES = 224
FAT_RESERVED = 1
FAT_COPIES = 2
FAT_TABLE_SECTORS = 6  # 2021 clusters x 1.5 bytes
FAT_LFN_CHARS = 13
_FAT_DATE = (2024 - 1980) << 9 | 1 << 5 | 1  # 2024-01-01: reproducible images
_FAT_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")


def fat_image(label: str, files: list[tuple[str, bytes]]) -> bytes:
    """A FAT12 image labelled `label` (at most 11 characters) holding `files`
    (name: lowercase letters, digits, '-', '_', '.'; at most 64 characters)."""
    if not 0 < len(label) <= 11 or not label.isascii() or not label.isprintable():
        raise ValueError(f"FAT label {label!r} must be 1-11 printable ASCII characters")
    root_sectors = FAT_ROOT_ENTRIES * 32 // FAT_SECTOR
    first_data = FAT_RESERVED + FAT_COPIES * FAT_TABLE_SECTORS + root_sectors
    clusters = FAT_SECTORS - first_data
    image = bytearray(FAT_SECTORS * FAT_SECTOR)
    image[:FAT_SECTOR] = _boot_sector(label)
    entries = [_fat_label_entry(label)]
    fat = [0xFF8, 0xFFF]  # media descriptor, end-of-chain marker
    for index, (name, data) in enumerate(files, 1):
        first = len(fat) if data else 0
        count = -(-len(data) // FAT_SECTOR)
        if len(fat) + count > clusters + 2:
            raise ValueError("the files do not fit in the seed image")
        for c in range(count):
            fat.append(len(fat) + 1 if c < count - 1 else 0xFFF)
        offset = (first_data + first - 2) * FAT_SECTOR
        image[offset : offset + len(data)] = data
        entries.extend(_fat_file_entries(name, index, first, len(data)))
    if len(entries) > FAT_ROOT_ENTRIES:
        raise ValueError("too many files for the seed image's root directory")
    table = _fat12(fat, FAT_TABLE_SECTORS * FAT_SECTOR)
    for copy in range(FAT_COPIES):
        start = (FAT_RESERVED + copy * FAT_TABLE_SECTORS) * FAT_SECTOR
        image[start : start + len(table)] = table
    root = b"".join(entries)
    start = (FAT_RESERVED + FAT_COPIES * FAT_TABLE_SECTORS) * FAT_SECTOR
    image[start : start + len(root)] = root
    return bytes(image)


def _boot_sector(label: str) -> bytes:
    bpb = struct.pack(
        "<3s8sHBHBHHBHHHII",
        b"\xeb\x3c\x90",
        b"CORRAL  ",
        FAT_SECTOR,
        1,  # sectors per cluster
        FAT_RESERVED,
        FAT_COPIES,
        FAT_ROOT_ENTRIES,
        FAT_SECTORS,
        0xF8,  # media: fixed disk
        FAT_TABLE_SECTORS,
        32,  # sectors per track
        64,  # heads
        0,  # hidden sectors
        0,  # large sector count (the 16-bit one is used)
    )
    ebpb = struct.pack(
        "<BBBI11s8s",
        0x80,
        0,
        0x29,  # extended boot signature: the volume id and label follow
        0x434F5252,  # volume id
        label.encode().ljust(11),
        b"FAT12   ",
    )
    sector = bytearray(FAT_SECTOR)
    sector[: len(bpb) + len(ebpb)] = bpb + ebpb
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def _fat_label_entry(label: str) -> bytes:
    return struct.pack(
        "<11sBBBHHHHHHHI",
        label.encode().ljust(11),
        0x08,
        0,
        0,
        0,
        _FAT_DATE,
        _FAT_DATE,
        0,
        0,
        _FAT_DATE,
        0,
        0,
    )


def _fat_short(index: int) -> bytes:
    """The 8.3 alias of file `index`: never the long name, which always needs its
    LFN entries (lowercase), so aliases need only be unique."""
    return f"CIDATA{index:02d}".encode()[:8].ljust(8) + b"   "


def _fat_file_entries(name: str, index: int, first: int, size: int) -> list[bytes]:
    if not 0 < len(name) <= 64 or set(name) - _FAT_NAME_CHARS or name.startswith("."):
        raise ValueError(f"file name {name!r} is not one the seed image holds")
    short = _fat_short(index)
    checksum = 0
    for byte in short:
        checksum = (((checksum & 1) << 7) | (checksum >> 1)) + byte & 0xFF
    units = [ord(c) for c in name]
    if len(units) % FAT_LFN_CHARS:  # a name that fills its last entry has no terminator
        units.append(0)
        units += [0xFFFF] * (-len(units) % FAT_LFN_CHARS)
    parts = [units[i : i + FAT_LFN_CHARS] for i in range(0, len(units), FAT_LFN_CHARS)]
    entries = []
    for seq in range(len(parts), 0, -1):
        u = parts[seq - 1]
        order = seq | (0x40 if seq == len(parts) else 0)
        entries.append(
            struct.pack("<B5HBBB6HH2H", order, *u[:5], 0x0F, 0, checksum, *u[5:11], 0, *u[11:13])
        )
    entries.append(
        struct.pack(
            "<11sBBBHHHHHHHI",
            short,
            0x20,
            0,
            0,
            0,
            _FAT_DATE,
            _FAT_DATE,
            0,
            0,
            _FAT_DATE,
            first,
            size,
        )
    )
    return entries


def _fat12(fat: list[int], length: int) -> bytes:
    out = bytearray(length)
    for n, value in enumerate(fat):
        at = n * 3 // 2
        if n % 2 == 0:
            out[at] = value & 0xFF
            out[at + 1] = (out[at + 1] & 0xF0) | (value >> 8)
        else:
            out[at] = (out[at] & 0x0F) | ((value & 0x0F) << 4)
            out[at + 1] = value >> 4
    return bytes(out)
