"""Every screen at every geometry: through luma's dummy device, boxes, QR decoding."""

from __future__ import annotations

import itertools
import subprocess
import sys
from dataclasses import replace

import pytest
import zxingcpp
from luma.core.device import dummy
from PIL import Image, ImageDraw

from agent.ui import (
    CancelledView,
    ConfirmSignOutView,
    DeclinedView,
    ErrorView,
    ExpiredView,
    OfflineView,
    ProgressView,
    SignedInView,
    SignInView,
    StatusView,
    format_duration,
)
from hardware import screens
from hardware.console import half_blocks
from hardware.screens import (
    GEOMETRIES,
    LONG_ACCOUNT,
    SAMPLES,
    USGOV_DEVICE_URI,
    display_address,
    display_code,
    drawing,
    layout,
    plan,
    qr_payload,
    render,
    render_text,
    text_pages,
    write_gallery,
)
from hardware.screens import wrapping as layout_module
from hardware.screens.fonts import ELLIPSIS

PIXEL = [g for g in GEOMETRIES if g.mode != "text"]
CHARS = [g for g in GEOMETRIES if g.mode == "text"]

# Beyond the gallery samples: other worst and edge cases.
EXTRA = {
    "sign-in-entra": SignInView("FJ8ZK3ZUS", "https://microsoft.com/devicelogin", None, 5, 900),
    "sign-in-china": SignInView("WWWWWWWWW", "https://microsoft.com/deviceloginchina", None, 0, 900),
    "sign-in-long-complete": SignInView(
        "WDJBMJHT", USGOV_DEVICE_URI, USGOV_DEVICE_URI + "?otc=WDJBMJHT", 1800, 1800),
    "status-never": StatusView("pi", "", None, 0, None, None),
    "status-offline-mqtt": StatusView("x" * 40, LONG_ACCOUNT, 86400 * 9, 99_999_999, False, 0),
    "offline-no-retry": OfflineView("HTTP 503 from the telemetry endpoint", 0, None),
    "progress-long": ProgressView("Refreshing the access token for " + LONG_ACCOUNT),
    "signed-in-unknown": SignedInView(""),
    "error-long": ErrorView("AADSTS700016: application 11111111-2222-3333-4444-555555555555 "
                            "not found in the directory (check client_id in profiles.toml)"),
    "confirm-zero": ConfirmSignOutView(0.0),
    # A stopped sign-in without a button (timer only), with both, with neither.
    "expired-timer": ExpiredView(button=False, retry_in=86400 * 9.0),
    "expired-both": ExpiredView(button=True, retry_in=899.0),
    "expired-neither": ExpiredView(button=False),
    "declined-both": DeclinedView(button=True, retry_in=86400 * 9.0),
    "cancelled-timer": CancelledView(button=False, retry_in=899.0),
    "error-long-both": ErrorView("AADSTS700016: application 11111111-2222-3333-4444-555555555555 "
                                 "not found in the directory (check client_id in profiles.toml)",
                                 button=True, retry_in=86400 * 9.0),
}
ALL_VIEWS = {**SAMPLES, **EXTRA}


def _through_dummy(view, geometry) -> Image.Image:
    device = dummy(width=geometry.width, height=geometry.height, mode=geometry.mode)
    device.display(render(view, geometry.size, geometry.mode))
    return device.image


@pytest.mark.parametrize("geometry", PIXEL, ids=lambda g: g.name + g.mode)
@pytest.mark.parametrize("name", ALL_VIEWS)
def test_every_screen_fits_its_canvas_with_boxes_apart(name, geometry):
    view = ALL_VIEWS[name]
    boxes = layout(view, geometry.size, geometry.mode)
    assert boxes, "a screen with nothing on it"
    for box in boxes:
        assert box.inside(geometry.size), f"{box} leaves {geometry.name}"
        assert box.width > 0 and box.height > 0
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b), f"{a} overlaps {b}"

    image = _through_dummy(view, geometry)
    assert image.size == geometry.size
    # Nothing lit outside the boxes ...
    outside = image.copy()
    ink = ImageDraw.Draw(outside)
    for box in boxes:
        ink.rectangle((box.left, box.top, box.right - 1, box.bottom - 1), fill=0)
    assert outside.getbbox() is None, f"pixels drawn outside every box: {outside.getbbox()}"
    # ... and every text box has ink in it (the boxes are what was drawn).
    for box in boxes:
        if box.kind == "text":
            assert image.crop((box.left, box.top, box.right, box.bottom)).getbbox() is not None, box


@pytest.mark.parametrize("geometry", PIXEL, ids=lambda g: g.name + g.mode)
@pytest.mark.parametrize("name", [n for n, v in ALL_VIEWS.items() if isinstance(v, SignInView)])
def test_sign_in_shows_code_and_address_whole(name, geometry):
    view = ALL_VIEWS[name]
    lines = plan(view, geometry.size, geometry.mode).lines
    texts = [line.text for line in lines]
    assert display_code(view.user_code) in texts, "the code is one line, as issued"
    assert display_address(view.verification_uri) in "".join(texts)
    assert not any(ELLIPSIS in t for t in texts)
    code = next(line for line in lines if line.text == display_code(view.user_code))
    address = [line for line in lines if line.role == "body"]
    # The code is the largest thing on the screen.
    assert code.size >= max(line.size for line in address)


@pytest.mark.parametrize("geometry", PIXEL, ids=lambda g: g.name + g.mode)
@pytest.mark.parametrize("name", [n for n, v in ALL_VIEWS.items() if isinstance(v, SignInView)])
def test_qr_code_decodes_to_the_address(name, geometry):
    view = ALL_VIEWS[name]
    p = plan(view, geometry.size, geometry.mode)
    if geometry.size in ((128, 32), (84, 48)) or (name, geometry.size) == ("sign-in-china", (96, 64)):
        # One pixel per module plus the quiet zone (41 px) leaves no room
        # for the code and address beside it; on a 96x64 panel the widest
        # code there is (nine W: 71 px at the smallest size) leaves the
        # 50 px beside the QR code too, and the code matters more.
        assert p.qr is None
        return
    assert p.qr is not None, f"no QR code on {geometry.name}"
    image = _through_dummy(view, geometry).convert("L")
    box, scale = p.qr.box, p.qr.scale
    modules = box.width // scale
    assert box.width == box.height == modules * scale, "whole pixels per module"
    # The quiet zone (4 modules) is light all round.
    qr = image.crop((box.left, box.top, box.right, box.bottom))
    ring = 4 * scale
    for x in range(qr.width):
        for y in itertools.chain(range(ring), range(qr.height - ring, qr.height)):
            assert qr.getpixel((x, y)) == 255 and qr.getpixel((y, x)) == 255
    big = image.resize((image.width * 4, image.height * 4), Image.NEAREST)
    found = [r.text for r in zxingcpp.read_barcodes(big) if r.format == zxingcpp.BarcodeFormat.QRCode]
    assert found == [qr_payload(view)]
    expected = view.verification_uri_complete or view.verification_uri
    assert found[0] == expected


def test_user_code_grouping():
    assert display_code("WDJBMJHT") == "WDJB-MJHT"      # RFC 8628 §6.1 style
    assert display_code("ABCD1234") == "ABCD-1234"
    assert display_code("FJ8ZK3ZUS") == "FJ8ZK3ZUS"     # Entra: exactly as issued
    assert display_code("WDJB-MJHT") == "WDJB-MJHT"
    assert display_code("1234567") == "1234567"
    assert display_address("https://microsoft.com/devicelogin") == "microsoft.com/devicelogin"
    assert display_address("http://127.0.0.1:8400/device") == "http://127.0.0.1:8400/device"


def test_account_is_ellipsized_only_where_nothing_else_helps():
    small = [line.text for line in plan(SAMPLES["signed-in"], (128, 32), "1").lines]
    assert any(t.endswith(ELLIPSIS) for t in small)
    assert small[0] == "Signed in"
    for size, mode in (((320, 240), "RGB"), ((128, 64), "1")):
        texts = [line.text for line in plan(SAMPLES["signed-in"], size, mode).lines]
        assert not any(ELLIPSIS in t for t in texts)
        assert "".join(texts[1:]) == LONG_ACCOUNT


def test_status_keeps_the_essentials_and_drops_extras_on_small_panels():
    view = SAMPLES["status"]
    tiny = " ".join(line.text for line in plan(view, (128, 32), "1").lines)
    assert "Sent 3m 05s ago" in tiny
    big = " ".join(line.text for line in plan(view, (320, 240), "RGB").lines)
    for expected in ("Sent 3m 05s ago", "1,234,567 waiting", "MQTT connected", "Token 59m 59s",
                     "greenhouse-sensor-north-01"):
        assert expected in big


def test_monochrome_text_is_measured_as_drawn():
    # Pillow draws wider without anti-aliasing: a layout made for RGB would
    # spill on a 1-bit panel, so the mode is part of the layout.
    # (At 128x64 a colour panel draws crisp text too: see below.)
    view = SAMPLES["sign-in"]
    mono = plan(view, (128, 128), "1")
    colour = plan(view, (128, 128), "RGB")
    assert mono != colour and colour.text_mode == "RGB"


@pytest.mark.parametrize("name", ["sign-in", "status", "error", "expired"])
def test_small_colour_panel_text_is_crisp(name):
    # 96x64 SSD1331: anti-aliased 8 px text was grey smudge. Every text pixel
    # is now either off or the full colour of its role: no in-between shades.
    view, size = SAMPLES[name], (96, 64)
    p = plan(view, size, "RGB")
    assert p.text_mode == "1"
    image = _through_dummy(view, next(g for g in PIXEL if g.size == size))
    for line in p.lines:
        colours = {c for _, c in image.crop(
            (line.box.left, line.box.top, line.box.right, line.box.bottom)).getcolors(4096)}
        assert colours == {(0, 0, 0), drawing.colour(line.role, "1")}, (line.text, colours)


def test_crisp_text_gives_way_to_keep_the_qr_code():
    # Crisp glyphs are wider: where they would push the QR code off a small
    # colour panel, the sign-in screen keeps the QR code (anti-aliased text).
    p = plan(SAMPLES["sign-in-rfc"], (96, 64), "RGB")
    assert p.qr is not None


def _blank_runs(image, box, at_least: int) -> int:
    """Runs of at least *at_least* unlit pixel columns inside *box*."""
    crop = image.convert("L").crop((box.left, box.top, box.right, box.bottom))
    lit = [any(crop.getpixel((x, y)) for y in range(crop.height)) for x in range(crop.width)]
    runs, n = 0, 0
    for on in lit + [True]:
        if on:
            runs += n >= at_least
            n = 0
        else:
            n += 1
    return runs


@pytest.mark.parametrize("geometry", PIXEL, ids=lambda g: g.name + g.mode)
def test_word_spaces_are_visible_gaps(geometry):
    # At 9 px on a 1-bit panel Pillow's 2 px space closed up: "chmod 600the".
    view = SAMPLES["error"]
    image = _through_dummy(view, geometry)
    lines = plan(view, geometry.size, geometry.mode).lines
    for line in lines:
        if line.text.startswith("Error"):
            continue
        assert _blank_runs(image, line.box, 3) >= line.text.count(" "), line.text


def test_a_canvas_too_small_is_an_error_not_a_clipped_screen():
    with pytest.raises(screens.LayoutError):
        render(SAMPLES["sign-in"], (40, 16), "1")


def test_countdown_bar_shrinks_with_time():
    view = SAMPLES["sign-in"]
    full = replace(view, seconds_left=900)
    half = replace(view, seconds_left=450)
    size = (160, 128)
    bar_full, bar_half = plan(full, size, "RGB").bar, plan(half, size, "RGB").bar
    assert bar_full is not None and bar_half is not None
    assert bar_full[1] == 1.0 and bar_half[1] == 0.5
    track = bar_full[0]

    def filled(v) -> int:
        row = render(v, size, "RGB").crop((track.left, track.top, track.right, track.top + 1))
        title = drawing._COLOURS["title"]
        return sum(1 for x in range(row.width) if row.getpixel((x, 0)) == title)

    assert filled(full) == track.width
    assert filled(half) == round(track.width / 2)


@pytest.mark.parametrize("geometry", CHARS, ids=lambda g: g.name)
@pytest.mark.parametrize("name", ALL_VIEWS)
def test_character_lcd_pages_fit(name, geometry):
    view = ALL_VIEWS[name]
    pages = text_pages(view, geometry.width, geometry.height)
    assert pages and all(pages)
    for page in pages:
        assert len(page) <= geometry.height
        for line in page:
            assert len(line) <= geometry.width, line
            assert line.isascii(), f"not in the HD44780 ROM: {line!r}"
    assert render_text(view, geometry.width, geometry.height, page=len(pages)) == pages[0]
    if isinstance(view, SignInView):
        every = "".join("".join(page) for page in pages)
        assert display_address(view.verification_uri) in every
        assert display_code(view.user_code) in every


def test_character_lcd_sign_in_20x4_is_one_page():
    lines = render_text(SAMPLES["sign-in"], 20, 4)
    assert lines[-1] == "Code FJ8ZK3ZUS"
    assert "".join(lines[:-1]) == "Go to " + display_address(USGOV_DEVICE_URI)
    assert len(text_pages(SAMPLES["sign-in"], 20, 4)) == 1


def test_gallery_writes_every_screen_at_every_size(tmp_path):
    paths = write_gallery(tmp_path / "g")
    names = {p.name for p in paths}
    for name in SAMPLES:
        for geometry in PIXEL:
            assert f"{name}-{geometry.name}.png" in names
        for geometry in CHARS:
            assert any(n.startswith(f"{name}-{geometry.name}") for n in names)
    for path in paths:
        with Image.open(path) as image:
            assert image.width >= 96
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == sorted(names)


def test_half_blocks_pair_rows():
    image = Image.new("1", (3, 3), 0)
    image.putpixel((0, 0), 1)
    image.putpixel((1, 1), 1)
    image.putpixel((2, 0), 1)
    image.putpixel((2, 1), 1)
    image.putpixel((0, 2), 1)
    assert half_blocks(image) == ["▀▄█", "▀"]


def test_importing_hardware_loads_no_heavy_modules():
    code = ("import sys, hardware, hardware.screens, hardware.display, hardware.button, hardware.led, "
            "hardware.screens.column, hardware.errors, "
            "hardware.presenter, hardware.console; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'PIL', 'luma', 'gpiozero', 'segno'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_countdown_ticks_without_moving_anything_else():
    # The layout is made once with stand-ins; each second only the ticking
    # text changes, in the same place.
    a = plan(replace(SAMPLES["sign-in"], seconds_left=898), (160, 128), "RGB")
    b = plan(replace(SAMPLES["sign-in"], seconds_left=61), (160, 128), "RGB")
    texts_a = [line.text for line in a.lines]
    texts_b = [line.text for line in b.lines]
    assert "expires in 14m 58s" in texts_a and "expires in 1m 01s" in texts_b
    assert a.qr == b.qr
    same = [(x.text, x.box) for x in a.lines if not x.text.startswith("expires")]
    assert same == [(x.text, x.box) for x in b.lines if not x.text.startswith("expires")]
    status = plan(replace(SAMPLES["status"], last_upload_age=7), (128, 64), "1")
    assert "Sent 7s ago" in [line.text for line in status.lines]


def _breaks_inside_a_word(lines: list[str]) -> list[tuple[str, str]]:
    """Consecutive lines of an address that split a word (not after ``/ . -`` ..., not before ``@``)."""
    return [(a, b) for a, b in zip(lines, lines[1:])
            if a[-1] not in layout_module._BREAK_AFTER and b[0] not in layout_module._BREAK_BEFORE]


# Where the address may still break inside a word: the 84x48 panel has no
# room for whole pieces, and the 96x64 keeps its QR code (52 px beside it are
# narrower than "microsoftonline." at the smallest legible size).
_MID_WORD_ALLOWED = {(84, 48), (96, 64)}


@pytest.mark.parametrize("geometry", PIXEL, ids=lambda g: g.name + g.mode)
@pytest.mark.parametrize("name", [n for n, v in ALL_VIEWS.items() if isinstance(v, SignInView)])
def test_address_breaks_between_words_when_that_fits(name, geometry):
    view = ALL_VIEWS[name]
    p = plan(view, geometry.size, geometry.mode)
    address = [line.text for line in p.lines if line.block == 1]
    assert "".join(address) == display_address(view.verification_uri)
    if geometry.size in _MID_WORD_ALLOWED:
        return
    assert _breaks_inside_a_word(address) == [], address


def test_sign_in_128x64_reads_whole_words_and_keeps_its_qr_code():
    p = plan(SAMPLES["sign-in"], (128, 64), "1")
    address = [line.text for line in p.lines if line.block == 1]
    assert "".join(address) == display_address(USGOV_DEVICE_URI)
    assert _breaks_inside_a_word(address) == [], address
    assert min(line.size for line in p.lines if line.block == 1) >= screens.MIN_FONT
    assert p.qr is not None and p.qr.box.right == 127, "the QR code stays at the right edge"
    code = next(line for line in p.lines if line.role == "big")
    # Ink height, not font size: what a person reads (DejaVu Sans at 14 px
    # is 13 px tall; Pillow 10's own font needed 15 px for 10).
    assert code.text == "FJ8ZK3ZUS" and code.box.height >= 12


def test_mid_word_breaks_remain_the_last_resort_on_the_smallest_panel():
    p = plan(SAMPLES["sign-in"], (84, 48), "1")
    address = [line.text for line in p.lines if line.block == 1]
    assert "".join(address) == display_address(USGOV_DEVICE_URI)
    assert _breaks_inside_a_word(address), "84x48 fits the address only broken anywhere"


@pytest.mark.parametrize("size,mode", [((128, 64), "1"), ((96, 64), "RGB")])
@pytest.mark.parametrize("name", ["status", "status-offline-mqtt"])
def test_status_keeps_every_field_and_shortens_the_account_first(name, size, mode):
    view = ALL_VIEWS[name]
    p = plan(view, size, mode)
    texts = [line.text for line in p.lines]
    last = f"Sent {format_duration(view.last_upload_age)} ago"
    waiting = f"{view.outbox_depth:,} waiting"
    mqtt = "MQTT " + ("connected" if view.mqtt_connected else "offline")
    token = f"Token {format_duration(view.token_valid_for)}"
    for field in (last, waiting, mqtt, token):
        assert field in texts, f"{field!r} missing at {size}: {texts}"
    account = [line for line in p.lines if line.block == 1]
    assert len(account) == 1, "the account gives way first: one line"
    assert account[0].text.startswith("firstname.")
    boxes = [line.box for line in p.lines]
    for box in boxes:
        assert box.inside(size)
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b)


def test_status_shows_the_whole_account_where_there_is_room():
    account = [line.text for line in plan(SAMPLES["status"], (320, 240), "RGB").lines
               if line.block == 1]
    assert "".join(account) == LONG_ACCOUNT
    assert _breaks_inside_a_word(account) == []


def _chars(n: int):
    return lambda text: len(text) <= n


@pytest.mark.parametrize("account,width,expected", [
    ("jane.doe@contoso.com", 30, "jane.doe@contoso.com"),                      # fits whole
    ("averylongname.person@contoso.com", 24, "averylongnam…contoso.com"),       # start … domain end
    (LONG_ACCOUNT, 40, "firstname.lastna…contoso.onmicrosoft.com"),             # most labels that leave 8
    (LONG_ACCOUNT, 26, "firstname.…onmicrosoft.com"),                           # never fewer than two labels
    (LONG_ACCOUNT, 23, "firstname.lastname-con…"),                              # local part, cut at its end
    ("firstname.lastname@a-very-long-domain-name.example", 20, "firstname.lastname"),  # the local part whole
    ("ab@x", 2, "ab"),
    ("abcd@x", 3, "ab…"),
])
def test_shorten_account_rule(account, width, expected):
    out = layout_module.shorten_account(account, _chars(width))
    assert out == expected
    assert len(out) <= width


def test_shorten_account_without_an_at_sign_keeps_start_and_end():
    name = "greenhouse-sensor-north-01-long-device"
    out = layout_module.shorten_account(name, _chars(20))
    assert len(out) <= 20 and out.count(ELLIPSIS) == 1
    head, tail = out.split(ELLIPSIS)
    assert name.startswith(head) and name.endswith(tail) and len(head) >= 8 and tail


def test_every_sign_in_screen_shows_the_time_left():
    """The countdown or bar is a person's only warning; 128x32 alone has no room (code and
    address come first there, as RFC 8628 §3.3.1 wants the code as text)."""
    from agent.ui import SignInView
    from hardware.screens import GEOMETRIES, SAMPLES, layout
    missing = []
    for name, view in SAMPLES.items():
        if not isinstance(view, SignInView):
            continue
        for g in GEOMETRIES:
            if g.mode == "text" or g.size == (128, 32):
                continue
            boxes = layout(view, g.size, g.mode)
            if not any(b.kind == "bar" or "expires" in (b.text or "") for b in boxes):
                missing.append(f"{name}@{g.name}{g.mode}")
    assert missing == []
