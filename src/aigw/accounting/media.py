"""Tokens of a prompt's non-text parts: images, audio and files (PDFs), as canonical content parts.

Anthropic ``image`` blocks arrive here as ``image_url`` parts with a ``data:`` URL, and base64
``document`` blocks as ``file`` parts (``schema.anthropic_blocks``), so both wire formats count alike.

Two figures per part, for the two uses in ``tokens``:

- ``upper`` is the reservation's bound (budgets, ``tpm``): it must err high and stay cheap, so it
  reads no image or audio bytes, only the length of the base64 text.
- ``estimate`` is the local count that bills a call whose upstream reported no usage: a best guess.
  It reads an image's size from its header (the first bytes of a ``data:`` URL; no image library,
  no full decode) and prices it with OpenAI's tile formula.

The figures and their sources are in ``docs/tenancy.md`` ("Tokens and money").
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from typing import Any

# Images. OpenAI tile models: "low" is 85; "high"/"auto" is 85 + 170 a 512 px tile after fitting
# 2048x2048 and scaling the shortest side to 768, at most 8 tiles (768x2048): 1,445. Patch models:
# up to 1,536 patches x a model multiplier (2.46 on gpt-4.1-nano: 3,779). Claude: w*h/750 after its
# resize, ~1,600 on older models and up to 4,784 on Opus 4.7. Gemini: 258 a 768 px tile.
IMAGE_LOW = 85
IMAGE_UPPER = 4_800  # one image, any of the above but "original" detail (gpt-4o-mini's tiles: ``TILE_COSTS``)
IMAGE_TYPICAL = 765  # no size known: a 1024x1024 image, high detail (OpenAI's own worked example)
_TILE_BASE, _TILE, _TILE_PX, _FIT_PX, _SHORT_PX = 85, 170, 512, 2048, 768
_TYPICAL_TILES, _MAX_TILES = 4, 8
# Upstream models whose tiles cost other figures: (base, a tile), by model family (the id, or the id and a
# suffix such as a date: ``gpt-4o-mini-2024-07-18``). gpt-4o-mini bills an image what gpt-4o does in dollars,
# so ~33x its tokens: 2,833 low, up to 2,833 + 8 x 5,667 = 48,169 high (OpenAI's "Calculating costs" table).
TILE_COSTS = {"gpt-4o-mini": (2_833, 5_667)}

# Audio: 32 tokens a second (Gemini's documented rate, the highest we found; OpenAI's is ~10).
AUDIO_TOKENS_PER_S = 32
_AUDIO_MIN_BYTES_PER_S = {"wav": 4_000}  # 8 kHz mono at 4 bits (ADPCM); anything else as MP3 at 8 kbps
_AUDIO_MIN_DEFAULT = 1_000
_AUDIO_TYPICAL_BYTES_PER_S = {"wav": 32_000}  # 16 kHz 16-bit mono, unless the header says otherwise
_AUDIO_TYPICAL_DEFAULT = 16_000  # MP3 at 128 kbps

# Files (PDFs): Anthropic sends each page as its text plus an image of it, "a 3-page PDF uses approximately
# 7,000 tokens"; a dense page's text (~3,000) and its image (~1,600) make the page bound. The bound assumes
# a page per started 8 KB of the file, the estimate ~2,300 a page per 50 KB.
FILE_PAGE_UPPER = 4_800
FILE_BYTES_PER_PAGE_UPPER = 8 * 1024
FILE_PAGE_TYPICAL = 2_300
FILE_BYTES_PER_PAGE_TYPICAL = 50 * 1024

_HEADER_B64 = 64  # base64 characters for PNG, GIF and WebP headers (48 bytes)
_JPEG_B64 = 256 * 1024  # JPEG's size marker follows EXIF and friends: look this far, no further
_JPEG_MARKERS = 256  # and past this many markers (a real file has a dozen or two before its frame)


def _b64_of(url: Any) -> str | None:
    """The base64 payload of a ``data:...;base64,`` URL (or a bare base64 string), else None."""
    if not isinstance(url, str):
        return None
    if url.startswith("data:"):
        head, sep, data = url.partition(",")
        return data if sep and head.endswith(";base64") else None
    return None


def _decoded_len(b64: str) -> int:
    return len(b64) * 3 // 4 - b64[-2:].count("=")


def _decode_prefix(b64: str, chars: int) -> bytes:
    chunk = b64[:chars]
    chunk = chunk[: len(chunk) - len(chunk) % 4]
    try:
        return base64.b64decode(chunk)
    except (binascii.Error, ValueError):
        return b""


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """The start-of-frame's size, within ``_JPEG_MARKERS`` markers (a crafted prefix of tiny segments or
    fill bytes would otherwise cost a Python step per byte: ~15 ms an image)."""
    i = 2
    for _ in range(_JPEG_MARKERS):
        if i + 9 > len(data) or data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill bytes: skip the run at C speed, to its last 0xFF
            i = len(data) - len(data[i + 1:].lstrip(b"\xff")) - 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start-of-frame
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
    return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG, GIF, WebP or JPEG header; None for anything else or a short read."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24 and data[12:16] == b"IHDR":
        w, h = struct.unpack(">II", data[16:24])
        return w, h
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        w, h = struct.unpack("<HH", data[6:10])
        return w, h
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        kind = data[12:16]
        if kind == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
            w, h = struct.unpack("<HH", data[26:30])
            return w & 0x3FFF, h & 0x3FFF
        if kind == b"VP8L" and data[20] == 0x2F:
            bits = int.from_bytes(data[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if kind == b"VP8X":
            return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
        return None
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    return None


def tile_costs(model: str) -> tuple[int, int] | None:
    """The (base, tile) figures of an upstream ``model`` in ``TILE_COSTS`` (a provider prefix such as
    ``openai/`` aside), else None: the generic bound and OpenAI's common tile formula apply."""
    name = model.rpartition("/")[2]
    for family, costs in TILE_COSTS.items():
        if name.startswith(family) and (len(name) == len(family) or name[len(family)] == "-"):
            return costs
    return None


def image_upper(model: str) -> tuple[int, int]:
    """One image's bound on the upstream ``model``: (``detail: low``, any other detail)."""
    costs = tile_costs(model)
    if costs is None:
        return IMAGE_LOW, IMAGE_UPPER
    base, tile = costs
    return base, base + _MAX_TILES * tile


def tile_tokens(width: int, height: int, base: int = _TILE_BASE, tile: int = _TILE) -> int:
    """OpenAI's high-detail figure: fit 2048x2048, shortest side to 768, ``base`` + ``tile`` a 512 px tile
    (85 + 170 on most tile models)."""
    w, h = float(width), float(height)
    if max(w, h) > _FIT_PX:
        scale = _FIT_PX / max(w, h)
        w, h = w * scale, h * scale
    if min(w, h) > _SHORT_PX:
        scale = _SHORT_PX / min(w, h)
        w, h = w * scale, h * scale
    return base + tile * math.ceil(w / _TILE_PX) * math.ceil(h / _TILE_PX)


def _image(part: dict[str, Any]) -> tuple[Any, Any]:
    spec = part.get("image_url")
    if isinstance(spec, dict):
        return spec.get("url"), spec.get("detail")
    return spec, None  # some clients send the URL as a plain string


def _image_estimate(part: dict[str, Any], model: str) -> int:
    costs = tile_costs(model) if model else None
    if costs is not None:
        base, tile = costs
        return _sized_image(part, base, tile, base + _TYPICAL_TILES * tile)
    return _sized_image(part, _TILE_BASE, _TILE, IMAGE_TYPICAL)


def _sized_image(part: dict[str, Any], base: int, tile: int, typical: int) -> int:
    url, detail = _image(part)
    if detail == "low":
        return base
    b64 = _b64_of(url)
    if b64:
        head = _decode_prefix(b64, _HEADER_B64)
        if head[:2] == b"\xff\xd8":
            head = _decode_prefix(b64, _JPEG_B64)
        size = image_size(head)
        if size and size[0] > 0 and size[1] > 0:
            return tile_tokens(*size, base, tile)
    return typical


def _audio(part: dict[str, Any]) -> tuple[str, str]:
    spec = part.get("input_audio")
    if not isinstance(spec, dict):
        return "", ""
    data, fmt = spec.get("data"), spec.get("format")
    return (data if isinstance(data, str) else ""), (fmt if isinstance(fmt, str) else "")


def _audio_tokens(n_bytes: int, bytes_per_s: int) -> int:
    return math.ceil(n_bytes * AUDIO_TOKENS_PER_S / bytes_per_s)


def _wav_byte_rate(b64: str) -> int | None:
    head = _decode_prefix(b64, _HEADER_B64)
    if head[:4] == b"RIFF" and head[8:16] == b"WAVEfmt " and len(head) >= 32:
        rate = int.from_bytes(head[28:32], "little")
        return rate if rate > 0 else None
    return None


def _file_data(part: dict[str, Any]) -> str:
    spec = part.get("file")
    data = spec.get("file_data") if isinstance(spec, dict) else None
    if not isinstance(data, str):
        return ""
    return _b64_of(data) or ("" if data.startswith("data:") else data)  # OpenAI also takes bare base64


def _pages(n_bytes: int, per_page: int) -> int:
    return max(1, -(-n_bytes // per_page))


def part_upper(part: Any) -> int:
    """A bound for one non-text part (0 for text and unknown parts); reads lengths only."""
    if not isinstance(part, dict):
        return 0
    kind = part.get("type")
    if kind == "image_url":
        return IMAGE_LOW if _image(part)[1] == "low" else IMAGE_UPPER
    if kind == "input_audio":
        data, fmt = _audio(part)
        return _audio_tokens(_decoded_len(data), _AUDIO_MIN_BYTES_PER_S.get(fmt, _AUDIO_MIN_DEFAULT))
    if kind == "file":
        return FILE_PAGE_UPPER * _pages(_decoded_len(_file_data(part)), FILE_BYTES_PER_PAGE_UPPER)
    return 0


def part_estimate(part: Any, model: str = "") -> int:
    """A best guess for one non-text part (0 for text and unknown parts) on the upstream ``model`` (its
    images by ``TILE_COSTS``; "" for the common figures); never raises on bad data."""
    if not isinstance(part, dict):
        return 0
    kind = part.get("type")
    if kind == "image_url":
        return _image_estimate(part, model)
    if kind == "input_audio":
        data, fmt = _audio(part)
        rate = (_wav_byte_rate(data) if fmt == "wav" else None) or _AUDIO_TYPICAL_BYTES_PER_S.get(
            fmt, _AUDIO_TYPICAL_DEFAULT)  # a header's rate below the bound's floor is read as the floor
        return _audio_tokens(_decoded_len(data), max(rate, _AUDIO_MIN_BYTES_PER_S.get(fmt, _AUDIO_MIN_DEFAULT)))
    if kind == "file":
        return FILE_PAGE_TYPICAL * _pages(_decoded_len(_file_data(part)), FILE_BYTES_PER_PAGE_TYPICAL)
    return 0
