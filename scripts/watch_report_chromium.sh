#!/usr/bin/env bash
# Renders kdleak watch's HTML report in headless Chromium and checks the chart.
#
#   scripts/watch_report_chromium.sh [OUT_DIR]      (default: target/watch-report)
#
# 1. `kdleak watch sim:watch-leak` with target time compressed 1200× (two target minutes per
#    100 ms poll interval: leaky.sys leaks two 4 KiB blocks per poll) writes series.jsonl and
#    report.html;
# 2. Chromium (Debian: `apt-get install -y chromium`) takes a 1200×900 screenshot, report.png;
# 3. a pure-Python PNG reader finds the chart's plot area (its #fafafa background) and the
#    leaking site's line in it (the first series colour, #d62728: the top site by bytes) and
#    checks that the line rises from left to right.
#
# KDLEAK=path/to/kdleak picks the binary (default: target/debug/kdleak, built if missing);
# CHROMIUM=path picks the browser (default /usr/bin/chromium). Exit status 0 = the chart shows
# the leak rising; 77 = Chromium is not installed (skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/watch-report}
mkdir -p "$out"
out=$(cd "$out" && pwd)
chromium=${CHROMIUM:-/usr/bin/chromium}
if [[ ! -x $chromium ]]; then
    echo "watch_report_chromium: $chromium not found (apt-get install -y chromium); skipped" >&2
    exit 77
fi
kdleak=${KDLEAK:-target/debug/kdleak}
if [[ ! -x $kdleak ]]; then
    cargo build --quiet --bin kdleak
fi

KDLEAK_SIM_TIME_SCALE=1200 "$kdleak" watch sim:watch-leak --offline --sympath "" \
    --interval 100ms --count 12 --quiet \
    --out "$out/series.jsonl" --report "$out/report.html" >"$out/summary.txt"

profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
rm -f "$out/report.png"
timeout 120 "$chromium" --headless --no-sandbox --disable-gpu --disable-background-networking \
    --disable-component-update --disable-sync --no-first-run --user-data-dir="$profile" \
    --screenshot="$out/report.png" --window-size=1200,900 "file://$out/report.html" \
    >"$out/chromium.log" 2>&1 || true
if [[ ! -s $out/report.png ]]; then
    echo "watch_report_chromium: no screenshot; chromium said:" >&2
    cat "$out/chromium.log" >&2
    exit 1
fi

python3 - "$out/report.png" <<'EOF'
import struct, sys, zlib

def read_png(path):
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and ctype in (2, 6) and interlace == 0, (depth, ctype, interlace)
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1: line[i] = (line[i] + a) & 255
            elif f == 2: line[i] = (line[i] + b) & 255
            elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pr = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pr) & 255
        rows.append(line)
        prev = line
    return width, height, bpp, rows

w, h, bpp, rows = read_png(sys.argv[1])
px = lambda x, y: tuple(rows[y][x * bpp:x * bpp + 3])
near = lambda p, q, d=40: all(abs(a - b) <= d for a, b in zip(p, q))
# The plot area: the bounding box of the chart's #fafafa background.
# Rows and columns mostly of that colour (other page parts have little or none of it).
is_bg = lambda x, y: px(x, y) == (0xfa, 0xfa, 0xfa)
dense_rows = [y for y in range(h) if sum(is_bg(x, y) for x in range(0, w, 4)) > w // 4 // 2]
assert dense_rows, "no chart background found"
y0, y1 = min(dense_rows), max(dense_rows)
dense_cols = [x for x in range(w) if sum(is_bg(x, y) for y in range(y0, y1 + 1, 4)) > (y1 - y0) // 4 // 2]
x0, x1 = min(dense_cols), max(dense_cols)
red = [(x, y) for y in range(y0, y1 + 1) for x in range(x0, x1 + 1) if near(px(x, y), (0xd6, 0x27, 0x28))]
assert len(red) > 50, f"the leaking site's line is missing ({len(red)} red pixels)"
red.sort()
n = max(5, len(red) // 10)
left = sum(y for _, y in red[:n]) / n
right = sum(y for _, y in red[-n:]) / n
print(f"plot area x {x0}..{x1}, y {y0}..{y1}; leaking site's line: {len(red)} px, "
      f"mean y {left:.0f} at the left, {right:.0f} at the right (smaller = higher)")
assert right < left - 0.3 * (y1 - y0), "the leaking site's line does not rise"
print("ok: the chart shows the leaking site rising")
EOF
echo "screenshot: $out/report.png"
