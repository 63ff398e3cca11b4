# SPDX-License-Identifier: Apache-2.0
"""Render `tmux capture-pane -p -e` output (24-bit SGR colours) to a PNG, one cell at a time.

Usage: tmux_to_png.py CAPTURE.txt OUT.png CURSOR.txt, where CURSOR.txt holds
`tmux display -p "#{cursor_x},#{cursor_y},#{pane_width},#{pane_height}"`. Needs Pillow and
DejaVu Sans Mono (Debian: fonts-dejavu-core). docs/editors.md says how the screenshot was taken.
"""

import re
import sys
import unicodedata

from PIL import Image, ImageDraw, ImageFont

src, dst, cursor = sys.argv[1], sys.argv[2], sys.argv[3]
cx, cy, W, H = map(int, open(cursor).read().strip().split(","))
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"
BOLD = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf"
size = 18
font, bold = ImageFont.truetype(FONT, size), ImageFont.truetype(BOLD, size)
cw = round(font.getlength("M"))
ch = round(size * 1.35)
DEF_FG, DEF_BG = (224, 226, 234), (20, 22, 27)
pad = 14
img = Image.new("RGB", (W * cw + 2 * pad, H * ch + 2 * pad), DEF_BG)
d = ImageDraw.Draw(img)
BASIC = [
    (0, 0, 0),
    (205, 49, 49),
    (13, 188, 121),
    (229, 229, 16),
    (36, 114, 200),
    (188, 63, 188),
    (17, 168, 205),
    (229, 229, 229),
]
sgr = re.compile(r"\x1b\[([0-9;]*)m")
for y, line in enumerate(open(src, encoding="utf-8").read().split("\n")[:H]):
    fg, bg, b = DEF_FG, None, False
    x, pos = 0, 0
    for m in list(sgr.finditer(line)) + [None]:
        text = line[pos : m.start()] if m else line[pos:]
        for c in text:
            w = 2 if unicodedata.east_asian_width(c) in "WF" else 1
            px, py = pad + x * cw, pad + y * ch
            if bg:
                d.rectangle([px, py, px + w * cw - 1, py + ch - 1], fill=bg)
            d.text((px, py + 2), c, font=bold if b else font, fill=fg)
            x += w
        if not m:
            break
        pos = m.end()
        codes = [int(c) if c else 0 for c in m.group(1).split(";")]
        i = 0
        while i < len(codes):
            c = codes[i]
            if c == 0:
                fg, bg, b = DEF_FG, None, False
            elif c == 1:
                b = True
            elif c == 22:
                b = False
            elif c in (38, 48) and codes[i + 1] == 2:
                rgb = tuple(codes[i + 2 : i + 5])
                i += 4
                if c == 38:
                    fg = rgb
                else:
                    bg = rgb
            elif c in (38, 48) and codes[i + 1] == 5:
                i += 2
            elif 30 <= c <= 37:
                fg = BASIC[c - 30]
            elif c == 39:
                fg = DEF_FG
            elif 40 <= c <= 47:
                bg = BASIC[c - 40]
            elif c == 49:
                bg = None
            i += 1
# Insert-mode beam cursor.
px, py = pad + cx * cw, pad + cy * ch
d.rectangle([px, py + 1, px + 1, py + ch - 2], fill=(224, 226, 234))
img.save(dst)
print(img.size)
