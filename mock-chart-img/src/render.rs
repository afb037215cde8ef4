//! Deterministic chart images: candles (or the requested style) drawn with `tiny-skia` from a random walk seeded by
//! the symbol and interval, with the theme's colours, the symbol and interval written on top, overlay studies on the
//! price pane and one pane per other study. Encoded as PNG (`png`, fdeflate) or JPEG (`jpeg-encoder`).
//!
//! **Invariant:** the bytes depend only on the normalized request and the seed. The data generator is a hand-written
//! SplitMix64 fed by FNV-1a hashes rather than `rand`/`DefaultHasher`, because neither promises the same stream
//! across releases and a cassette or a snapshot must not change when a dependency is updated.

use font8x8::UnicodeFonts;
use tiny_skia::{Color, FillRule, Paint, PathBuilder, Pixmap, PremultipliedColorU8, Rect, Stroke, Transform};

use crate::request::ChartRequest;

/// Why an image could not be produced (only for sizes no plan allows, in practice).
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The pixmap could not be allocated.
    #[error("cannot allocate a {0}x{1} image")]
    Size(u32, u32),
    /// The encoder failed.
    #[error("encoding failed: {0}")]
    Encode(String),
}

/// Renders and encodes `req`. Same request and seed → same bytes.
pub fn render(req: &ChartRequest, seed: u64) -> Result<Vec<u8>, RenderError> {
    let pixmap = draw(req, seed)?;
    let (w, h) = (pixmap.width(), pixmap.height());
    // Every pixel is opaque, so premultiplied RGBA is plain RGBA; dropping alpha makes the files a quarter smaller.
    let mut rgb = Vec::with_capacity((w * h * 3) as usize);
    for px in pixmap.data().chunks_exact(4) {
        rgb.extend_from_slice(&px[..3]);
    }
    let mut out = Vec::with_capacity(64 * 1024);
    if req.format == "jpeg" {
        let enc = jpeg_encoder::Encoder::new(&mut out, 85);
        enc.encode(&rgb, w as u16, h as u16, jpeg_encoder::ColorType::Rgb)
            .map_err(|e| RenderError::Encode(e.to_string()))?;
    } else {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        // fdeflate's fast mode: charts are large flat areas, which it compresses well at a fraction of zlib's time.
        enc.set_compression(png::Compression::Fast);
        let mut writer = enc.write_header().map_err(|e| RenderError::Encode(e.to_string()))?;
        writer.write_image_data(&rgb).map_err(|e| RenderError::Encode(e.to_string()))?;
        writer.finish().map_err(|e| RenderError::Encode(e.to_string()))?;
    }
    Ok(out)
}

struct Theme {
    bg: Color,
    grid: Color,
    text: [u8; 3],
    up: Color,
    down: Color,
    line: Color,
    study: [Color; 4],
}

fn rgb(r: u8, g: u8, b: u8) -> Color {
    Color::from_rgba8(r, g, b, 255)
}

fn theme(name: &str) -> Theme {
    let study = [rgb(0x29, 0x62, 0xFF), rgb(0xFF, 0x98, 0x00), rgb(0x9C, 0x27, 0xB0), rgb(0x00, 0xBC, 0xD4)];
    if name == "dark" {
        Theme {
            bg: rgb(0x13, 0x17, 0x22),
            grid: rgb(0x2A, 0x2E, 0x39),
            text: [0xD1, 0xD4, 0xDC],
            up: rgb(0x08, 0x99, 0x81),
            down: rgb(0xF2, 0x36, 0x45),
            line: rgb(0x29, 0x62, 0xFF),
            study,
        }
    } else {
        Theme {
            bg: rgb(0xFF, 0xFF, 0xFF),
            grid: rgb(0xF0, 0xF3, 0xFA),
            text: [0x13, 0x17, 0x22],
            up: rgb(0x08, 0x99, 0x81),
            down: rgb(0xF2, 0x36, 0x45),
            line: rgb(0x29, 0x62, 0xFF),
            study,
        }
    }
}

/// SplitMix64: tiny, fast, and stable forever (see the module note).
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Roughly normal (Irwin–Hall of four), enough for a price walk.
    fn normal(&mut self) -> f64 {
        (self.unit() + self.unit() + self.unit() + self.unit() - 2.0) * 1.732
    }
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

#[derive(Clone, Copy)]
struct Bar {
    o: f64,
    h: f64,
    l: f64,
    c: f64,
    v: f64,
}

/// The series for a symbol and interval: the same pair always gives the same bars.
fn series(symbol: &str, interval: &str, seed: u64, n: usize) -> Vec<Bar> {
    let mut rng = SplitMix(seed ^ fnv1a(symbol) ^ fnv1a(interval).rotate_left(17));
    let base = 10f64.powf(0.5 + rng.unit() * 4.0);
    // Longer intervals move more per bar.
    let vol = match interval.chars().last() {
        Some('m') => 0.003,
        Some('h') => 0.008,
        Some('D') => 0.02,
        Some('W') => 0.04,
        _ => 0.07,
    };
    let drift = (rng.unit() - 0.5) * vol * 0.3;
    let mut price = base;
    (0..n)
        .map(|_| {
            let o = price;
            let c = (o * (1.0 + drift + vol * rng.normal())).max(base * 0.05);
            let h = o.max(c) * (1.0 + vol * 0.6 * rng.unit());
            let l = o.min(c) * (1.0 - vol * 0.6 * rng.unit());
            price = c;
            Bar { o, h, l, c, v: 0.2 + rng.unit() * (1.0 + ((c - o).abs() / o) / vol) }
        })
        .collect()
}

fn heikin_ashi(bars: &[Bar]) -> Vec<Bar> {
    let mut out: Vec<Bar> = Vec::with_capacity(bars.len());
    for b in bars {
        let c = (b.o + b.h + b.l + b.c) / 4.0;
        let o = out.last().map_or((b.o + b.c) / 2.0, |p| (p.o + p.c) / 2.0);
        out.push(Bar { o, h: b.h.max(o).max(c), l: b.l.min(o).min(c), c, v: b.v });
    }
    out
}

fn sma(v: &[f64], n: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(v.len());
    let mut sum = 0.0;
    for i in 0..v.len() {
        sum += v[i];
        if i >= n {
            sum -= v[i - n];
        }
        out.push(sum / (i + 1).min(n) as f64);
    }
    out
}

fn rsi(closes: &[f64], n: usize) -> Vec<f64> {
    let (mut up, mut down) = (0.0, 0.0);
    let mut out = vec![50.0];
    for w in closes.windows(2) {
        let d = w[1] - w[0];
        let k = 1.0 / n as f64;
        up = up * (1.0 - k) + d.max(0.0) * k;
        down = down * (1.0 - k) + (-d).max(0.0) * k;
        out.push(if down == 0.0 { 100.0 } else { 100.0 - 100.0 / (1.0 + up / down) });
    }
    out
}

/// The `length` (or first numeric input) of a study, within reason.
fn study_length(input: &serde_json::Value) -> usize {
    let obj = input.as_object();
    let n = obj
        .and_then(|m| m.get("length").or_else(|| m.get("in_0")).or_else(|| m.values().find(|v| v.is_number())))
        .and_then(|v| v.as_f64())
        .unwrap_or(14.0);
    (n as usize).clamp(2, 200)
}

fn paint(c: Color, aa: bool) -> Paint<'static> {
    let mut p = Paint::default();
    p.set_color(c);
    p.anti_alias = aa;
    p
}

fn fill(pm: &mut Pixmap, x: f32, y: f32, w: f32, h: f32, c: Color) {
    if let Some(r) = Rect::from_xywh(x, y, w.max(1.0), h.max(1.0)) {
        pm.fill_rect(r, &paint(c, false), Transform::identity(), None);
    }
}

fn polyline(pm: &mut Pixmap, pts: &[(f32, f32)], c: Color, width: f32) {
    let mut pb = PathBuilder::new();
    for (i, (x, y)) in pts.iter().enumerate() {
        if i == 0 {
            pb.move_to(*x, *y)
        } else {
            pb.line_to(*x, *y)
        }
    }
    if let Some(path) = pb.finish() {
        let stroke = Stroke { width, ..Stroke::default() };
        pm.stroke_path(&path, &paint(c, true), &stroke, Transform::identity(), None);
    }
}

/// Writes `text` with the 8x8 VGA glyphs, `scale` pixels per glyph pixel, straight into the pixel buffer.
fn text(pm: &mut Pixmap, x: i32, y: i32, s: &str, scale: i32, color: [u8; 3]) {
    let (w, h) = (pm.width() as i32, pm.height() as i32);
    let px = PremultipliedColorU8::from_rgba(color[0], color[1], color[2], 255).expect("opaque colour");
    let pixels = pm.pixels_mut();
    for (i, ch) in s.chars().enumerate() {
        let glyph = font8x8::BASIC_FONTS.get(ch).or_else(|| font8x8::BASIC_FONTS.get('?')).unwrap_or([0; 8]);
        let gx = x + i as i32 * 8 * scale;
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                // Bit 0 is the leftmost pixel in font8x8.
                if bits & (1 << col) == 0 {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let (xx, yy) = (gx + col * scale + dx, y + row as i32 * scale + dy);
                        if xx >= 0 && yy >= 0 && xx < w && yy < h {
                            pixels[(yy * w + xx) as usize] = px;
                        }
                    }
                }
            }
        }
    }
}

fn fmt_price(p: f64) -> String {
    if p >= 1000.0 {
        format!("{p:.0}")
    } else if p >= 10.0 {
        format!("{p:.2}")
    } else {
        format!("{p:.4}")
    }
}

fn is_volume(name: &str) -> bool {
    name.to_ascii_lowercase().contains("volume")
}

fn draw(req: &ChartRequest, seed: u64) -> Result<Pixmap, RenderError> {
    let (w, h) = (req.width, req.height);
    let mut pm = Pixmap::new(w, h).ok_or(RenderError::Size(w, h))?;
    let t = theme(&req.theme);
    pm.fill(t.bg);

    let (left, right, top, bottom) = (8.0f32, 72.0f32, 30.0f32, 20.0f32);
    let plot_w = w as f32 - left - right;
    let plot_h = h as f32 - top - bottom;
    let n = ((plot_w / 9.0) as usize).clamp(20, 400);
    let raw = series(&req.symbol, &req.interval, seed, n);
    let bars = if req.style == "heikinAshi" { heikin_ashi(&raw) } else { raw.clone() };
    let closes: Vec<f64> = raw.iter().map(|b| b.c).collect();

    // Panes: the price pane, then one per study that is not drawn over the price.
    let pane_studies: Vec<_> = req.studies.iter().filter(|s| !s.force_overlay && !is_overlay_name(&s.name)).collect();
    let pane_h = if pane_studies.is_empty() { 0.0 } else { (plot_h * 0.45 / pane_studies.len() as f32).min(plot_h * 0.22) };
    let price_h = plot_h - pane_h * pane_studies.len() as f32;

    let lo = bars.iter().map(|b| b.l).fold(f64::MAX, f64::min);
    let hi = bars.iter().map(|b| b.h).fold(f64::MIN, f64::max);
    let pad = (hi - lo) * 0.08;
    let (lo, hi) = (lo - pad, hi + pad);
    let y_of = |p: f64| top + ((hi - p) / (hi - lo)) as f32 * price_h;
    let step = plot_w / n as f32;
    let x_of = |i: usize| left + step * (i as f32 + 0.5);

    // Grid and price scale.
    for k in 0..=5 {
        let p = lo + (hi - lo) * f64::from(k) / 5.0;
        let y = y_of(p);
        fill(&mut pm, left, y, plot_w, 1.0, t.grid);
        text(&mut pm, (left + plot_w + 6.0) as i32, y as i32 - 4, &fmt_price(p), 1, t.text);
    }
    for k in 0..=8 {
        fill(&mut pm, left + plot_w * k as f32 / 8.0, top, 1.0, plot_h, t.grid);
    }

    // Volume under the price when asked for as an overlay.
    if req.studies.iter().any(|s| is_volume(&s.name) && (s.force_overlay || !pane_studies.iter().any(|p| is_volume(&p.name)))) {
        let vmax = raw.iter().map(|b| b.v).fold(0.0, f64::max);
        for (i, b) in raw.iter().enumerate() {
            let vh = (b.v / vmax) as f32 * price_h * 0.2;
            let c = if b.c >= b.o { t.up } else { t.down };
            let c = Color::from_rgba(c.red(), c.green(), c.blue(), 0.35).unwrap_or(c);
            let mut p = paint(c, false);
            p.blend_mode = tiny_skia::BlendMode::SourceOver;
            if let Some(r) = Rect::from_xywh(x_of(i) - step * 0.35, top + price_h - vh, step * 0.7, vh.max(1.0)) {
                pm.fill_rect(r, &p, Transform::identity(), None);
            }
        }
    }

    // Price series in the requested style.
    let body_w = (step * 0.7).max(1.0);
    match req.style.as_str() {
        "line" | "area" | "baseline" => {
            let pts: Vec<_> = bars.iter().enumerate().map(|(i, b)| (x_of(i), y_of(b.c))).collect();
            if req.style == "area" {
                let mut pb = PathBuilder::new();
                pb.move_to(pts[0].0, top + price_h);
                for (x, y) in &pts {
                    pb.line_to(*x, *y);
                }
                pb.line_to(pts[pts.len() - 1].0, top + price_h);
                pb.close();
                if let Some(path) = pb.finish() {
                    let c = Color::from_rgba(t.line.red(), t.line.green(), t.line.blue(), 0.25).unwrap_or(t.line);
                    // No anti-aliasing on the fill: it is the slowest part of the area style, and the
                    // anti-aliased line drawn over it hides the edge anyway.
                    pm.fill_path(&path, &paint(c, false), FillRule::Winding, Transform::identity(), None);
                }
            }
            if req.style == "baseline" {
                let base_y = y_of(bars[0].c);
                fill(&mut pm, left, base_y, plot_w, 1.0, t.grid);
                for (i, win) in pts.windows(2).enumerate() {
                    let c = if bars[i + 1].c >= bars[0].c { t.up } else { t.down };
                    polyline(&mut pm, win, c, 2.0);
                }
            } else {
                polyline(&mut pm, &pts, t.line, 2.0);
            }
        }
        "column" => {
            for (i, b) in bars.iter().enumerate() {
                let c = if b.c >= b.o { t.up } else { t.down };
                let y = y_of(b.c);
                fill(&mut pm, x_of(i) - body_w / 2.0, y, body_w, top + price_h - y, c);
            }
        }
        style => {
            for (i, b) in bars.iter().enumerate() {
                let up = b.c >= b.o;
                let c = if up { t.up } else { t.down };
                let x = x_of(i);
                let (yo, yc, yh, yl) = (y_of(b.o), y_of(b.c), y_of(b.h), y_of(b.l));
                match style {
                    "bar" => {
                        fill(&mut pm, x, yh, 1.0, yl - yh, c);
                        fill(&mut pm, x - body_w / 2.0, yo, body_w / 2.0, 1.0, c);
                        fill(&mut pm, x, yc, body_w / 2.0, 1.0, c);
                    }
                    "hiLo" => fill(&mut pm, x - body_w / 2.0, yh, body_w, yl - yh, c),
                    _ => {
                        // candle, hollowCandle, heikinAshi
                        fill(&mut pm, x, yh, 1.0, yl - yh, c);
                        let (y0, y1) = (yo.min(yc), yo.max(yc));
                        if style == "hollowCandle" && up {
                            fill(&mut pm, x - body_w / 2.0, y0, body_w, y1 - y0, t.bg);
                            fill(&mut pm, x - body_w / 2.0, y0, body_w, 1.0, c);
                            fill(&mut pm, x - body_w / 2.0, y1, body_w, 1.0, c);
                            fill(&mut pm, x - body_w / 2.0, y0, 1.0, y1 - y0, c);
                            fill(&mut pm, x + body_w / 2.0 - 1.0, y0, 1.0, y1 - y0, c);
                        } else {
                            fill(&mut pm, x - body_w / 2.0, y0, body_w, y1 - y0, c);
                        }
                    }
                }
            }
        }
    }

    // Overlay studies (moving averages and the like) as lines over the price.
    let mut legend_y = top as i32 + 4;
    for (k, s) in req.studies.iter().filter(|s| (s.force_overlay || is_overlay_name(&s.name)) && !is_volume(&s.name)).enumerate() {
        let ma = sma(&closes, study_length(&s.input));
        let pts: Vec<_> = ma.iter().enumerate().map(|(i, p)| (x_of(i), y_of(*p))).collect();
        let c = t.study[k % t.study.len()];
        polyline(&mut pm, &pts, c, 1.5);
        text(&mut pm, left as i32 + 4, legend_y, &s.name, 1, color_bytes(c));
        legend_y += 11;
    }

    // Drawings: horizontal lines at their price, anything else as a trend line across the chart.
    for d in &req.drawings {
        let price = d.input.get("price").and_then(|v| v.as_f64()).filter(|p| *p > lo && *p < hi);
        let c = t.study[1];
        if d.name.to_ascii_lowercase().contains("horizontal") {
            let y = y_of(price.unwrap_or((lo + hi) / 2.0));
            fill(&mut pm, left, y, plot_w, 1.0, c);
        } else {
            polyline(&mut pm, &[(x_of(n / 4), y_of(raw[n / 4].l)), (x_of(n - 1), y_of(raw[n - 1].h))], c, 1.5);
        }
    }

    // Study panes.
    for (k, s) in pane_studies.iter().enumerate() {
        let y0 = top + price_h + pane_h * k as f32;
        fill(&mut pm, left, y0, plot_w + right - left, 1.0, t.grid);
        let (values, vlo, vhi): (Vec<f64>, f64, f64) = if is_volume(&s.name) {
            let v: Vec<f64> = raw.iter().map(|b| b.v).collect();
            let m = v.iter().copied().fold(0.0, f64::max);
            (v, 0.0, m)
        } else {
            let r = rsi(&closes, study_length(&s.input));
            for band in [30.0, 70.0] {
                fill(&mut pm, left, y0 + 4.0 + (1.0 - band as f32 / 100.0) * (pane_h - 8.0), plot_w, 1.0, t.grid);
            }
            (r, 0.0, 100.0)
        };
        let y_in = |v: f64| y0 + 4.0 + ((vhi - v) / (vhi - vlo).max(1e-9)) as f32 * (pane_h - 8.0);
        let c = t.study[k % t.study.len()];
        if is_volume(&s.name) {
            for (i, v) in values.iter().enumerate() {
                let y = y_in(*v);
                let col = if raw[i].c >= raw[i].o { t.up } else { t.down };
                fill(&mut pm, x_of(i) - body_w / 2.0, y, body_w, y0 + pane_h - 4.0 - y, col);
            }
        } else {
            let pts: Vec<_> = values.iter().enumerate().map(|(i, v)| (x_of(i), y_in(*v))).collect();
            polyline(&mut pm, &pts, c, 1.5);
        }
        text(&mut pm, left as i32 + 4, y0 as i32 + 4, &s.name, 1, t.text);
    }

    // Time axis line, title, watermark.
    fill(&mut pm, left, top + plot_h, plot_w, 1.0, t.grid);
    text(&mut pm, left as i32, 7, &format!("{}, {}", req.symbol, req.interval), 2, t.text);
    if let Some(wm) = &req.watermark {
        let scale = 3;
        let tw = wm.chars().count() as i32 * 8 * scale;
        let c = color_bytes(t.grid);
        text(&mut pm, (w as i32 - tw) / 2, (h as i32 - 8 * scale) / 2, wm, scale, c);
    }
    Ok(pm)
}

fn is_overlay_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["moving average", "bollinger", "vwap", "ichimoku", "parabolic", "supertrend", "envelope", "keltner"]
        .iter()
        .any(|k| n.contains(k))
}

fn color_bytes(c: Color) -> [u8; 3] {
    let c = c.to_color_u8();
    [c.red(), c.green(), c.blue()]
}
