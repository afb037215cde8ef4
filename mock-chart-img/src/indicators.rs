//! Indicator math for the chart images: every study is computed from the candles that are drawn, so an RSI pane
//! shows the RSI of those candles and a Bollinger band hugs them.
//!
//! Conventions (those of TradingView's built-ins, so a chart reads as a trader expects):
//! - a series is one `Option<f64>` per candle; `None` while the indicator warms up (a 20-bar average has no value on
//!   the first 19 candles: only drawn candles count, nothing is computed from history the image does not show);
//! - EMA and Wilder's RMA start from the simple average of their first `n` values;
//! - standard deviations are population deviations (Bollinger's definition);
//! - RSI is Wilder's: RMA of gains and losses, 100 when there is no loss, 0 when there is no gain.
//!
//! Which indicator a study gets depends on its name (the math of `MACD` is MACD's), but *where* it is drawn does
//! not: placement is an input of the renderer (see `render::StudySpec`).

use serde_json::{Map, Value};

/// One candle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Candle {
    pub o: f64,
    pub h: f64,
    pub l: f64,
    pub c: f64,
    pub v: f64,
}

/// One value per candle, `None` while warming up.
pub(crate) type Series = Vec<Option<f64>>;

fn none(n: usize) -> Series {
    vec![None; n]
}

/// Simple moving average.
pub(crate) fn sma(v: &[f64], n: usize) -> Series {
    let mut out = none(v.len());
    if n == 0 || n > v.len() {
        return out;
    }
    let mut sum: f64 = v[..n - 1].iter().sum();
    for i in n - 1..v.len() {
        sum += v[i];
        out[i] = Some(sum / n as f64);
        sum -= v[i + 1 - n];
    }
    out
}

/// Exponential average with smoothing `alpha`, started from the SMA of the first `n` values.
fn smoothed(v: &[f64], n: usize, alpha: f64) -> Series {
    let mut out = none(v.len());
    if n == 0 || n > v.len() {
        return out;
    }
    let mut prev = v[..n].iter().sum::<f64>() / n as f64;
    out[n - 1] = Some(prev);
    for i in n..v.len() {
        prev = alpha * v[i] + (1.0 - alpha) * prev;
        out[i] = Some(prev);
    }
    out
}

/// Exponential moving average (`alpha = 2 / (n + 1)`).
pub(crate) fn ema(v: &[f64], n: usize) -> Series {
    smoothed(v, n, 2.0 / (n as f64 + 1.0))
}

/// Wilder's smoothed average (`alpha = 1 / n`), TradingView's `rma` and "Smoothed Moving Average".
pub(crate) fn rma(v: &[f64], n: usize) -> Series {
    smoothed(v, n, 1.0 / n.max(1) as f64)
}

/// Weighted average over `n` values with the given weights (oldest first).
fn weighted(v: &[f64], weights: &[f64]) -> Series {
    let n = weights.len();
    let mut out = none(v.len());
    if n == 0 || n > v.len() {
        return out;
    }
    let total: f64 = weights.iter().sum();
    for i in n - 1..v.len() {
        let s: f64 = v[i + 1 - n..=i].iter().zip(weights).map(|(x, w)| x * w).sum();
        out[i] = Some(s / total);
    }
    out
}

/// Linearly weighted moving average (weights 1..n, newest heaviest).
pub(crate) fn wma(v: &[f64], n: usize) -> Series {
    let w: Vec<f64> = (1..=n).map(|k| k as f64).collect();
    weighted(v, &w)
}

/// A series op on a partly defined series: `f` runs on the defined tail (a series is `None` only at its start).
fn on_defined(s: &Series, f: impl Fn(&[f64]) -> Series) -> Series {
    let start = s.iter().position(Option::is_some).unwrap_or(s.len());
    let vals: Vec<f64> = s[start..].iter().map(|x| x.unwrap_or(0.0)).collect();
    let mut out = none(start);
    out.extend(f(&vals));
    out
}

fn zip(a: &Series, b: &Series, f: impl Fn(f64, f64) -> f64) -> Series {
    a.iter().zip(b).map(|(x, y)| Some(f((*x)?, (*y)?))).collect()
}

fn map(a: &Series, f: impl Fn(f64) -> f64) -> Series {
    a.iter().map(|x| x.map(&f)).collect()
}

/// Population standard deviation over `n` values.
pub(crate) fn stdev(v: &[f64], n: usize) -> Series {
    let mean = sma(v, n);
    (0..v.len())
        .map(|i| {
            let m = mean[i]?;
            Some((v[i + 1 - n..=i].iter().map(|x| (x - m).powi(2)).sum::<f64>() / n as f64).sqrt())
        })
        .collect()
}

/// Wilder's RSI of `v` over `n` changes; bounded to 0..=100 by construction.
pub(crate) fn rsi(v: &[f64], n: usize) -> Series {
    let mut out = none(v.len());
    if v.len() < 2 || n == 0 {
        return out;
    }
    let gains: Vec<f64> = v.windows(2).map(|w| (w[1] - w[0]).max(0.0)).collect();
    let losses: Vec<f64> = v.windows(2).map(|w| (w[0] - w[1]).max(0.0)).collect();
    let (up, down) = (rma(&gains, n), rma(&losses, n));
    for i in 0..gains.len() {
        if let (Some(u), Some(d)) = (up[i], down[i]) {
            let r = if d == 0.0 {
                if u == 0.0 {
                    50.0
                } else {
                    100.0
                }
            } else if u == 0.0 {
                0.0
            } else {
                100.0 - 100.0 / (1.0 + u / d)
            };
            out[i + 1] = Some(r.clamp(0.0, 100.0));
        }
    }
    out
}

/// MACD: (EMA(fast) − EMA(slow), its EMA(signal), their difference).
pub(crate) fn macd(v: &[f64], fast: usize, slow: usize, signal: usize) -> (Series, Series, Series) {
    let line = zip(&ema(v, fast), &ema(v, slow), |a, b| a - b);
    let sig = on_defined(&line, |x| ema(x, signal));
    let hist = zip(&line, &sig, |a, b| a - b);
    (line, sig, hist)
}

/// Bollinger Bands: (basis SMA, upper, lower) at `mult` standard deviations.
pub(crate) fn bollinger(v: &[f64], n: usize, mult: f64) -> (Series, Series, Series) {
    let basis = sma(v, n);
    let dev = stdev(v, n);
    (
        basis.clone(),
        zip(&basis, &dev, |b, d| b + mult * d),
        zip(&basis, &dev, |b, d| b - mult * d),
    )
}

/// True range: high − low on the first candle, then the widest of that and the gaps to the previous close.
pub(crate) fn true_range(bars: &[Candle]) -> Vec<f64> {
    bars.iter()
        .enumerate()
        .map(|(i, b)| match i.checked_sub(1).map(|p| bars[p].c) {
            None => b.h - b.l,
            Some(pc) => (b.h - b.l).max((b.h - pc).abs()).max((b.l - pc).abs()),
        })
        .collect()
}

/// Keltner Channels: EMA(close) ± `mult` × EMA(true range, or high − low).
pub(crate) fn keltner(bars: &[Candle], n: usize, mult: f64, use_true_range: bool) -> (Series, Series, Series) {
    let closes: Vec<f64> = bars.iter().map(|b| b.c).collect();
    let range: Vec<f64> = if use_true_range {
        true_range(bars)
    } else {
        bars.iter().map(|b| b.h - b.l).collect()
    };
    let basis = ema(&closes, n);
    let r = ema(&range, n);
    (
        basis.clone(),
        zip(&basis, &r, |b, r| b + mult * r),
        zip(&basis, &r, |b, r| b - mult * r),
    )
}

fn rolling(v: &[f64], n: usize, f: fn(f64, f64) -> f64) -> Series {
    (0..v.len())
        .map(|i| (n > 0 && i + 1 >= n).then(|| v[i + 1 - n..=i].iter().copied().reduce(f).unwrap_or(0.0)))
        .collect()
}

/// Highest value over `n`.
pub(crate) fn highest(v: &[f64], n: usize) -> Series {
    rolling(v, n, f64::max)
}

/// Lowest value over `n`.
pub(crate) fn lowest(v: &[f64], n: usize) -> Series {
    rolling(v, n, f64::min)
}

/// Donchian Channels: (middle, highest high, lowest low) over `n`.
pub(crate) fn donchian(bars: &[Candle], n: usize) -> (Series, Series, Series) {
    let hi = highest(&bars.iter().map(|b| b.h).collect::<Vec<_>>(), n);
    let lo = lowest(&bars.iter().map(|b| b.l).collect::<Vec<_>>(), n);
    (zip(&hi, &lo, |a, b| (a + b) / 2.0), hi, lo)
}

/// Least-squares line over `n` values, evaluated at the newest one (+ `offset` bars back).
pub(crate) fn linreg(v: &[f64], n: usize, offset: f64) -> Series {
    (0..v.len())
        .map(|i| {
            if n < 2 || i + 1 < n {
                return None;
            }
            let w = &v[i + 1 - n..=i];
            let nf = n as f64;
            let mx = (nf - 1.0) / 2.0;
            let my = w.iter().sum::<f64>() / nf;
            let (mut sxy, mut sxx) = (0.0, 0.0);
            for (k, y) in w.iter().enumerate() {
                let dx = k as f64 - mx;
                sxy += dx * (y - my);
                sxx += dx * dx;
            }
            let slope = sxy / sxx;
            Some(my + slope * (nf - 1.0 - offset - mx))
        })
        .collect()
}

fn hma(v: &[f64], n: usize) -> Series {
    let half = wma(v, (n / 2).max(1));
    let full = wma(v, n);
    let raw = zip(&half, &full, |a, b| 2.0 * a - b);
    on_defined(&raw, |x| wma(x, ((n as f64).sqrt().floor() as usize).max(1)))
}

fn dema(v: &[f64], n: usize) -> Series {
    let e1 = ema(v, n);
    let e2 = on_defined(&e1, |x| ema(x, n));
    zip(&e1, &e2, |a, b| 2.0 * a - b)
}

fn tema(v: &[f64], n: usize) -> Series {
    let e1 = ema(v, n);
    let e2 = on_defined(&e1, |x| ema(x, n));
    let e3 = on_defined(&e2, |x| ema(x, n));
    zip(&zip(&e1, &e2, |a, b| 3.0 * (a - b)), &e3, |a, c| a + c)
}

fn vwma(bars: &[Candle], n: usize) -> Series {
    let pv: Vec<f64> = bars.iter().map(|b| b.c * b.v).collect();
    let vol: Vec<f64> = bars.iter().map(|b| b.v).collect();
    zip(&sma(&pv, n), &sma(&vol, n), |a, b| if b == 0.0 { a } else { a / b })
}

fn alma(v: &[f64], n: usize, offset: f64, sigma: f64) -> Series {
    let m = offset * (n as f64 - 1.0);
    let s = n as f64 / sigma.max(1e-9);
    let w: Vec<f64> = (0..n)
        .map(|k| (-((k as f64 - m).powi(2)) / (2.0 * s * s)).exp())
        .collect();
    weighted(v, &w)
}

fn hamming(v: &[f64], n: usize) -> Series {
    let w: Vec<f64> = (0..n)
        .map(|k| {
            if n == 1 {
                1.0
            } else {
                0.54 - 0.46 * (2.0 * std::f64::consts::PI * k as f64 / (n as f64 - 1.0)).cos()
            }
        })
        .collect();
    weighted(v, &w)
}

fn mcginley(v: &[f64], n: usize) -> Series {
    let mut out = none(v.len());
    let Some(first) = v.first() else { return out };
    let mut md = *first;
    for (i, x) in v.iter().enumerate() {
        if i > 0 && md != 0.0 {
            md += (x - md) / (n as f64 * (x / md).powi(4)).max(1e-9);
        }
        if i + 1 >= n {
            out[i] = Some(md);
        }
    }
    out
}

/// Kaufman's adaptive average (fast 2, slow 30).
fn kama(v: &[f64], n: usize) -> Series {
    let mut out = none(v.len());
    if n == 0 || n >= v.len() {
        return out;
    }
    let (fast, slow) = (2.0 / 3.0, 2.0 / 31.0);
    let mut k = v[n - 1];
    out[n - 1] = Some(k);
    for i in n..v.len() {
        let change = (v[i] - v[i - n]).abs();
        let noise: f64 = (i + 1 - n..=i).map(|j| (v[j] - v[j - 1]).abs()).sum();
        let er = if noise == 0.0 { 0.0 } else { change / noise };
        let sc = (er * (fast - slow) + slow).powi(2);
        k += sc * (v[i] - k);
        out[i] = Some(k);
    }
    out
}

/// VWAP from the first drawn candle (typical price weighted by volume).
fn vwap(bars: &[Candle]) -> Series {
    let (mut pv, mut vol) = (0.0, 0.0);
    bars.iter()
        .map(|b| {
            pv += (b.h + b.l + b.c) / 3.0 * b.v;
            vol += b.v;
            Some(if vol == 0.0 { b.c } else { pv / vol })
        })
        .collect()
}

/// Parabolic SAR (`start`, `step`, `max` acceleration).
pub(crate) fn psar(bars: &[Candle], start: f64, step: f64, max: f64) -> Series {
    let mut out = none(bars.len());
    if bars.len() < 2 {
        return out;
    }
    let mut long = bars[1].c >= bars[0].c;
    let mut sar = if long { bars[0].l } else { bars[0].h };
    let mut ep = if long {
        bars[1].h.max(bars[0].h)
    } else {
        bars[1].l.min(bars[0].l)
    };
    let mut af = start;
    for i in 1..bars.len() {
        let b = bars[i];
        sar += af * (ep - sar);
        if long {
            sar = sar
                .min(bars[i - 1].l)
                .min(if i >= 2 { bars[i - 2].l } else { bars[i - 1].l });
            if b.l < sar {
                long = false;
                sar = ep;
                ep = b.l;
                af = start;
            } else if b.h > ep {
                ep = b.h;
                af = (af + step).min(max);
            }
        } else {
            sar = sar
                .max(bars[i - 1].h)
                .max(if i >= 2 { bars[i - 2].h } else { bars[i - 1].h });
            if b.h > sar {
                long = true;
                sar = ep;
                ep = b.h;
                af = start;
            } else if b.l < ep {
                ep = b.l;
                af = (af + step).min(max);
            }
        }
        out[i] = Some(sar);
    }
    out
}

/// Super Trend (ATR `n`, `factor`): the trailing stop, below the price in an up trend and above it in a down trend.
pub(crate) fn supertrend(bars: &[Candle], n: usize, factor: f64) -> (Series, Series) {
    let atr = rma(&true_range(bars), n);
    let (mut up_line, mut down_line) = (none(bars.len()), none(bars.len()));
    let (mut upper, mut lower, mut trend_up) = (f64::MAX, f64::MIN, true);
    for (i, b) in bars.iter().enumerate() {
        let Some(a) = atr[i] else { continue };
        let mid = (b.h + b.l) / 2.0;
        let prev_c = if i > 0 { bars[i - 1].c } else { b.c };
        let (bu, bl) = (mid + factor * a, mid - factor * a);
        upper = if bu < upper || prev_c > upper { bu } else { upper };
        lower = if bl > lower || prev_c < lower { bl } else { lower };
        if trend_up && b.c < lower {
            trend_up = false;
        } else if !trend_up && b.c > upper {
            trend_up = true;
        }
        if trend_up {
            up_line[i] = Some(lower);
        } else {
            down_line[i] = Some(upper);
        }
    }
    (up_line, down_line)
}

fn stochastic(bars: &[Candle], n: usize, smooth_k: usize, smooth_d: usize) -> (Series, Series) {
    let hi = highest(&bars.iter().map(|b| b.h).collect::<Vec<_>>(), n);
    let lo = lowest(&bars.iter().map(|b| b.l).collect::<Vec<_>>(), n);
    let raw: Series = (0..bars.len())
        .map(|i| {
            let (h, l) = (hi[i]?, lo[i]?);
            Some(if h == l {
                50.0
            } else {
                100.0 * (bars[i].c - l) / (h - l)
            })
        })
        .collect();
    // Rolling sums can land a rounding error outside 0..=100.
    let k = map(&on_defined(&raw, |x| sma(x, smooth_k.max(1))), |x| x.clamp(0.0, 100.0));
    let d = map(&on_defined(&k, |x| sma(x, smooth_d.max(1))), |x| x.clamp(0.0, 100.0));
    (k, d)
}

fn cci(bars: &[Candle], n: usize) -> Series {
    let tp: Vec<f64> = bars.iter().map(|b| (b.h + b.l + b.c) / 3.0).collect();
    let mean = sma(&tp, n);
    (0..tp.len())
        .map(|i| {
            let m = mean[i]?;
            let md = tp[i + 1 - n..=i].iter().map(|x| (x - m).abs()).sum::<f64>() / n as f64;
            Some(if md == 0.0 { 0.0 } else { (tp[i] - m) / (0.015 * md) })
        })
        .collect()
}

fn mfi(bars: &[Candle], n: usize) -> Series {
    let tp: Vec<f64> = bars.iter().map(|b| (b.h + b.l + b.c) / 3.0).collect();
    (0..bars.len())
        .map(|i| {
            if n == 0 || i < n {
                return None;
            }
            let (mut pos, mut neg) = (0.0, 0.0);
            for j in i + 1 - n..=i {
                let flow = tp[j] * bars[j].v;
                if tp[j] > tp[j - 1] {
                    pos += flow;
                } else if tp[j] < tp[j - 1] {
                    neg += flow;
                }
            }
            Some(if neg == 0.0 {
                100.0
            } else {
                100.0 - 100.0 / (1.0 + pos / neg)
            })
        })
        .collect()
}

fn obv(bars: &[Candle]) -> Series {
    let mut acc = 0.0;
    bars.iter()
        .enumerate()
        .map(|(i, b)| {
            if i > 0 {
                let pc = bars[i - 1].c;
                acc += if b.c > pc {
                    b.v
                } else if b.c < pc {
                    -b.v
                } else {
                    0.0
                };
            }
            Some(acc)
        })
        .collect()
}

fn shifted(s: Series, by: usize) -> Series {
    let n = s.len();
    let mut out = none(by.min(n));
    out.extend(s.into_iter().take(n.saturating_sub(by)));
    out
}

/// How a computed line is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Mark {
    Line,
    Dots,
}

/// One line of a study, with the index of its colour in the theme's study palette (relative to the study).
#[derive(Debug, Clone)]
pub(crate) struct Line {
    pub values: Series,
    pub colour: usize,
    pub mark: Mark,
}

/// What a study draws, in the units of its pane (price units on the price pane).
#[derive(Debug, Clone, Default)]
pub(crate) struct Plot {
    pub lines: Vec<Line>,
    /// Columns from zero, green above and red below (MACD's histogram).
    pub histogram: Option<Series>,
    /// Volume columns coloured by their candle.
    pub volume: Option<Vec<f64>>,
    /// Horizontal reference lines (RSI 30/70, zero).
    pub levels: Vec<f64>,
    /// A fixed scale (RSI 0..100); otherwise the pane fits what is drawn.
    pub range: Option<(f64, f64)>,
    /// Fill between these two lines (band studies).
    pub band: Option<(usize, usize)>,
}

impl Plot {
    fn lines(series: Vec<Series>) -> Plot {
        Plot {
            lines: series
                .into_iter()
                .enumerate()
                .map(|(k, values)| Line {
                    values,
                    colour: k,
                    mark: Mark::Line,
                })
                .collect(),
            ..Plot::default()
        }
    }
    fn band(basis: Series, upper: Series, lower: Series) -> Plot {
        Plot {
            band: Some((1, 2)),
            ..Plot::lines(vec![basis, upper, lower])
        }
    }
    fn levels(mut self, levels: &[f64]) -> Plot {
        self.levels = levels.to_vec();
        self
    }
    fn range(mut self, lo: f64, hi: f64) -> Plot {
        self.range = Some((lo, hi));
        self
    }

    /// The lowest and highest value drawn, levels included.
    pub fn extent(&self) -> Option<(f64, f64)> {
        let vals = self
            .lines
            .iter()
            .flat_map(|l| l.values.iter().flatten())
            .chain(self.histogram.iter().flatten().flatten())
            .chain(self.volume.iter().flatten())
            .chain(self.levels.iter())
            .copied()
            .chain(self.histogram.as_ref().map(|_| 0.0))
            .chain(self.volume.as_ref().map(|_| 0.0))
            .filter(|v| v.is_finite());
        vals.fold(None, |acc, v| {
            Some(acc.map_or((v, v), |(lo, hi): (f64, f64)| (lo.min(v), hi.max(v))))
        })
    }
}

/// A study's numeric input: the first of `keys` that is given (a number, or a string holding one), else `default`.
pub(crate) fn num(inputs: &Map<String, Value>, keys: &[&str], default: f64) -> f64 {
    keys.iter()
        .find_map(|k| match inputs.get(*k)? {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        })
        .filter(|v: &f64| v.is_finite())
        .unwrap_or(default)
}

/// A length input: at least 1 (a length of 0 or less would draw nothing, as on TradingView).
fn len(inputs: &Map<String, Value>, keys: &[&str], default: usize) -> usize {
    let v = num(inputs, keys, default as f64);
    if v < 1.0 {
        1
    } else {
        // More than the candles drawn just leaves the study empty; capping keeps the arithmetic bounded.
        (v as usize).min(100_000)
    }
}

fn flag(inputs: &Map<String, Value>, key: &str, default: bool) -> bool {
    match inputs.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => default,
    }
}

fn method_ma(inputs: &Map<String, Value>, key: &str, v: &[f64], n: usize) -> Series {
    match inputs.get(key).and_then(Value::as_str).unwrap_or("Simple") {
        "Exponential" | "EMA" => ema(v, n),
        "Weighted" | "WMA" => wma(v, n),
        _ => sma(v, n),
    }
}

/// Computes the study `name` with `inputs` (keys as in the API: `length`, `in_0`…; absent keys take TradingView's
/// defaults) over `bars`. A name without math of its own gets a generic line: on the price pane a simple average of
/// the close over its first length input (default 20), in a pane the close minus that average.
pub(crate) fn compute(name: &str, inputs: &Map<String, Value>, bars: &[Candle], on_price_pane: bool) -> Plot {
    let c: Vec<f64> = bars.iter().map(|b| b.c).collect();
    let hl2: Vec<f64> = bars.iter().map(|b| (b.h + b.l) / 2.0).collect();
    let l = |keys: &[&str], d: usize| len(inputs, keys, d);
    match name {
        // Moving averages on the price.
        "Moving Average" => Plot::lines(vec![sma(&c, l(&["length", "in_0"], 9))]),
        "Moving Average Exponential" => Plot::lines(vec![ema(&c, l(&["length", "in_0"], 9))]),
        "Moving Average Weighted" => Plot::lines(vec![wma(&c, l(&["in_0", "length"], 9))]),
        "Smoothed Moving Average" => Plot::lines(vec![rma(&c, l(&["in_0", "length"], 7))]),
        "Double EMA" => Plot::lines(vec![dema(&c, l(&["in_0", "length"], 9))]),
        "Triple EMA" => Plot::lines(vec![tema(&c, l(&["in_0", "length"], 9))]),
        "Hull Moving Average" => Plot::lines(vec![hma(&c, l(&["in_0", "length"], 9))]),
        "VWMA" => Plot::lines(vec![vwma(bars, l(&["in_0", "length"], 20))]),
        "Least Squares Moving Average" => Plot::lines(vec![linreg(
            &c,
            l(&["in_0", "length"], 25),
            num(inputs, &["in_1"], 0.0),
        )]),
        "Linear Regression Curve" => Plot::lines(vec![linreg(&c, l(&["in_0", "length"], 9), 0.0)]),
        "Arnaud Legoux Moving Average" => Plot::lines(vec![alma(
            &c,
            l(&["in_0"], 9),
            num(inputs, &["in_1"], 0.85),
            num(inputs, &["in_2"], 6.0),
        )]),
        "McGinley Dynamic" => Plot::lines(vec![mcginley(&c, l(&["in_0"], 10))]),
        "Moving Average Hamming" => Plot::lines(vec![hamming(&c, l(&["periods", "in_0"], 10))]),
        "Moving Average Adaptive" => Plot::lines(vec![kama(&c, l(&["periods", "in_0"], 10))]),
        "MA Cross" => Plot::lines(vec![sma(&c, l(&["in_0"], 9)), sma(&c, l(&["in_1"], 26))]),
        "MA with EMA Cross" => Plot::lines(vec![sma(&c, l(&["in_0"], 10)), ema(&c, l(&["in_1"], 10))]),
        "Moving Average Double" | "Moving Average Triple" | "Moving Average Multiple" => {
            let keys: &[(&str, usize)] = &[
                ("firstPeriods", 14),
                ("secondPeriods", 21),
                ("thirdPeriods", 35),
                ("fourthPeriods", 50),
                ("fifthPeriods", 100),
                ("sixthPeriods", 200),
            ];
            let count = match name {
                "Moving Average Double" => 2,
                "Moving Average Triple" => 3,
                _ => 6,
            };
            Plot::lines(
                keys[..count]
                    .iter()
                    .map(|(k, d)| method_ma(inputs, "method", &c, l(&[k], *d)))
                    .collect(),
            )
        }
        "Williams Alligator" => {
            let jaw = shifted(rma(&hl2, l(&["in_0"], 21)), l(&["in_3"], 8));
            let teeth = shifted(rma(&hl2, l(&["in_1"], 13)), l(&["in_4"], 5));
            let lips = shifted(rma(&hl2, l(&["in_2"], 8)), l(&["in_5"], 3));
            Plot::lines(vec![jaw, teeth, lips])
        }
        "Ichimoku Cloud" => {
            let mid = |n: usize| {
                let (m, _, _) = donchian(bars, n);
                m
            };
            let (conv, base) = (mid(l(&["in_0"], 9)), mid(l(&["in_1"], 26)));
            let shift = l(&["in_3"], 26).saturating_sub(1);
            let span_a = shifted(zip(&conv, &base, |a, b| (a + b) / 2.0), shift);
            let span_b = shifted(mid(l(&["in_2"], 52)), shift);
            Plot {
                band: Some((2, 3)),
                ..Plot::lines(vec![conv, base, span_a, span_b])
            }
        }
        // Bands and channels.
        "Bollinger Bands" => {
            let (b, u, lo) = bollinger(&c, l(&["in_0", "length"], 20), num(inputs, &["in_1", "mult"], 2.0));
            Plot::band(b, u, lo)
        }
        "Keltner Channels" => {
            let (b, u, lo) = keltner(
                bars,
                l(&["in_1", "length"], 20),
                num(inputs, &["in_2", "mult"], 1.0),
                flag(inputs, "in_0", true),
            );
            Plot::band(b, u, lo)
        }
        "Donchian Channels" => {
            let (m, u, lo) = donchian(bars, l(&["in_0", "length"], 20));
            Plot::band(m, u, lo)
        }
        "Price Channel" => {
            let (_, u, lo) = donchian(bars, l(&["in_0", "length"], 20));
            Plot {
                band: Some((0, 1)),
                ..Plot::lines(vec![u, lo])
            }
        }
        "Envelopes" => {
            let basis = method_ma(inputs, "in_3", &c, l(&["in_0", "length"], 20));
            let (up, down) = (num(inputs, &["in_1"], 2.0), num(inputs, &["in_2"], 2.0));
            let u = map(&basis, |b| b * (1.0 + up / 100.0));
            let lo = map(&basis, |b| b * (1.0 - down / 100.0));
            Plot::band(basis, u, lo)
        }
        "Moving Average Channel" => {
            let h: Vec<f64> = bars.iter().map(|b| b.h).collect();
            let lw: Vec<f64> = bars.iter().map(|b| b.l).collect();
            Plot {
                band: Some((0, 1)),
                ..Plot::lines(vec![sma(&h, l(&["in_0"], 20)), sma(&lw, l(&["in_1"], 20))])
            }
        }
        "Standard Error Bands" => {
            let n = l(&["periods"], 21);
            let basis = linreg(&c, n, 0.0);
            let err = stdev(&c, n);
            let k = num(inputs, &["errors"], 2.0);
            let (u, lo) = (zip(&basis, &err, |b, e| b + k * e), zip(&basis, &err, |b, e| b - k * e));
            Plot::band(basis, u, lo)
        }
        "VWAP" => Plot::lines(vec![vwap(bars)]),
        "Parabolic SAR" => {
            let s = psar(
                bars,
                num(inputs, &["in_0"], 0.02),
                num(inputs, &["in_1"], 0.02),
                num(inputs, &["in_2"], 0.2),
            );
            Plot {
                lines: vec![Line {
                    values: s,
                    colour: 0,
                    mark: Mark::Dots,
                }],
                ..Plot::default()
            }
        }
        "Super Trend" => {
            let (up, down) = supertrend(bars, l(&["in_0"], 10), num(inputs, &["in_1"], 3.0));
            Plot::lines(vec![up, down])
        }
        // Oscillators and the like.
        "Relative Strength Index" => {
            let r = rsi(&c, l(&["length", "in_0"], 14));
            let ma = on_defined(&r, |x| sma(x, l(&["smoothingLength"], 14)));
            Plot::lines(vec![r, ma]).levels(&[30.0, 70.0]).range(0.0, 100.0)
        }
        "MACD" => {
            let (line, sig, hist) = macd(&c, l(&["in_0"], 12), l(&["in_1"], 26), l(&["in_2"], 9));
            Plot {
                histogram: Some(hist),
                ..Plot::lines(vec![line, sig]).levels(&[0.0])
            }
        }
        "Volume" => Plot {
            volume: Some(bars.iter().map(|b| b.v).collect()),
            ..Plot::default()
        },
        "Stochastic" => {
            let (k, d) = stochastic(bars, l(&["in_0"], 14), l(&["in_1"], 1), l(&["in_2"], 3));
            Plot::lines(vec![k, d]).levels(&[20.0, 80.0]).range(0.0, 100.0)
        }
        "Stochastic RSI" => {
            let r = rsi(&c, l(&["in_1"], 14));
            let start = r.iter().position(Option::is_some).unwrap_or(r.len());
            let as_bars: Vec<Candle> = r[start..]
                .iter()
                .flatten()
                .map(|&x| Candle {
                    o: x,
                    h: x,
                    l: x,
                    c: x,
                    v: 0.0,
                })
                .collect();
            let (k, d) = stochastic(&as_bars, l(&["in_0"], 14), l(&["in_2"], 3), l(&["in_3"], 3));
            let pad = |s: Series| none(start).into_iter().chain(s).collect::<Series>();
            Plot::lines(vec![pad(k), pad(d)])
                .levels(&[20.0, 80.0])
                .range(0.0, 100.0)
        }
        "Williams %R" => {
            let n = l(&["in_0"], 14);
            let (k, _) = stochastic(bars, n, 1, 1);
            Plot::lines(vec![map(&k, |x| x - 100.0)])
                .levels(&[-80.0, -20.0])
                .range(-100.0, 0.0)
        }
        "Money Flow Index" => Plot::lines(vec![mfi(bars, l(&["in_0"], 14))])
            .levels(&[20.0, 80.0])
            .range(0.0, 100.0),
        "Commodity Channel Index" => Plot::lines(vec![cci(bars, l(&["in_0"], 20))]).levels(&[-100.0, 100.0]),
        "Momentum" => {
            let n = l(&["in_0"], 10);
            Plot::lines(vec![(0..c.len()).map(|i| (i >= n).then(|| c[i] - c[i - n])).collect()]).levels(&[0.0])
        }
        "Rate Of Change" => {
            let n = l(&["in_0"], 9);
            Plot::lines(vec![(0..c.len())
                .map(|i| (i >= n).then(|| 100.0 * (c[i] - c[i - n]) / c[i - n]))
                .collect()])
            .levels(&[0.0])
        }
        "Average True Range" => Plot::lines(vec![rma(&true_range(bars), l(&["in_0"], 14))]),
        "Standard Deviation" => Plot::lines(vec![stdev(&c, l(&["periods", "in_0"], 5))]),
        "Bollinger Bands %B" => {
            let (_, u, lo) = bollinger(&c, l(&["in_0"], 20), num(inputs, &["in_1"], 2.0));
            let pb = (0..c.len()).map(|i| {
                let (u, lo) = (u[i]?, lo[i]?);
                Some(if u == lo { 0.5 } else { (c[i] - lo) / (u - lo) })
            });
            Plot::lines(vec![pb.collect()]).levels(&[0.0, 1.0])
        }
        "Bollinger Bands Width" => {
            let (b, u, lo) = bollinger(&c, l(&["in_0"], 20), num(inputs, &["in_1"], 2.0));
            let w = (0..c.len()).map(|i| Some((u[i]? - lo[i]?) / b[i]?));
            Plot::lines(vec![w.collect()])
        }
        "On Balance Volume" => Plot::lines(vec![obv(bars)]),
        _ => {
            let n = l(&["length", "in_0", "periods"], 20);
            let avg = sma(&c, n);
            if on_price_pane {
                Plot::lines(vec![avg])
            } else {
                let dev = (0..c.len()).map(|i| avg[i].map(|a| c[i] - a));
                Plot::lines(vec![dev.collect()]).levels(&[0.0])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLOSES: [f64; 6] = [2.0, 4.0, 6.0, 8.0, 7.0, 5.0];

    fn assert_series(got: &Series, want: &[Option<f64>]) {
        assert_eq!(got.len(), want.len(), "{got:?}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            match (g, w) {
                (Some(g), Some(w)) => assert!((g - w).abs() < 1e-9, "[{i}]: {g} != {w} in {got:?}"),
                (None, None) => {}
                _ => panic!("[{i}]: {g:?} != {w:?} in {got:?}"),
            }
        }
    }

    fn bars() -> Vec<Candle> {
        // (o, h, l, c): highs and lows around the closes above, by hand.
        [
            (1.0, 3.0, 1.0, 2.0),
            (2.0, 5.0, 2.0, 4.0),
            (4.0, 7.0, 3.0, 6.0),
            (6.0, 9.0, 6.0, 8.0),
            (8.0, 8.0, 6.0, 7.0),
            (7.0, 7.5, 4.0, 5.0),
        ]
        .iter()
        .map(|&(o, h, l, c)| Candle { o, h, l, c, v: 1.0 })
        .collect()
    }

    #[test]
    fn moving_averages_by_hand() {
        assert_series(
            &sma(&CLOSES, 3),
            &[None, None, Some(4.0), Some(6.0), Some(7.0), Some(20.0 / 3.0)],
        );
        // alpha = 0.5, seeded with SMA(2,4,6) = 4.
        assert_series(
            &ema(&CLOSES, 3),
            &[None, None, Some(4.0), Some(6.0), Some(6.5), Some(5.75)],
        );
        // weights 1,2,3 over 6.
        assert_series(
            &wma(&CLOSES, 3),
            &[
                None,
                None,
                Some(28.0 / 6.0),
                Some(40.0 / 6.0),
                Some(43.0 / 6.0),
                Some(37.0 / 6.0),
            ],
        );
        // alpha = 1/3, seeded with 4: 4 + (8-4)/3, then ...
        let r1 = 4.0 + (8.0 - 4.0) / 3.0;
        let r2 = r1 + (7.0 - r1) / 3.0;
        let r3 = r2 + (5.0 - r2) / 3.0;
        assert_series(&rma(&CLOSES, 3), &[None, None, Some(4.0), Some(r1), Some(r2), Some(r3)]);
        assert_series(&sma(&CLOSES, 7), &[None; 6]);
    }

    #[test]
    fn rsi_by_hand() {
        // Changes +2 +2 +2 -1 -2; Wilder averages over 2: gains 2, 2, 1, 0.5; losses 0, 0, 0.5, 1.25.
        let want = [
            None,
            None,
            Some(100.0),
            Some(100.0),
            Some(100.0 - 100.0 / 3.0),
            Some(100.0 - 100.0 / 1.4),
        ];
        assert_series(&rsi(&CLOSES, 2), &want);
    }

    #[test]
    fn rsi_stays_within_0_and_100() {
        // Wild series of every shape: flat, only rising, only falling, alternating, huge jumps.
        let mut rng = 0x1234_5678_u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut cases: Vec<Vec<f64>> = vec![
            vec![5.0; 50],
            (0..50).map(f64::from).collect(),
            (0..50).map(|i| -f64::from(i)).collect(),
        ];
        cases.push((0..50).map(|i| if i % 2 == 0 { 1.0 } else { 1e9 }).collect());
        for _ in 0..50 {
            cases.push((0..200).map(|_| next() * 1e6 - 5e5).collect());
        }
        for v in &cases {
            for n in [1, 2, 14, 50] {
                for x in rsi(v, n).into_iter().flatten() {
                    assert!((0.0..=100.0).contains(&x), "{x} out of 0..100 (n={n})");
                }
            }
        }
        assert!(
            rsi(&[5.0; 20], 14).into_iter().flatten().all(|x| x == 50.0),
            "flat: no gain, no loss"
        );
    }

    #[test]
    fn macd_by_hand() {
        // EMA2 (alpha 2/3, seed 3): 3, 5, 7, 7, 17/3; EMA3 as above: 4, 6, 6.5, 5.75.
        let (line, sig, hist) = macd(&CLOSES, 2, 3, 2);
        let l4 = 7.0 - 6.5;
        let l5 = 17.0 / 3.0 - 5.75;
        assert_series(&line, &[None, None, Some(1.0), Some(1.0), Some(l4), Some(l5)]);
        // Signal: EMA2 of the line from its first value: seed (1+1)/2 at [3], then 2/3*x + 1/3*prev.
        let s4 = 2.0 / 3.0 * l4 + 1.0 / 3.0;
        let s5 = 2.0 / 3.0 * l5 + s4 / 3.0;
        assert_series(&sig, &[None, None, None, Some(1.0), Some(s4), Some(s5)]);
        assert_series(&hist, &[None, None, None, Some(0.0), Some(l4 - s4), Some(l5 - s5)]);
    }

    #[test]
    fn bands_by_hand() {
        let (b, u, l) = bollinger(&CLOSES, 3, 2.0);
        let sd = (8.0f64 / 3.0).sqrt(); // of 2,4,6; and of 4,6,8
        assert_series(&b, &[None, None, Some(4.0), Some(6.0), Some(7.0), Some(20.0 / 3.0)]);
        assert_eq!(u[2].unwrap(), 4.0 + 2.0 * sd);
        assert_eq!(l[3].unwrap(), 6.0 - 2.0 * sd);
        // 6,8,7: mean 7, deviations 1,1,0.
        assert!((u[4].unwrap() - (7.0 + 2.0 * (2.0f64 / 3.0).sqrt())).abs() < 1e-12);

        let (m, hi, lo) = donchian(&bars(), 3);
        assert_series(&hi, &[None, None, Some(7.0), Some(9.0), Some(9.0), Some(9.0)]);
        assert_series(&lo, &[None, None, Some(1.0), Some(2.0), Some(3.0), Some(4.0)]);
        assert_series(&m, &[None, None, Some(4.0), Some(5.5), Some(6.0), Some(6.5)]);

        // True ranges: 2, max(3, 3, 0)=3, max(4, 3, 1)=4, max(3, 3, 0)=3, max(2, 0, 2)=2, max(3.5, 0.5, 3)=3.5.
        assert_eq!(true_range(&bars()), vec![2.0, 3.0, 4.0, 3.0, 2.0, 3.5]);
        let (kb, ku, kl) = keltner(&bars(), 3, 1.5, true);
        // EMA3 of the ranges: seed 3, then 3, 2.5, 3.
        assert_series(&kb, &ema(&CLOSES, 3));
        assert_series(
            &ku,
            &[
                None,
                None,
                Some(4.0 + 4.5),
                Some(6.0 + 4.5),
                Some(6.5 + 3.75),
                Some(5.75 + 4.5),
            ],
        );
        assert_series(
            &kl,
            &[
                None,
                None,
                Some(4.0 - 4.5),
                Some(6.0 - 4.5),
                Some(6.5 - 3.75),
                Some(5.75 - 4.5),
            ],
        );
    }

    #[test]
    fn inputs_are_read_from_the_request_with_defaults() {
        let inputs: Map<String, Value> = serde_json::from_str(r#"{"length": 3}"#).unwrap();
        let p = compute("Moving Average", &inputs, &bars(), true);
        assert_series(&p.lines[0].values, &sma(&CLOSES, 3));
        // A string holding a number counts; without the key, the default length 9 leaves 6 candles empty.
        let inputs: Map<String, Value> = serde_json::from_str(r#"{"length": "2"}"#).unwrap();
        assert_series(
            &compute("Moving Average", &inputs, &bars(), true).lines[0].values,
            &sma(&CLOSES, 2),
        );
        assert!(compute("Moving Average", &Map::new(), &bars(), true).lines[0]
            .values
            .iter()
            .all(Option::is_none));
        let rsi_plot = compute(
            "Relative Strength Index",
            &serde_json::from_str(r#"{"length": 2}"#).unwrap(),
            &bars(),
            false,
        );
        assert_series(&rsi_plot.lines[0].values, &rsi(&CLOSES, 2));
        assert_eq!(
            (rsi_plot.levels.clone(), rsi_plot.range),
            (vec![30.0, 70.0], Some((0.0, 100.0)))
        );
    }

    #[test]
    fn every_documented_study_computes_without_panicking() {
        let bars: Vec<Candle> = (0..120)
            .map(|i| {
                let x = f64::from(i);
                let c = 100.0 + 10.0 * (x / 7.0).sin() + x * 0.1;
                Candle {
                    o: c - 1.0,
                    h: c + 2.0,
                    l: c - 2.5,
                    c,
                    v: 1.0 + (x / 3.0).cos().abs(),
                }
            })
            .collect();
        let names = [
            "Moving Average",
            "Moving Average Exponential",
            "Moving Average Weighted",
            "Smoothed Moving Average",
            "Double EMA",
            "Triple EMA",
            "Hull Moving Average",
            "VWMA",
            "Least Squares Moving Average",
            "Linear Regression Curve",
            "Arnaud Legoux Moving Average",
            "McGinley Dynamic",
            "Moving Average Hamming",
            "Moving Average Adaptive",
            "MA Cross",
            "MA with EMA Cross",
            "Moving Average Double",
            "Moving Average Triple",
            "Moving Average Multiple",
            "Williams Alligator",
            "Ichimoku Cloud",
            "Bollinger Bands",
            "Keltner Channels",
            "Donchian Channels",
            "Price Channel",
            "Envelopes",
            "Moving Average Channel",
            "Standard Error Bands",
            "VWAP",
            "Parabolic SAR",
            "Super Trend",
            "Relative Strength Index",
            "MACD",
            "Volume",
            "Stochastic",
            "Stochastic RSI",
            "Williams %R",
            "Money Flow Index",
            "Commodity Channel Index",
            "Momentum",
            "Rate Of Change",
            "Average True Range",
            "Standard Deviation",
            "Bollinger Bands %B",
            "Bollinger Bands Width",
            "On Balance Volume",
            "Aroon",
        ];
        for name in names {
            let p = compute(name, &Map::new(), &bars, false);
            let (lo, hi) = p.extent().unwrap_or_else(|| panic!("{name} draws nothing"));
            assert!(lo.is_finite() && hi.is_finite(), "{name}");
            if let Some((a, b)) = p.range {
                for v in p.lines.iter().flat_map(|l| l.values.iter().flatten()) {
                    assert!(*v >= a && *v <= b, "{name}: {v} outside {a}..{b}");
                }
            }
        }
        // Super Trend: the stop sits below the lows in an up trend and above the highs in a down trend.
        let (up, down) = supertrend(&bars, 10, 3.0);
        for (i, b) in bars.iter().enumerate() {
            assert!(
                up[i].is_none_or(|s| s <= b.h) && down[i].is_none_or(|s| s >= b.l),
                "{i}"
            );
        }
    }
}
