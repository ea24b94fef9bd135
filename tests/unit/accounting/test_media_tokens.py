"""Images, audio and files count in the prompt: a bound for the reservation, an estimate for the bill."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest

from aigw.accounting import media
from aigw.accounting.tokens import TokenCounter, upper_estimate
from tests.support.media import b64, data_url, image_part, png, wav

PHOTO = "https://example.com/cat.jpg"


def chat(*parts: dict[str, Any], text: str = "What is in this picture?") -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": text}, *parts]}]}


def test_a_text_only_prompt_counts_as_before() -> None:
    as_parts = chat()
    as_string = {"model": "m", "messages": [{"role": "user", "content": "What is in this picture?"}]}
    assert upper_estimate(as_parts) == upper_estimate(as_string)
    assert TokenCounter().count_prompt(as_parts) == TokenCounter().count_prompt(as_string)


@pytest.mark.parametrize("detail", [None, "auto", "high"])
def test_an_image_raises_the_reservation_by_at_least_the_per_image_bound(detail: str | None) -> None:
    before = upper_estimate(chat())
    assert upper_estimate(chat(image_part(PHOTO, detail))) - before >= media.IMAGE_UPPER
    two = chat(image_part(PHOTO, detail), image_part(data_url(png(64, 64)), detail))
    assert upper_estimate(two) - before >= 2 * media.IMAGE_UPPER


def test_a_low_detail_image_is_85_tokens_in_both() -> None:
    low = chat(image_part(data_url(png(4096, 4096)), "low"))
    assert upper_estimate(low) - upper_estimate(chat()) == 85
    counter = TokenCounter()
    assert counter.count_prompt(low) - counter.count_prompt(chat()) == 85


@pytest.mark.parametrize(("size", "tokens"), [
    ((1024, 1024), 765),  # OpenAI's examples: scaled to 768x768, 4 tiles
    ((2048, 4096), 1105),  # fit to 1024x2048, then 768x1536: 6 tiles
    ((512, 512), 255),  # one tile
    ((768, 2048), 1445),  # the most tiles there can be: 8
])
def test_a_data_url_png_is_billed_by_openais_tile_formula(size: tuple[int, int], tokens: int) -> None:
    counter = TokenCounter()
    body = chat(image_part(data_url(png(*size))))
    assert counter.count_prompt(body) - counter.count_prompt(chat()) == tokens
    assert upper_estimate(body) >= counter.count_prompt(body)  # the bound stays above the bill


def test_anthropic_and_other_formats_read_their_size_from_the_header() -> None:
    gif = b"GIF89a" + (1024).to_bytes(2, "little") + (1024).to_bytes(2, "little") + b"\x00" * 20
    jpeg = (b"\xff\xd8" + b"\xff\xe1" + (40).to_bytes(2, "big") + b"E" * 38  # an EXIF segment first
            + b"\xff\xc0\x00\x11\x08" + (2048).to_bytes(2, "big") + (1024).to_bytes(2, "big") + b"\x03" * 12)
    webp = b"RIFF\x00\x00\x00\x00WEBPVP8X" + b"\x00" * 8 + (511).to_bytes(3, "little") + (511).to_bytes(3, "little")
    assert media.image_size(gif) == (1024, 1024)
    assert media.image_size(jpeg) == (1024, 2048)
    assert media.image_size(webp) == (512, 512)
    assert media.part_estimate(image_part(data_url(jpeg, "image/jpeg"))) == 1105


_SOF = b"\xff\xc0\x00\x11\x08" + (2048).to_bytes(2, "big") + (1024).to_bytes(2, "big") + b"\x03" * 12


@pytest.mark.parametrize("prefix", [
    b"\xff" * 200_000,  # fill bytes
    b"\xff\xd0" * 100_000,  # markers without a length
    b"\xff\xe0\x00\x02" * 50_000,  # empty segments
])
def test_a_crafted_jpeg_costs_little_cpu_to_estimate(prefix: bytes) -> None:
    """Walked a byte or a marker at a time, 40 such images took ~0.6 s of CPU (a 10 MB body)."""
    part = image_part(data_url(b"\xff\xd8" + prefix + _SOF, "image/jpeg"))
    started = time.process_time()
    for _ in range(40):
        media.part_estimate(part)
    assert time.process_time() - started < 0.15


def test_a_long_run_of_fill_bytes_before_the_frame_still_reads_its_size() -> None:
    assert media.image_size(b"\xff\xd8" + b"\xff" * 10_000 + _SOF) == (1024, 2048)


@pytest.mark.parametrize("url", [
    "data:image/png;base64,not base64 at all!!",
    "data:image/png;base64,",
    "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n").decode(),  # cut short
    "data:image/png;base64,iVBOR%%%" + base64.b64encode(png(10, 10)).decode()[5:],  # a bad character
    "data:image/png;base64," + base64.b64encode(png(0, 0)).decode(),  # a header that says 0x0
    "data:image/jpeg;base64," + base64.b64encode(b"\xff\xd8\xff\xe0\xff\xff").decode(),  # a bad length
    "data:image/png,raw-not-base64",
    "",
])
def test_a_malformed_image_is_counted_at_the_typical_figure_without_crashing(url: str) -> None:
    body = chat(image_part(url))
    counter = TokenCounter()
    assert counter.count_prompt(body) - counter.count_prompt(chat()) == media.IMAGE_TYPICAL
    assert upper_estimate(body) - upper_estimate(chat()) >= media.IMAGE_UPPER


def test_odd_parts_do_not_crash_either() -> None:
    odd = [{"type": "image_url", "image_url": None}, {"type": "image_url"}, {"type": "input_audio"},
           {"type": "input_audio", "input_audio": {"data": 5}}, {"type": "file", "file": "x"}, "text", 7]
    body = {"messages": [{"role": "user", "content": odd}]}
    assert upper_estimate(body) >= TokenCounter().count_prompt(body) > 0


def test_an_image_part_with_a_text_key_is_still_bound_as_an_image() -> None:
    """Parts allow extra keys: an image with ``"text": ""`` was bound as text, so reserved nothing."""
    sneaky = {**image_part(PHOTO), "text": ""}
    assert upper_estimate(chat(sneaky)) - upper_estimate(chat()) >= media.IMAGE_UPPER

def test_a_url_image_is_billed_at_the_typical_figure() -> None:
    counter = TokenCounter()
    assert counter.count_prompt(chat(image_part(PHOTO))) - counter.count_prompt(chat()) == 765


def test_audio_counts_by_its_length_and_the_bound_covers_the_estimate() -> None:
    counter = TokenCounter()
    ten_s = {"type": "input_audio", "input_audio": {"data": b64(wav(10)), "format": "wav"}}
    billed = counter.count_prompt(chat(ten_s)) - counter.count_prompt(chat())
    assert billed == pytest.approx(10 * media.AUDIO_TOKENS_PER_S, abs=2)  # the header's byte rate
    assert upper_estimate(chat(ten_s)) - upper_estimate(chat()) >= billed
    mp3 = {"type": "input_audio", "input_audio": {"data": b64(b"\xff\xfb" * 80_000), "format": "mp3"}}
    assert counter.count_prompt(chat(mp3)) - counter.count_prompt(chat()) == 320  # 160 KB at 128 kbps: 10 s
    assert upper_estimate(chat(mp3)) - upper_estimate(chat()) >= 5120  # at 8 kbps: 160 s


def test_a_pdf_counts_by_its_size() -> None:
    counter = TokenCounter()
    pdf = {"type": "file", "file": {"filename": "a.pdf", "file_data": data_url(b"%PDF-1.7" + b"x" * 150_000,
                                                                          "application/pdf")}}
    billed = counter.count_prompt(chat(pdf)) - counter.count_prompt(chat())
    assert billed == 3 * media.FILE_PAGE_TYPICAL  # 150 KB: 3 pages of 50 KB
    assert upper_estimate(chat(pdf)) - upper_estimate(chat()) >= 19 * media.FILE_PAGE_UPPER  # a page per 8 KB
    by_id = {"type": "file", "file": {"file_id": "file-abc"}}
    assert counter.count_prompt(chat(by_id)) - counter.count_prompt(chat()) == media.FILE_PAGE_TYPICAL
    assert upper_estimate(chat(by_id)) - upper_estimate(chat()) >= media.FILE_PAGE_UPPER


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gpt-4o-mini-2024-07-18", "openai/gpt-4o-mini"])
def test_gpt_4o_mini_images_are_bound_and_billed_at_its_own_tile_figures(model: str) -> None:
    # gpt-4o-mini bills an image ~33x gpt-4o's tokens (2,833 + 5,667 a tile): at the common 4,800 bound a
    # budget reserved a tenth of a high-detail image, and at 85 + 170 a tile a call without usage billed ~3 %
    assert media.image_upper(model) == (2_833, 2_833 + 8 * 5_667)
    counter = TokenCounter()
    text = counter.count_messages(chat()["messages"], model)
    assert counter.count_messages(chat(image_part(data_url(png(1024, 1024))))["messages"], model) - text == (
        2_833 + 4 * 5_667)
    assert counter.count_messages(chat(image_part(data_url(png(512, 512)), "low"))["messages"], model) - text == 2_833
    assert counter.count_messages(chat(image_part(PHOTO))["messages"], model) - text == 2_833 + 4 * 5_667


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4o-2024-08-06", "gpt-4o-minimal", "", "claude-sonnet-4"])
def test_other_models_keep_the_common_image_figures(model: str) -> None:
    assert media.image_upper(model) == (media.IMAGE_LOW, media.IMAGE_UPPER)
    counter = TokenCounter()
    text = counter.count_messages(chat()["messages"], model)
    assert counter.count_messages(chat(image_part(data_url(png(1024, 1024))))["messages"], model) - text == 765


def test_the_estimate_reports_each_image_parts_detail_and_nothing_without_images() -> None:
    seen: list[bool] = []
    plain = upper_estimate(chat(image_part(PHOTO), image_part(PHOTO, "low")), seen)
    assert seen == [False, True] and plain == upper_estimate(chat(image_part(PHOTO), image_part(PHOTO, "low")))
    seen.clear()
    upper_estimate(chat(text="no picture"), seen)
    assert seen == []
