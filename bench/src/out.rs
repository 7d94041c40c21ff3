//! `--out DIR`: `summary.json` (configuration and every target's
//! summary), one HDR histogram interval log per target
//! (`NAME.hlog`, one tagged histogram per op kind and interval, latencies
//! in ns; readable by HdrHistogram's HistogramLogProcessor), and SVG plots:
//! `latency.svg` (latency by percentile, log scales, one line per target)
//! and `timeline.svg` (throughput and p99 over time).

use plotters::prelude::*;
use std::path::Path;

use crate::report::TargetSummary;
use crate::{BenchConfig, BenchError};

fn io_err(what: &str, e: impl std::fmt::Display) -> BenchError {
    BenchError::Io(format!("{what}: {e}"))
}

/// Writes every output file for a finished run.
pub fn write_all(dir: &Path, cfg: &BenchConfig, all: &[TargetSummary]) -> Result<(), BenchError> {
    std::fs::create_dir_all(dir).map_err(|e| io_err(&format!("creating {}", dir.display()), e))?;
    write_json(dir, cfg, all)?;
    for s in all {
        write_hlog(dir, s)?;
    }
    plot_latency(&dir.join("latency.svg"), all)?;
    plot_timeline(&dir.join("timeline.svg"), all)?;
    Ok(())
}

fn write_json(dir: &Path, cfg: &BenchConfig, all: &[TargetSummary]) -> Result<(), BenchError> {
    let w = &cfg.workload;
    let doc = serde_json::json!({
        "workload": {
            "name": w.name,
            "mix": w.mix.describe(),
            "distribution": w.dist,
            "keys": w.key_count,
            "value_size": w.value_size,
        },
        "mode": cfg.mode,
        "threads": cfg.threads,
        "connections_per_thread": cfg.connections,
        "pipeline": cfg.pipeline,
        "duration_s": cfg.duration.as_secs_f64(),
        "requests": cfg.requests,
        "timeout_s": cfg.timeout.as_secs_f64(),
        "pin": cfg.pin,
        "busy_poll": cfg.busy_poll,
        "targets": all,
    });
    let text = serde_json::to_string_pretty(&doc).map_err(|e| io_err("encoding JSON", e))?;
    let path = dir.join("summary.json");
    std::fs::write(&path, text).map_err(|e| io_err(&format!("writing {}", path.display()), e))
}

/// A file-name-safe version of a target name.
fn file_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn write_hlog(dir: &Path, s: &TargetSummary) -> Result<(), BenchError> {
    let path = dir.join(format!("{}.hlog", file_stem(&s.target.name)));
    std::fs::write(&path, &s.hlog).map_err(|e| io_err(&format!("writing {}", path.display()), e))
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(23, 190, 207),
];

fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

/// Latency (µs, log) against percentile (log of 1/(1-q)), one line per target.
pub fn plot_latency(path: &Path, all: &[TargetSummary]) -> Result<(), BenchError> {
    let series: Vec<(String, Vec<(f64, f64)>)> = all
        .iter()
        .map(|s| {
            let h = &s.hist;
            let pts = if h.is_empty() {
                vec![]
            } else {
                let n = h.len() as f64;
                // Up to the percentile the sample count can resolve.
                let top = (n.log10()).clamp(1.0, 6.0);
                (0..=300)
                    .map(|i| {
                        let x = 10f64.powf(top * i as f64 / 300.0);
                        let q = 1.0 - 1.0 / x;
                        (x, (h.value_at_quantile(q) as f64 / 1000.0).max(0.1))
                    })
                    .collect()
            };
            (s.target.name.clone(), pts)
        })
        .collect();
    let xmax = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.0))
        .fold(10.0f64, f64::max);
    let (ymin, ymax) = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold((f64::MAX, 1.0f64), |(a, b), y| (a.min(y), b.max(y)));
    let ymin = if ymin == f64::MAX { 1.0 } else { ymin * 0.8 };
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    let draw = |e| io_err("drawing latency.svg", format!("{e:?}"));
    root.fill(&WHITE).map_err(draw)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Latency by percentile", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((1.0f64..xmax).log_scale(), (ymin..ymax * 1.5).log_scale())
        .map_err(draw)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (µs)")
        .x_label_formatter(&|x| {
            let p = 100.0 * (1.0 - 1.0 / x);
            if p < 90.0 {
                format!("{p:.0}%")
            } else {
                format!("{}%", trim(p))
            }
        })
        .y_label_formatter(&|y| trim(*y))
        .draw()
        .map_err(draw)?;
    for (i, (name, pts)) in series.into_iter().enumerate() {
        let c = color(i);
        chart
            .draw_series(LineSeries::new(pts, c.stroke_width(2)))
            .map_err(draw)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(draw)?;
    root.present().map_err(draw)?;
    Ok(())
}

fn trim(v: f64) -> String {
    let s = format!("{v:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Throughput (top) and p99 (bottom) over time, one line per target.
pub fn plot_timeline(path: &Path, all: &[TargetSummary]) -> Result<(), BenchError> {
    let interval = all
        .iter()
        .flat_map(|s| s.intervals.first().map(|p| p.end_s - p.start_s))
        .fold(0.0f64, f64::max);
    let tmax = all
        .iter()
        .flat_map(|s| s.intervals.iter().map(|p| p.end_s))
        .fold(1.0f64, f64::max);
    let rmax = all
        .iter()
        .flat_map(|s| s.intervals.iter().map(|p| p.rate))
        .fold(1.0f64, f64::max);
    let lmax = all
        .iter()
        .flat_map(|s| s.intervals.iter().map(|p| p.p99_us))
        .fold(1.0f64, f64::max);
    let root = SVGBackend::new(path, (900, 700)).into_drawing_area();
    let draw = |e| io_err("drawing timeline.svg", format!("{e:?}"));
    root.fill(&WHITE).map_err(draw)?;
    let (top, bottom) = root.split_vertically(350);
    let mut rate_chart = ChartBuilder::on(&top)
        .caption("Throughput", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..tmax, 0.0..rmax * 1.15)
        .map_err(draw)?;
    rate_chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("requests/s")
        .y_label_formatter(&|y| crate::report::fmt_rate(*y))
        .draw()
        .map_err(draw)?;
    let mut lat_chart = ChartBuilder::on(&bottom)
        .caption("p99 latency", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..tmax, 0.0..lmax * 1.15)
        .map_err(draw)?;
    lat_chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("p99 (µs)")
        .y_label_formatter(&|y| crate::report::fmt_rate(*y))
        .draw()
        .map_err(draw)?;
    for (i, s) in all.iter().enumerate() {
        let c = color(i);
        let mid = |p: &crate::run::IntervalPoint| (p.start_s + p.end_s) / 2.0;
        // A short last interval (the drain after sending stopped) would
        // plot as a misleading dip.
        let full = |p: &&crate::run::IntervalPoint| p.end_s - p.start_s >= 0.5 * interval;
        rate_chart
            .draw_series(LineSeries::new(
                s.intervals.iter().filter(full).map(|p| (mid(p), p.rate)),
                c.stroke_width(2),
            ))
            .map_err(draw)?
            .label(s.target.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        lat_chart
            .draw_series(LineSeries::new(
                s.intervals.iter().filter(full).map(|p| (mid(p), p.p99_us)),
                c.stroke_width(2),
            ))
            .map_err(draw)?;
    }
    rate_chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(draw)?;
    root.present().map_err(draw)?;
    Ok(())
}
