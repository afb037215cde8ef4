//! Deterministic chart images: candles (or the requested style) drawn with `tiny-skia` from a random walk seeded by
//! the symbol and interval, with the theme's colours, the symbol and interval written on top, and every study computed
//! from the drawn candles (`indicators`): overlays on the price pane, pane studies one pane each below it. Encoded as
//! PNG (`png`, fdeflate) or JPEG (`jpeg-encoder`).
//!
//! **Placement is an input**, never guessed from a name: a [`RenderRequest`] carries one [`StudySpec`] per study with
//! the study's natural [`Placement`] (the API spec's `placement`); `forceOverlay` moves a pane study onto the price
//! pane. The chart `override` options `showMainPane`, `priceRange {from, to, margin}` and `mainPaneHeight` shape the
//! layout.
//!
//! **Invariant:** the bytes depend only on the render request and the seed. The data generator is a hand-written
//! SplitMix64 fed by FNV-1a hashes rather than `rand`/`DefaultHasher`, because neither promises the same stream
//! across releases and a cassette or a snapshot must not change when a dependency is updated.

use font8x8::UnicodeFonts;
use tiny_skia::{Color, FillRule, Paint, PathBuilder, Pixmap, PremultipliedColorU8, Rect, Stroke, Transform};

use serde_json::{Map, Value};

use crate::{
    indicators::{compute, Candle, Mark, Plot},
    request::{ChartRequest, Study},
};

/// Where a study is drawn when the request does not say `forceOverlay`: the API spec's `placement` of the study.
pub use chart_img_spec::Placement;

/// One study to draw.
#[derive(Debug, Clone, PartialEq)]
pub struct StudySpec {
    /// The study's name from the supported list (`Relative Strength Index`); picks the indicator math.
    pub name: String,
    /// Its natural placement, from the spec.
    pub placement: Placement,
    /// `forceOverlay` of the request: a pane study drawn on the price pane (with a scale of its own).
    pub force_overlay: bool,
    /// Its `input` values by key (`length`, `in_0`…); a key left out takes TradingView's default.
    pub inputs: Map<String, Value>,
}

impl StudySpec {
    /// The spec of a request's study, at the placement the spec gives it (looked up when the request was validated).
    pub fn new(study: &Study) -> StudySpec {
        StudySpec {
            name: study.name.clone(),
            placement: study.placement,
            force_overlay: study.force_overlay,
            inputs: study.input.as_object().cloned().unwrap_or_default(),
        }
    }

    /// Drawn on the price pane?
    pub fn on_price_pane(&self) -> bool {
        self.force_overlay || self.placement == Placement::Overlay
    }
}

/// What the renderer draws: the chart (size, symbol, style, theme, `override`, drawings, watermark) and its studies
/// with their placement. `chart.studies` is not read; `studies` is, in order.
#[derive(Debug, Clone)]
pub struct RenderRequest {
    /// The normalized request.
    pub chart: ChartRequest,
    /// One entry per study to draw.
    pub studies: Vec<StudySpec>,
}

impl RenderRequest {
    /// The render request for `chart`, each study at its spec placement.
    pub fn new(chart: ChartRequest) -> RenderRequest {
        let studies = chart.studies.iter().map(StudySpec::new).collect();
        RenderRequest { chart, studies }
    }
}

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
pub fn render(req: &RenderRequest, seed: u64) -> Result<Vec<u8>, RenderError> {
    let pixmap = draw(req, seed)?;
    let (w, h) = (pixmap.width(), pixmap.height());
    // Every pixel is opaque, so premultiplied RGBA is plain RGBA; dropping alpha makes the files a quarter smaller.
    let mut rgb = Vec::with_capacity((w * h * 3) as usize);
    for px in pixmap.data().chunks_exact(4) {
        rgb.extend_from_slice(&px[..3]);
    }
    let mut out = Vec::with_capacity(64 * 1024);
    if req.chart.format == "jpeg" {
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
        writer
            .write_image_data(&rgb)
            .map_err(|e| RenderError::Encode(e.to_string()))?;
        writer.finish().map_err(|e| RenderError::Encode(e.to_string()))?;
    }
    // The image is kept (render cache, journal, thumbnails) in the allocation it was written to: without this, a
    // 17 KB chart held its whole 64 KiB buffer for as long as it was kept.
    out.shrink_to_fit();
    Ok(out)
}

struct Theme {
    bg: Color,
    grid: Color,
    text: [u8; 3],
    up: Color,
    down: Color,
    line: Color,
    study: [Color; 6],
}

/// Reference levels in study panes (RSI 30/70, MACD 0): the same mid grey on both themes.
fn level_colour() -> Color {
    rgb(0x78, 0x7B, 0x86)
}

/// Margins of the plot area: left, right (price scale), top (title), bottom (time axis).
const LEFT: f32 = 8.0;
const RIGHT: f32 = 72.0;
const TOP: f32 = 30.0;
const BOTTOM: f32 = 20.0;

/// Candles drawn on a chart `width` pixels wide (about 9 px each).
fn candle_count(width: u32) -> usize {
    (((width as f32 - LEFT - RIGHT) / 9.0) as usize).clamp(20, 400)
}

fn rgb(r: u8, g: u8, b: u8) -> Color {
    Color::from_rgba8(r, g, b, 255)
}

fn theme(name: &str) -> Theme {
    let study = [
        rgb(0x29, 0x62, 0xFF),
        rgb(0xFF, 0x98, 0x00),
        rgb(0x9C, 0x27, 0xB0),
        rgb(0x00, 0xBC, 0xD4),
        rgb(0xE9, 0x1E, 0x63),
        rgb(0x4C, 0xAF, 0x50),
    ];
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
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The series for a symbol and interval: the same pair always gives the same bars.
fn series(symbol: &str, interval: &str, seed: u64, n: usize) -> Vec<Candle> {
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
            Candle {
                o,
                h,
                l,
                c,
                v: 0.2 + rng.unit() * (1.0 + ((c - o).abs() / o) / vol),
            }
        })
        .collect()
}

fn heikin_ashi(bars: &[Candle]) -> Vec<Candle> {
    let mut out: Vec<Candle> = Vec::with_capacity(bars.len());
    for b in bars {
        let c = (b.o + b.h + b.l + b.c) / 4.0;
        let o = out.last().map_or((b.o + b.c) / 2.0, |p| (p.o + p.c) / 2.0);
        out.push(Candle {
            o,
            h: b.h.max(o).max(c),
            l: b.l.min(o).min(c),
            c,
            v: b.v,
        });
    }
    out
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
        let stroke = Stroke {
            width,
            ..Stroke::default()
        };
        pm.stroke_path(&path, &paint(c, true), &stroke, Transform::identity(), None);
    }
}

/// Writes `text` with the 8x8 VGA glyphs, `scale` pixels per glyph pixel, straight into the pixel buffer.
fn text(pm: &mut Pixmap, x: i32, y: i32, s: &str, scale: i32, color: [u8; 3]) {
    let (w, h) = (pm.width() as i32, pm.height() as i32);
    let px = PremultipliedColorU8::from_rgba(color[0], color[1], color[2], 255).expect("opaque colour");
    let pixels = pm.pixels_mut();
    for (i, ch) in s.chars().enumerate() {
        let glyph = font8x8::BASIC_FONTS
            .get(ch)
            .or_else(|| font8x8::BASIC_FONTS.get('?'))
            .unwrap_or([0; 8]);
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

/// The chart options of `override` the renderer honours.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Overrides {
    /// `showMainPane` (default true): false hides the price pane and everything drawn on it.
    show_main_pane: bool,
    /// `priceRange {from, to, margin?}`: the price scale, instead of fitting the candles.
    price_range: Option<(f64, f64)>,
    /// `priceRange.margin`: a fraction of the range added above and below.
    margin: f64,
    /// `mainPaneHeight`: the price pane's height in pixels when study panes share the chart.
    main_pane_height: Option<f32>,
}

fn number(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|x: &f64| x.is_finite())
}

fn overrides(v: &Value) -> Overrides {
    let range = v.get("priceRange");
    let from = number(range.and_then(|r| r.get("from")));
    let to = number(range.and_then(|r| r.get("to")));
    Overrides {
        show_main_pane: !matches!(v.get("showMainPane"), Some(Value::Bool(false))),
        price_range: match (from, to) {
            (Some(f), Some(t)) if f < t => Some((f, t)),
            _ => None,
        },
        margin: number(range.and_then(|r| r.get("margin")))
            .unwrap_or(0.0)
            .clamp(0.0, 0.5),
        main_pane_height: number(v.get("mainPaneHeight")).map(|h| h as f32),
    }
}

/// A horizontal band of the plot area.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Area {
    y0: f32,
    h: f32,
}

/// Smallest height a study pane is squeezed to when `mainPaneHeight` asks for most of the chart.
const MIN_PANE: f32 = 24.0;

/// The price pane (`None` when hidden) and the study panes, top to bottom, filling `plot`.
fn layout(plot: Area, o: &Overrides, panes: usize) -> (Option<Area>, Vec<Area>) {
    if !o.show_main_pane {
        let h = plot.h / panes.max(1) as f32;
        return (
            None,
            (0..panes)
                .map(|k| Area {
                    y0: plot.y0 + h * k as f32,
                    h,
                })
                .collect(),
        );
    }
    if panes == 0 {
        // One pane is the whole chart: `mainPaneHeight` only shares the height between the price and study panes.
        return (Some(plot), Vec::new());
    }
    let n = panes as f32;
    let price_h = match o.main_pane_height {
        Some(h) => h.clamp(MIN_PANE, (plot.h - MIN_PANE * n).max(MIN_PANE)),
        None => plot.h - (plot.h * 0.45 / n).min(plot.h * 0.22) * n,
    };
    let pane_h = (plot.h - price_h) / n;
    let panes = (0..panes)
        .map(|k| Area {
            y0: plot.y0 + price_h + pane_h * k as f32,
            h: pane_h,
        })
        .collect();
    (
        Some(Area {
            y0: plot.y0,
            h: price_h,
        }),
        panes,
    )
}

/// Values to pixels within an area, clamped to it (what is out of range sits on the edge, as if clipped).
#[derive(Debug, Clone, Copy)]
struct Scale {
    top: f32,
    bottom: f32,
    lo: f64,
    hi: f64,
}

impl Scale {
    fn new(area: Area, inset: f32, lo: f64, hi: f64) -> Scale {
        let (lo, hi) = if hi > lo { (lo, hi) } else { (lo - 1.0, lo + 1.0) };
        Scale {
            top: area.y0 + inset,
            bottom: area.y0 + area.h - inset,
            lo,
            hi,
        }
    }
    fn y(&self, v: f64) -> f32 {
        let f = ((self.hi - v) / (self.hi - self.lo)) as f32;
        (self.top + f * (self.bottom - self.top)).clamp(self.top, self.bottom)
    }
    fn contains(&self, v: f64) -> bool {
        v >= self.lo && v <= self.hi
    }
}

fn fmt_value(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}K", v / 1e3)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

/// Draws each defined stretch of `values` as a line (or dots).
fn plot_line(pm: &mut Pixmap, values: &[Option<f64>], x_of: &dyn Fn(usize) -> f32, sc: &Scale, c: Color, mark: Mark) {
    let mut run: Vec<(f32, f32)> = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        match v {
            Some(v) if mark == Mark::Dots => {
                if sc.contains(*v) {
                    fill(pm, x_of(i) - 1.0, sc.y(*v) - 1.0, 3.0, 3.0, c);
                }
            }
            // Outside a fixed price range the line is clipped, not drawn along the edge.
            Some(v) if sc.contains(*v) => run.push((x_of(i), sc.y(*v))),
            _ => {
                if run.len() > 1 {
                    polyline(pm, &run, c, 1.5);
                }
                run.clear();
            }
        }
    }
    if run.len() > 1 {
        polyline(pm, &run, c, 1.5);
    }
}

/// Translucent fill between two lines where both are defined.
fn plot_band(pm: &mut Pixmap, a: &[Option<f64>], b: &[Option<f64>], x_of: &dyn Fn(usize) -> f32, sc: &Scale, c: Color) {
    let idx: Vec<usize> = (0..a.len()).filter(|&i| a[i].is_some() && b[i].is_some()).collect();
    if idx.len() < 2 {
        return;
    }
    let mut pb = PathBuilder::new();
    for (k, &i) in idx.iter().enumerate() {
        let (x, y) = (x_of(i), sc.y(a[i].unwrap_or(0.0)));
        if k == 0 {
            pb.move_to(x, y)
        } else {
            pb.line_to(x, y)
        }
    }
    for &i in idx.iter().rev() {
        pb.line_to(x_of(i), sc.y(b[i].unwrap_or(0.0)));
    }
    pb.close();
    // Clamping both edges to the scale clips the band exactly; a band wholly outside the range has no area left
    // (and tiny-skia refuses to fill an empty path).
    if let Some(path) = pb.finish().filter(|p| p.bounds().height() >= 1.0) {
        let c = Color::from_rgba(c.red(), c.green(), c.blue(), 0.12).unwrap_or(c);
        pm.fill_path(&path, &paint(c, false), FillRule::Winding, Transform::identity(), None);
    }
}

fn translucent(c: Color, a: f32) -> Color {
    Color::from_rgba(c.red(), c.green(), c.blue(), a).unwrap_or(c)
}

fn draw(req: &RenderRequest, seed: u64) -> Result<Pixmap, RenderError> {
    let chart = &req.chart;
    let (w, h) = (chart.width, chart.height);
    let mut pm = Pixmap::new(w, h).ok_or(RenderError::Size(w, h))?;
    let t = theme(&chart.theme);
    pm.fill(t.bg);
    let o = overrides(&chart.override_);

    let (left, right, top, bottom) = (LEFT, RIGHT, TOP, BOTTOM);
    let plot_w = w as f32 - left - right;
    let plot_h = h as f32 - top - bottom;
    let n = candle_count(w);
    let raw = series(&chart.symbol, &chart.interval, seed, n);
    let bars = if chart.style == "heikinAshi" {
        heikin_ashi(&raw)
    } else {
        raw
    };
    let step = plot_w / n as f32;
    let x_of = |i: usize| left + step * (i as f32 + 0.5);
    let body_w = (step * 0.7).max(1.0);

    // Every study computed from the drawn candles, on the pane its placement (or `forceOverlay`) says.
    let plots: Vec<(usize, &StudySpec, Plot)> = req
        .studies
        .iter()
        .enumerate()
        .map(|(k, s)| (k, s, compute(&s.name, &s.inputs, &bars, s.on_price_pane())))
        .collect();
    let in_panes: Vec<&(usize, &StudySpec, Plot)> = plots.iter().filter(|(_, s, _)| !s.on_price_pane()).collect();
    let (price_area, pane_areas) = layout(Area { y0: top, h: plot_h }, &o, in_panes.len());
    // Each study's lines take the next colours of the palette, so two studies' lines differ while the palette lasts.
    let mut next = 0;
    let first_colour: Vec<usize> = plots
        .iter()
        .map(|(_, _, p)| {
            next += p.lines.len().max(1);
            next - p.lines.len().max(1)
        })
        .collect();
    let colour = |k: usize| t.study[k % t.study.len()];

    // Vertical grid over the whole plot.
    for k in 0..=8 {
        fill(&mut pm, left + plot_w * k as f32 / 8.0, top, 1.0, plot_h, t.grid);
    }

    if let Some(area) = price_area {
        // Studies drawn on the price scale: the overlays of the spec, not pane studies moved there by forceOverlay
        // (those keep a scale of their own) and not Volume (columns along the bottom).
        let on_price_scale = |s: &StudySpec, p: &Plot| s.placement == Placement::Overlay && p.volume.is_none();
        let (lo, hi) = match o.price_range {
            Some((f, to)) => {
                let pad = (to - f) * o.margin;
                (f - pad, to + pad)
            }
            None => {
                let mut lo = bars.iter().map(|b| b.l).fold(f64::MAX, f64::min);
                let mut hi = bars.iter().map(|b| b.h).fold(f64::MIN, f64::max);
                for (_, s, p) in &plots {
                    if s.on_price_pane() && on_price_scale(s, p) {
                        if let Some((a, b)) = p.extent() {
                            (lo, hi) = (lo.min(a), hi.max(b));
                        }
                    }
                }
                let pad = (hi - lo) * 0.08;
                (lo - pad, hi + pad)
            }
        };
        let sc = Scale::new(area, 0.0, lo, hi);

        // Price grid and scale.
        for k in 0..=5 {
            let p = lo + (hi - lo) * f64::from(k) / 5.0;
            let y = sc.y(p);
            fill(&mut pm, left, y, plot_w, 1.0, t.grid);
            // Labels stay inside the pane: a study pane's border below would cut the lowest one.
            let ty = (y as i32 - 4).clamp(area.y0 as i32 + 1, (area.y0 + area.h) as i32 - 9);
            text(&mut pm, (left + plot_w + 6.0) as i32, ty, &fmt_price(p), 1, t.text);
        }

        // Bands behind the candles, Volume columns along the bottom of the pane.
        for (k, s, p) in &plots {
            if !s.on_price_pane() {
                continue;
            }
            if let (Some((a, b)), true) = (p.band, on_price_scale(s, p)) {
                plot_band(
                    &mut pm,
                    &p.lines[a].values,
                    &p.lines[b].values,
                    &x_of,
                    &sc,
                    colour(first_colour[*k]),
                );
            }
            if let Some(vol) = &p.volume {
                let vmax = vol.iter().copied().fold(0.0, f64::max).max(f64::MIN_POSITIVE);
                for (i, v) in vol.iter().enumerate() {
                    let vh = (v / vmax) as f32 * area.h * 0.2;
                    let c = if bars[i].c >= bars[i].o { t.up } else { t.down };
                    let mut pt = paint(translucent(c, 0.35), false);
                    pt.blend_mode = tiny_skia::BlendMode::SourceOver;
                    if let Some(r) =
                        Rect::from_xywh(x_of(i) - step * 0.35, area.y0 + area.h - vh, step * 0.7, vh.max(1.0))
                    {
                        pm.fill_rect(r, &pt, Transform::identity(), None);
                    }
                }
            }
        }

        draw_price(&mut pm, &chart.style, &bars, &sc, &x_of, body_w, area, &t);

        // Study lines over the candles, with their names as a legend.
        let mut legend_y = area.y0 as i32 + 4;
        for (k, s, p) in &plots {
            if !s.on_price_pane() || p.volume.is_some() {
                continue;
            }
            // A pane study moved onto the price pane keeps its own scale over the pane's height.
            let own = if on_price_scale(s, p) {
                sc
            } else {
                let (a, b) = p.range.or(p.extent()).unwrap_or((0.0, 1.0));
                Scale::new(area, 4.0, a, b)
            };
            for line in &p.lines {
                plot_line(
                    &mut pm,
                    &line.values,
                    &x_of,
                    &own,
                    colour(first_colour[*k] + line.colour),
                    line.mark,
                );
            }
            text(
                &mut pm,
                left as i32 + 4,
                legend_y,
                &s.name,
                1,
                color_bytes(colour(first_colour[*k])),
            );
            legend_y += 11;
        }

        // Drawings: horizontal lines at their price, anything else as a trend line across the chart.
        for d in &chart.drawings {
            let c = t.study[1];
            if d.name.to_ascii_lowercase().contains("horizontal") {
                let price = d.input.get("price").and_then(|v| v.as_f64()).unwrap_or((lo + hi) / 2.0);
                if sc.contains(price) {
                    fill(&mut pm, left, sc.y(price), plot_w, 1.0, c);
                }
            } else {
                polyline(
                    &mut pm,
                    &[(x_of(n / 4), sc.y(bars[n / 4].l)), (x_of(n - 1), sc.y(bars[n - 1].h))],
                    c,
                    1.5,
                );
            }
        }
    }

    // Study panes: each on its own scale (fixed for bounded oscillators), with its reference levels.
    for ((k, s, p), area) in in_panes.iter().zip(&pane_areas) {
        let k = *k;
        fill(&mut pm, left, area.y0, plot_w + right - left, 1.0, t.grid);
        let (lo, hi) = match (p.range, p.extent()) {
            (Some(r), _) => r,
            // Volume columns stand on zero.
            (None, Some((_, b))) if p.volume.is_some() => (0.0, b * 1.05),
            (None, Some((a, b))) => {
                let pad = (b - a) * 0.05;
                (a - pad, b + pad)
            }
            (None, None) => (0.0, 1.0),
        };
        let sc = Scale::new(*area, 4.0, lo, hi);
        for level in &p.levels {
            let y = sc.y(*level);
            fill(&mut pm, left, y, plot_w, 1.0, level_colour());
            text(
                &mut pm,
                (left + plot_w + 6.0) as i32,
                y as i32 - 4,
                &fmt_value(*level),
                1,
                t.text,
            );
        }
        if p.levels.is_empty() {
            for v in [hi, lo] {
                text(
                    &mut pm,
                    (left + plot_w + 6.0) as i32,
                    sc.y(v) as i32 - 4,
                    &fmt_value(v),
                    1,
                    t.text,
                );
            }
        }
        if let Some(vol) = &p.volume {
            for (i, v) in vol.iter().enumerate() {
                let y = sc.y(*v);
                let c = if bars[i].c >= bars[i].o { t.up } else { t.down };
                fill(&mut pm, x_of(i) - body_w / 2.0, y, body_w, sc.y(0.0) - y, c);
            }
        }
        if let Some(hist) = &p.histogram {
            let zero = sc.y(0.0);
            for (i, v) in hist.iter().enumerate() {
                if let Some(v) = v {
                    let y = sc.y(*v);
                    let c = translucent(if *v >= 0.0 { t.up } else { t.down }, 0.6);
                    let mut pt = paint(c, false);
                    pt.blend_mode = tiny_skia::BlendMode::SourceOver;
                    if let Some(r) =
                        Rect::from_xywh(x_of(i) - body_w / 2.0, y.min(zero), body_w, (zero - y).abs().max(1.0))
                    {
                        pm.fill_rect(r, &pt, Transform::identity(), None);
                    }
                }
            }
        }
        if let Some((a, b)) = p.band {
            plot_band(
                &mut pm,
                &p.lines[a].values,
                &p.lines[b].values,
                &x_of,
                &sc,
                colour(first_colour[k]),
            );
        }
        for line in &p.lines {
            plot_line(
                &mut pm,
                &line.values,
                &x_of,
                &sc,
                colour(first_colour[k] + line.colour),
                line.mark,
            );
        }
        text(&mut pm, left as i32 + 4, area.y0 as i32 + 4, &s.name, 1, t.text);
    }

    // Time axis line, title, watermark.
    fill(&mut pm, left, top + plot_h, plot_w, 1.0, t.grid);
    text(
        &mut pm,
        left as i32,
        7,
        &format!("{}, {}", chart.symbol, chart.interval),
        2,
        t.text,
    );
    if let Some(wm) = chart.drawn_watermark() {
        let scale = 3;
        let tw = wm.chars().count() as i32 * 8 * scale;
        let c = color_bytes(t.grid);
        text(&mut pm, (w as i32 - tw) / 2, (h as i32 - 8 * scale) / 2, wm, scale, c);
    }
    Ok(pm)
}

/// The candles (or line, area, …) of the requested style on the price scale.
#[allow(clippy::too_many_arguments)]
fn draw_price(
    pm: &mut Pixmap,
    style: &str,
    bars: &[Candle],
    sc: &Scale,
    x_of: &dyn Fn(usize) -> f32,
    body_w: f32,
    area: Area,
    t: &Theme,
) {
    let (left, bottom) = (LEFT, area.y0 + area.h);
    let plot_w = pm.width() as f32 - LEFT - RIGHT;
    match style {
        "line" | "area" | "baseline" => {
            let pts: Vec<_> = bars.iter().enumerate().map(|(i, b)| (x_of(i), sc.y(b.c))).collect();
            if style == "area" {
                let mut pb = PathBuilder::new();
                pb.move_to(pts[0].0, bottom);
                for (x, y) in &pts {
                    pb.line_to(*x, *y);
                }
                pb.line_to(pts[pts.len() - 1].0, bottom);
                pb.close();
                if let Some(path) = pb.finish() {
                    // No anti-aliasing on the fill: it is the slowest part of the area style, and the
                    // anti-aliased line drawn over it hides the edge anyway.
                    pm.fill_path(
                        &path,
                        &paint(translucent(t.line, 0.25), false),
                        FillRule::Winding,
                        Transform::identity(),
                        None,
                    );
                }
            }
            if style == "baseline" {
                let base_y = sc.y(bars[0].c);
                fill(pm, left, base_y, plot_w, 1.0, t.grid);
                for (i, win) in pts.windows(2).enumerate() {
                    let c = if bars[i + 1].c >= bars[0].c { t.up } else { t.down };
                    polyline(pm, win, c, 2.0);
                }
            } else {
                polyline(pm, &pts, t.line, 2.0);
            }
        }
        "column" => {
            for (i, b) in bars.iter().enumerate() {
                let c = if b.c >= b.o { t.up } else { t.down };
                let y = sc.y(b.c);
                if y < bottom {
                    fill(pm, x_of(i) - body_w / 2.0, y, body_w, bottom - y, c);
                }
            }
        }
        style => {
            for (i, b) in bars.iter().enumerate() {
                // Entirely above or below a fixed price range: not drawn (clipped).
                if b.l > sc.hi || b.h < sc.lo {
                    continue;
                }
                let up = b.c >= b.o;
                let c = if up { t.up } else { t.down };
                let x = x_of(i);
                let (yo, yc, yh, yl) = (sc.y(b.o), sc.y(b.c), sc.y(b.h), sc.y(b.l));
                match style {
                    "bar" => {
                        fill(pm, x, yh, 1.0, yl - yh, c);
                        fill(pm, x - body_w / 2.0, yo, body_w / 2.0, 1.0, c);
                        fill(pm, x, yc, body_w / 2.0, 1.0, c);
                    }
                    "hiLo" => fill(pm, x - body_w / 2.0, yh, body_w, yl - yh, c),
                    _ => {
                        // candle, hollowCandle, heikinAshi
                        fill(pm, x, yh, 1.0, yl - yh, c);
                        let (y0, y1) = (yo.min(yc), yo.max(yc));
                        if style == "hollowCandle" && up {
                            fill(pm, x - body_w / 2.0, y0, body_w, y1 - y0, t.bg);
                            fill(pm, x - body_w / 2.0, y0, body_w, 1.0, c);
                            fill(pm, x - body_w / 2.0, y1, body_w, 1.0, c);
                            fill(pm, x - body_w / 2.0, y0, 1.0, y1 - y0, c);
                            fill(pm, x + body_w / 2.0 - 1.0, y0, 1.0, y1 - y0, c);
                        } else {
                            fill(pm, x - body_w / 2.0, y0, body_w, y1 - y0, c);
                        }
                    }
                }
            }
        }
    }
}

fn color_bytes(c: Color) -> [u8; 3] {
    let c = c.to_color_u8();
    [c.red(), c.green(), c.blue()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const W: u32 = 800;
    const H: u32 = 600;
    // 800x600: the plot area is rows 30..580.
    const PLOT_TOP: u32 = 30;
    const PLOT_BOTTOM: u32 = 580;
    const BLUE: [u8; 3] = [0x29, 0x62, 0xFF];
    const ORANGE: [u8; 3] = [0xFF, 0x98, 0x00];
    const UP: [u8; 3] = [0x08, 0x99, 0x81];
    const DOWN: [u8; 3] = [0xF2, 0x36, 0x45];
    const GRID_LIGHT: [u8; 3] = [0xF0, 0xF3, 0xFA];
    const LEVEL_RGB: [u8; 3] = [0x78, 0x7B, 0x86];

    /// A render request; `placements` gives each study's placement (what the spec says, or the opposite on purpose).
    fn request(mut body: Value, studies: &[(&str, Placement)]) -> RenderRequest {
        body["studies"] = studies.iter().map(|(n, _)| json!({ "name": n })).collect();
        let chart = crate::request::validate(body.as_object().unwrap()).unwrap();
        let mut req = RenderRequest::new(chart);
        for (spec, (_, placement)) in req.studies.iter_mut().zip(studies) {
            spec.placement = *placement;
        }
        req
    }

    fn pixels(req: &RenderRequest) -> Pixmap {
        draw(req, 7).unwrap()
    }

    fn rgb_at(pm: &Pixmap, x: u32, y: u32) -> [u8; 3] {
        let p = pm.pixel(x, y).unwrap();
        [p.red(), p.green(), p.blue()]
    }

    /// Pixels of exactly `colour` in rows `rows` (the plot columns only, not the scale on the right).
    fn count(pm: &Pixmap, rows: std::ops::Range<u32>, colour: [u8; 3]) -> usize {
        rows.flat_map(|y| (LEFT as u32..W - RIGHT as u32).map(move |x| (x, y)))
            .filter(|&(x, y)| rgb_at(pm, x, y) == colour)
            .count()
    }

    fn candle_rows(pm: &Pixmap) -> Vec<u32> {
        (0..H)
            .filter(|&y| count(pm, y..y + 1, UP) + count(pm, y..y + 1, DOWN) > 0)
            .collect()
    }

    #[test]
    fn same_request_same_bytes() {
        let body = json!({ "symbol": "NASDAQ:AAPL", "interval": "1D", "theme": "dark" });
        let studies = [
            ("Bollinger Bands", Placement::Overlay),
            ("Parabolic SAR", Placement::Overlay),
            ("MACD", Placement::Pane),
            ("Relative Strength Index", Placement::Pane),
            ("Volume", Placement::Pane),
        ];
        let a = render(&request(body.clone(), &studies), 1).unwrap();
        assert_eq!(a, render(&request(body.clone(), &studies), 1).unwrap());
        assert_ne!(
            a,
            render(&request(body.clone(), &studies), 2).unwrap(),
            "another seed, another chart"
        );
        assert_ne!(
            a,
            render(&request(body, &studies[..4]), 1).unwrap(),
            "one study less, another chart"
        );
    }

    #[test]
    fn placement_comes_from_the_request_not_from_the_name() {
        // Super Trend is an overlay in the spec, Bollinger Bands %B a pane study; the renderer draws each where it is
        // told, whatever its name suggests.
        let body = json!({ "override": { "mainPaneHeight": 300 } });
        let price = PLOT_TOP..PLOT_TOP + 300;
        let pane = PLOT_TOP + 302..PLOT_BOTTOM;
        for name in ["Super Trend", "Bollinger Bands %B", "Moving Average"] {
            let over = pixels(&request(body.clone(), &[(name, Placement::Overlay)]));
            assert!(
                count(&over, PLOT_TOP..PLOT_BOTTOM, BLUE) > 50,
                "{name} as overlay: line on the price pane"
            );
            // No pane: no pane border running into the scale column.
            let border = (W - 70..W - 8)
                .filter(|&x| rgb_at(&over, x, PLOT_TOP + 300) == GRID_LIGHT)
                .count();
            assert!(border < 30, "{name} as overlay: no pane");

            let in_pane = pixels(&request(body.clone(), &[(name, Placement::Pane)]));
            assert!(
                count(&in_pane, pane.clone(), BLUE) > 50,
                "{name} in a pane: line in the pane"
            );
            assert_eq!(
                count(&in_pane, price.clone(), BLUE),
                0,
                "{name} in a pane: nothing of it on the price pane"
            );
            assert!(
                candle_rows(&in_pane).iter().all(|&y| y < PLOT_TOP + 300),
                "{name}: candles stay above the pane"
            );
        }
        // forceOverlay moves a pane study onto the price pane.
        let mut forced = request(body, &[("Relative Strength Index", Placement::Pane)]);
        forced.studies[0].force_overlay = true;
        let pm = pixels(&forced);
        assert!(count(&pm, price, BLUE) > 50 && candle_rows(&pm).iter().any(|&y| y > PLOT_TOP + 320));
    }

    #[test]
    fn rsi_pane_has_its_30_70_levels_and_stays_inside() {
        let pm = pixels(&request(
            json!({ "override": { "mainPaneHeight": 300 } }),
            &[("Relative Strength Index", Placement::Pane)],
        ));
        // Pane rows 330..580, scale inset 4 px: 100 at row 334, 0 at row 576.
        let level_row = |v: f32| (334.0 + (100.0 - v) / 100.0 * 242.0) as u32;
        for level in [30.0, 70.0] {
            let y = level_row(level);
            let on_row = (y - 1..y + 2).map(|r| count(&pm, r..r + 1, LEVEL_RGB)).max().unwrap();
            assert!(on_row > 600, "{level} line across the pane ({on_row} px at row {y})");
        }
        // The RSI line (blue) is drawn, and only inside the pane's scale (anti-aliasing may bleed one row).
        assert!(count(&pm, 333..578, BLUE) > 100);
        assert_eq!(count(&pm, PLOT_TOP..332, BLUE) + count(&pm, 578..H, BLUE), 0);
    }

    #[test]
    fn macd_draws_line_signal_and_histogram() {
        let pm = pixels(&request(
            json!({ "override": { "mainPaneHeight": 300 } }),
            &[("MACD", Placement::Pane)],
        ));
        let pane = 331..PLOT_BOTTOM;
        assert!(count(&pm, pane.clone(), BLUE) > 50, "MACD line");
        assert!(count(&pm, pane.clone(), ORANGE) > 50, "signal line");
        // Histogram columns: up/down colours at 60 % over the white background.
        let blend = |c: [u8; 3]| c.map(|v| (f32::from(v) * 0.6 + 255.0 * 0.4).round() as u8);
        let near = |a: [u8; 3], b: [u8; 3]| a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= 2);
        let hist = pane
            .flat_map(|y| (LEFT as u32..W - RIGHT as u32).map(move |x| (x, y)))
            .filter(|&(x, y)| near(rgb_at(&pm, x, y), blend(UP)) || near(rgb_at(&pm, x, y), blend(DOWN)))
            .count();
        assert!(hist > 200, "histogram columns ({hist} px)");
    }

    #[test]
    fn volume_in_its_pane_or_along_the_price_pane() {
        let body = json!({ "override": { "mainPaneHeight": 300 } });
        let pm = pixels(&request(body.clone(), &[("Volume", Placement::Pane)]));
        assert!(
            count(&pm, 331..PLOT_BOTTOM, UP) + count(&pm, 331..PLOT_BOTTOM, DOWN) > 1000,
            "volume columns in the pane"
        );
        let mut forced = request(body, &[("Volume", Placement::Pane)]);
        forced.studies[0].force_overlay = true;
        assert!(
            candle_rows(&pixels(&forced)).iter().any(|&y| y > PLOT_TOP + 320),
            "no pane when forced onto the price"
        );
    }

    #[test]
    fn main_pane_height_sets_the_pane_split() {
        for main in [150u32, 300, 420] {
            let pm = pixels(&request(
                json!({ "override": { "mainPaneHeight": main } }),
                &[("Relative Strength Index", Placement::Pane)],
            ));
            let y = PLOT_TOP + main;
            // The pane's top border runs into the scale column; the price grid lines stop at the plot's edge.
            assert_eq!(rgb_at(&pm, W - 20, y), GRID_LIGHT, "border at row {y}");
            let rows = candle_rows(&pm);
            assert!(
                rows.iter().all(|&r| r < y) && rows.iter().any(|&r| r + 40 > y),
                "candles fill the {main} px pane"
            );
        }
        // Without a study pane, the price pane is the whole chart whatever mainPaneHeight says.
        let pm = pixels(&request(json!({ "override": { "mainPaneHeight": 150 } }), &[]));
        assert!(candle_rows(&pm).iter().any(|&r| r > PLOT_TOP + 400));
    }

    #[test]
    fn show_main_pane_false_leaves_only_the_study_panes() {
        let pm = pixels(&request(
            json!({ "override": { "showMainPane": false } }),
            &[
                ("Relative Strength Index", Placement::Pane),
                ("Moving Average", Placement::Overlay),
            ],
        ));
        assert!(candle_rows(&pm).is_empty(), "no candles");
        // The RSI pane fills the plot: rows 30..580, inset 4 → the 70 line at 34 + 0.3 × 542.
        let y = (34.0 + 0.3 * 542.0) as u32;
        assert!((y - 1..y + 2).map(|r| count(&pm, r..r + 1, LEVEL_RGB)).max().unwrap() > 600);
        // The moving average belongs to the hidden price pane; the only orange is the RSI's own average.
        let shown = pixels(&request(json!({}), &[("Relative Strength Index", Placement::Pane)]));
        assert!(!candle_rows(&shown).is_empty());
    }

    #[test]
    fn price_range_sets_the_price_scale() {
        let body = json!({ "symbol": "BINANCE:ETHUSDT", "interval": "4h" });
        let bars = series("BINANCE:ETHUSDT", "4h", 7, candle_count(W));
        let lo = bars.iter().map(|b| b.l).fold(f64::MAX, f64::min);
        let hi = bars.iter().map(|b| b.h).fold(f64::MIN, f64::max);
        let mut exact = body.clone();
        exact["override"] = json!({ "priceRange": { "from": lo, "to": hi } });
        let rows = candle_rows(&pixels(&request(exact, &[])));
        // The lowest low and the highest high touch the edges of the plot.
        assert!(
            rows.first().unwrap().abs_diff(PLOT_TOP) <= 1 && rows.last().unwrap().abs_diff(PLOT_BOTTOM) <= 1,
            "{rows:?}"
        );
        // Autoscale leaves a margin.
        let auto = candle_rows(&pixels(&request(body.clone(), &[])));
        assert!(*auto.first().unwrap() > PLOT_TOP + 20 && *auto.last().unwrap() < PLOT_BOTTOM - 20);
        // A range above every candle shows none of them.
        let mut above = body.clone();
        above["override"] = json!({ "priceRange": { "from": hi * 2.0, "to": hi * 3.0 } });
        assert!(candle_rows(&pixels(&request(above, &[]))).is_empty());
        // A margin of 0.1 puts the extremes a tenth of the range (over 1.2 ranges of height) inside the edges.
        let mut margin = body;
        margin["override"] = json!({ "priceRange": { "from": lo, "to": hi, "margin": 0.1 } });
        let rows = candle_rows(&pixels(&request(margin, &[])));
        let inset = (550.0 * 0.1 / 1.2) as u32;
        assert!(rows.first().unwrap().abs_diff(PLOT_TOP + inset) <= 2, "{rows:?}");
    }
}
