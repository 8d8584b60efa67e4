//! The canary chart: canary vs baseline error rate (top panel) and p99
//! latency (bottom panel) over the rollout, drawn in-process as a PNG and
//! attached to the canary health summary.
//!
//! Axis labels, panel titles and the legend are drawn with a small subset
//! of DejaVu Sans compiled into the binary (`assets/fonts/`), so no font
//! needs to be installed where rollbot runs; [`legend`] repeats the scales
//! as text for the message and for screen readers.

use crate::chat::Attachment;
use crate::judge::stats::histogram_quantile;
use crate::judge::{Tick, TrackSample};
use plotters::prelude::*;
use std::collections::VecDeque;

/// The most points a rollout's chart keeps. When full, neighbouring points
/// are averaged in pairs, so the chart always spans the whole rollout at a
/// coarser resolution, and thousands of watched rollouts stay small in memory.
pub const HISTORY: usize = 120;
pub const WIDTH: u32 = 800;
pub const HEIGHT: u32 = 400;

pub const CANARY: RGBColor = RGBColor(214, 39, 40);
pub const BASELINE: RGBColor = RGBColor(31, 119, 180);
const GRID: RGBColor = RGBColor(225, 225, 225);
const FRAME: RGBColor = RGBColor(120, 120, 120);

/// One tick's figures; `None` where a track had no data.
#[derive(Clone, Debug, PartialEq)]
pub struct ChartPoint {
    pub t: f64,
    pub canary_error_rate: Option<f64>,
    pub baseline_error_rate: Option<f64>,
    /// Seconds, estimated from the tick's latency histogram.
    pub canary_p99: Option<f64>,
    pub baseline_p99: Option<f64>,
}

fn error_rate(s: &TrackSample) -> Option<f64> {
    (s.requests > 0).then(|| s.errors as f64 / s.requests as f64)
}

fn p99(s: &TrackSample) -> Option<f64> {
    histogram_quantile(0.99, &s.latency_buckets).filter(|v| v.is_finite())
}

impl ChartPoint {
    pub fn from_tick(tick: &Tick) -> ChartPoint {
        ChartPoint {
            t: tick.t,
            canary_error_rate: tick.canary.as_ref().and_then(error_rate),
            baseline_error_rate: tick.baseline.as_ref().and_then(error_rate),
            canary_p99: tick.canary.as_ref().and_then(p99),
            baseline_p99: tick.baseline.as_ref().and_then(p99),
        }
    }
}

/// A point as stored: seconds and the four figures as f32, NaN where missing.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Compact {
    t: f32,
    v: [f32; 4],
}

impl Compact {
    fn from(p: &ChartPoint) -> Compact {
        let f = |x: Option<f64>| x.map(|v| v as f32).unwrap_or(f32::NAN);
        Compact {
            t: p.t as f32,
            v: [
                f(p.canary_error_rate),
                f(p.baseline_error_rate),
                f(p.canary_p99),
                f(p.baseline_p99),
            ],
        }
    }

    fn point(&self) -> ChartPoint {
        let o = |x: f32| (!x.is_nan()).then_some(x as f64);
        ChartPoint {
            t: self.t as f64,
            canary_error_rate: o(self.v[0]),
            baseline_error_rate: o(self.v[1]),
            canary_p99: o(self.v[2]),
            baseline_p99: o(self.v[3]),
        }
    }

    /// The average of two neighbouring points (a missing figure is ignored).
    fn merge(a: &Compact, b: &Compact) -> Compact {
        let mut v = [f32::NAN; 4];
        for (i, out) in v.iter_mut().enumerate() {
            *out = match (a.v[i].is_nan(), b.v[i].is_nan()) {
                (false, false) => (a.v[i] + b.v[i]) / 2.0,
                (false, true) => a.v[i],
                (true, false) => b.v[i],
                (true, true) => f32::NAN,
            };
        }
        Compact { t: b.t, v }
    }
}

/// A rollout's chart data, at most [`HISTORY`] points covering all of it.
#[derive(Clone, Debug, Default)]
pub struct ChartHistory {
    points: VecDeque<Compact>,
}

impl ChartHistory {
    pub fn push(&mut self, p: ChartPoint) {
        if self.points.len() == HISTORY {
            let old: Vec<Compact> = self.points.drain(..).collect();
            self.points.extend(old.chunks(2).map(|c| {
                if c.len() == 2 {
                    Compact::merge(&c[0], &c[1])
                } else {
                    c[0]
                }
            }));
        }
        self.points.push_back(Compact::from(&p));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    pub fn points(&self) -> Vec<ChartPoint> {
        self.points.iter().map(Compact::point).collect()
    }
}

/// One line: (t, value) where the value is known.
pub type Series = Vec<(f64, f64)>;

/// What the chart plots: (canary, baseline) for each panel.
#[derive(Clone, Debug, PartialEq)]
pub struct Plotted {
    pub error_rate: (Series, Series),
    pub p99: (Series, Series),
}

fn series(points: &[ChartPoint], f: impl Fn(&ChartPoint) -> Option<f64>) -> Series {
    points
        .iter()
        .filter_map(|p| f(p).filter(|v| v.is_finite()).map(|v| (p.t, v)))
        .collect()
}

pub fn plotted(points: &[ChartPoint]) -> Plotted {
    Plotted {
        error_rate: (
            series(points, |p| p.canary_error_rate),
            series(points, |p| p.baseline_error_rate),
        ),
        p99: (
            series(points, |p| p.canary_p99),
            series(points, |p| p.baseline_p99),
        ),
    }
}

fn top(a: &Series, b: &Series, floor: f64) -> f64 {
    let m = a.iter().chain(b).map(|&(_, v)| v).fold(0.0, f64::max);
    (m * 1.1).max(floor)
}

fn span(p: &Plotted) -> (f64, f64) {
    let all = || {
        p.error_rate
            .0
            .iter()
            .chain(&p.error_rate.1)
            .chain(&p.p99.0)
            .chain(&p.p99.1)
            .map(|&(t, _)| t)
    };
    let lo = all().fold(f64::INFINITY, f64::min);
    let hi = all().fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    (lo, if hi > lo { hi } else { lo + 1.0 })
}

/// The scales of both panels: (error-rate top, p99 top in seconds).
pub fn scales(p: &Plotted) -> (f64, f64) {
    (
        top(&p.error_rate.0, &p.error_rate.1, 0.001),
        top(&p.p99.0, &p.p99.1, 0.001),
    )
}

/// The text that goes with the picture, since the picture has none.
pub fn legend(points: &[ChartPoint]) -> String {
    let p = plotted(points);
    let (err, lat) = scales(&p);
    let (t0, t1) = span(&p);
    format!(
        "Chart: red = canary, blue = baseline; top: error rate (0–{:.2}%), bottom: p99 latency (0–{:.0} ms); {}m–{}m of the rollout, {} ticks.",
        err * 100.0,
        lat * 1000.0,
        (t0.max(0.0) / 60.0).floor() as u64,
        (t1.max(0.0) / 60.0).ceil() as u64,
        points.len()
    )
}

/// The font family the chart's text is drawn in.
const FONT: &str = "sans-serif";
const TEXT: RGBColor = RGBColor(60, 60, 60);

/// Registers the compiled-in font once per process.
fn font() -> Result<(), String> {
    static ONCE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        plotters::style::register_font(
            FONT,
            FontStyle::Normal,
            include_bytes!("../../assets/fonts/DejaVuSans-subset.ttf"),
        )
        .map_err(|_| "the chart font does not load".to_string())
    })
    .clone()
}

/// One panel: a title, a y axis formatted by `y_label`, minutes since the
/// start on the x axis, and the legend in the upper panel only.
#[allow(clippy::too_many_arguments)]
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    x: (f64, f64),
    y_top: f64,
    y_label: &dyn Fn(&f64) -> String,
    canary: &Series,
    baseline: &Series,
    with_legend: bool,
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let mut chart = ChartBuilder::on(area)
        .margin(10)
        .caption(title, (FONT, 15).into_font().color(&TEXT))
        .x_label_area_size(20)
        .y_label_area_size(62)
        .build_cartesian_2d(x.0 / 60.0..x.1 / 60.0, 0.0..y_top)
        .map_err(err)?;
    // Minutes on the x axis, so the axis picks whole minutes for its labels.
    let minutes = |s: &Series| s.iter().map(|&(t, v)| (t / 60.0, v)).collect::<Vec<_>>();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .bold_line_style(GRID)
        .light_line_style(WHITE)
        .axis_style(FRAME)
        .x_labels(7)
        .y_labels(5)
        .x_label_formatter(&|m| {
            if (m - m.round()).abs() < 1e-9 {
                format!("{m:.0}m")
            } else {
                format!("{m:.1}m")
            }
        })
        .y_label_formatter(y_label)
        .label_style((FONT, 12).into_font().color(&TEXT))
        .draw()
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(minutes(baseline), BASELINE.stroke_width(2)))
        .map_err(err)?
        .label("baseline")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BASELINE.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(minutes(canary), CANARY.stroke_width(2)))
        .map_err(err)?
        .label("canary")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], CANARY.stroke_width(2)));
    if with_legend {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(FRAME)
            .label_font((FONT, 12).into_font().color(&TEXT))
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

/// "0.25%", "3.3%": error rates on the axis.
fn percent(v: &f64) -> String {
    let p = v * 100.0;
    if p == 0.0 {
        "0%".into()
    } else if p < 1.0 {
        format!("{p:.2}%")
    } else {
        format!("{p:.1}%")
    }
}

/// "250 ms", "1.2 s": latencies on the axis.
fn millis(v: &f64) -> String {
    if *v >= 1.0 {
        format!("{v:.1} s")
    } else {
        format!("{:.0} ms", v * 1000.0)
    }
}

/// Draws the two panels into an RGB buffer of `w`×`h`.
pub fn draw_rgb(points: &[ChartPoint], w: u32, h: u32) -> Result<Vec<u8>, String> {
    let p = plotted(points);
    let (err_top, lat_top) = scales(&p);
    let x = span(&p);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        font()?;
        let (upper, lower) = root.split_vertically(h / 2);
        panel(
            &upper,
            "Error rate",
            x,
            err_top,
            &percent,
            &p.error_rate.0,
            &p.error_rate.1,
            true,
        )?;
        panel(
            &lower,
            "p99 latency",
            x,
            lat_top,
            &millis,
            &p.p99.0,
            &p.p99.1,
            false,
        )?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(buf)
}

/// The chart as a PNG file of `w`×`h`.
pub fn render_png(points: &[ChartPoint], w: u32, h: u32) -> Result<Vec<u8>, String> {
    let rgb = draw_rgb(points, w, h)?;
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut wr = enc.write_header().map_err(|e| e.to_string())?;
        wr.write_image_data(&rgb).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// The summary's attachment for a rollout, `None` before the first tick.
pub fn attachment(rollout: &str, points: &[ChartPoint]) -> Option<Attachment> {
    if points.is_empty() {
        return None;
    }
    match render_png(points, WIDTH, HEIGHT) {
        Ok(png) => Some(Attachment {
            name: format!("canary-{rollout}.png"),
            alt: legend(points),
            png,
        }),
        Err(e) => {
            tracing::warn!(error = %e, rollout, "canary chart not drawn");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(requests: u64, errors: u64, slow: u64) -> TrackSample {
        // 0.1 s for most, 1 s for `slow` of them.
        TrackSample {
            requests,
            errors,
            latency_buckets: vec![
                (0.1, requests - slow),
                (1.0, requests),
                (f64::INFINITY, requests),
            ],
            ..TrackSample::default()
        }
    }

    fn points(canary_bad: bool) -> Vec<ChartPoint> {
        (0..60)
            .map(|i| {
                let (e, slow) = if canary_bad { (30, 50) } else { (2, 0) };
                ChartPoint::from_tick(&Tick {
                    t: i as f64 * 10.0,
                    baseline: Some(sample(1000, 2, 0)),
                    canary: Some(sample(1000, e, slow)),
                })
            })
            .collect()
    }

    fn decode(png_bytes: &[u8]) -> (png::OutputInfo, Vec<u8>) {
        let dec = png::Decoder::new(png_bytes);
        let mut r = dec.read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size()];
        let info = r.next_frame(&mut buf).unwrap();
        buf.truncate(info.buffer_size());
        (info, buf)
    }

    fn count(rgb: &[u8], c: RGBColor) -> usize {
        rgb.chunks(3).filter(|p| p == &[c.0, c.1, c.2]).count()
    }

    #[test]
    fn the_history_spans_the_whole_rollout_in_a_bounded_number_of_points() {
        let mut h = ChartHistory::default();
        let point = |i: usize| ChartPoint {
            t: i as f64 * 10.0,
            canary_error_rate: Some(i as f64),
            baseline_error_rate: None,
            canary_p99: Some(0.25),
            baseline_p99: Some(0.2),
        };
        for i in 1..=360 {
            h.push(point(i));
        }
        assert!(h.len() <= HISTORY, "{}", h.len());
        let pts = h.points();
        // Halved at 120, 240 and 300 ticks: the first point now averages
        // ticks 1–16 (mean 8.5) and is stamped with the last of them.
        assert_eq!(pts[0].t, 160.0);
        assert_eq!(pts[0].canary_error_rate, Some(8.5));
        // …the newest tick is kept as it is, and missing data stays missing.
        assert_eq!(pts.last().unwrap().t, 3600.0);
        assert_eq!(pts.last().unwrap().canary_error_rate, Some(360.0));
        assert!(pts
            .iter()
            .all(|p| p.baseline_error_rate.is_none() && p.canary_p99 == Some(0.25)));
        // Time only moves forward.
        assert!(pts.windows(2).all(|w| w[0].t < w[1].t));
    }

    #[test]
    fn points_carry_error_rates_and_p99() {
        let p = &points(true)[0];
        assert_eq!(p.canary_error_rate, Some(0.03));
        assert_eq!(p.baseline_error_rate, Some(0.002));
        assert!(p.canary_p99.unwrap() > 0.5, "{p:?}");
        assert!(p.baseline_p99.unwrap() <= 0.1, "{p:?}");
        let empty = ChartPoint::from_tick(&Tick::default());
        assert_eq!(empty.canary_error_rate, None);
        assert_eq!(empty.canary_p99, None);
    }

    #[test]
    fn the_png_decodes_at_its_size() {
        let started = std::time::Instant::now();
        let bytes = render_png(&points(true), WIDTH, HEIGHT).unwrap();
        let took = started.elapsed();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&bytes[12..16], b"IHDR");
        assert_eq!(u32::from_be_bytes(bytes[16..20].try_into().unwrap()), WIDTH);
        assert_eq!(
            u32::from_be_bytes(bytes[20..24].try_into().unwrap()),
            HEIGHT
        );
        let (info, rgb) = decode(&bytes);
        assert_eq!((info.width, info.height), (WIDTH, HEIGHT));
        assert!(count(&rgb, CANARY) > 500);
        assert!(count(&rgb, BASELINE) > 500);
        eprintln!("chart: {} bytes in {took:?}", bytes.len());
        if let Ok(out) = std::env::var("ROLLBOT_CHART_OUT") {
            std::fs::write(out, &bytes).unwrap();
        }
    }

    #[test]
    fn the_series_differ_when_canary_and_baseline_differ() {
        let bad = plotted(&points(true));
        assert_ne!(bad.error_rate.0, bad.error_rate.1);
        assert_ne!(bad.p99.0, bad.p99.1);
        let good = plotted(&points(false));
        assert_eq!(good.error_rate.0, good.error_rate.1);
        assert_eq!(good.p99.0, good.p99.1);
        // Equal lines: the canary's is drawn over the baseline's and hides
        // it; only the legend's short baseline stroke is left.
        let (_, rgb) = decode(&render_png(&points(false), WIDTH, HEIGHT).unwrap());
        assert!(count(&rgb, BASELINE) < 100, "{}", count(&rgb, BASELINE));
        let (_, rgb) = decode(&render_png(&points(true), WIDTH, HEIGHT).unwrap());
        assert!(count(&rgb, BASELINE) > 500);
    }

    #[test]
    fn axis_labels_read_as_percent_and_milliseconds() {
        assert_eq!(percent(&0.0), "0%");
        assert_eq!(percent(&0.0025), "0.25%");
        assert_eq!(percent(&0.033), "3.3%");
        assert_eq!(millis(&0.25), "250 ms");
        assert_eq!(millis(&1.2), "1.2 s");
        // The panel title is drawn: the strip above the upper panel, where
        // no line or axis goes, holds the caption's pixels.
        let (_, rgb) = decode(&render_png(&points(true), WIDTH, HEIGHT).unwrap());
        let strip = &rgb[..(WIDTH * 28 * 3) as usize];
        let inked = strip.chunks(3).filter(|p| p != &[255, 255, 255]).count();
        assert!(inked > 100, "{inked} pixels of title");
    }

    #[test]
    fn the_legend_names_colours_and_scales() {
        let l = legend(&points(true));
        assert!(
            l.contains("red = canary") && l.contains("blue = baseline"),
            "{l}"
        );
        assert!(l.contains("3.30%"), "{l}");
        assert!(attachment("r1", &[]).is_none());
        let a = attachment("r1", &points(true)).unwrap();
        assert_eq!(a.name, "canary-r1.png");
    }
}
