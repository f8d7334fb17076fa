//! PNG plots: training curves from metrics.jsonl and the results table of an
//! evaluation. Drawn into memory with plotters, encoded with `image`, and
//! written atomically like every other output.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Once;

use anyhow::{Context, Result, anyhow};
use image::ImageEncoder;
use image::codecs::png::PngEncoder;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::eval::EvalReport;
use crate::fsutil::write_atomic;

/// The plots' typeface travels inside the binary so a bare machine draws
/// labels too (DejaVu Sans, license in assets/DejaVuSans.LICENSE).
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

fn register_font() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT)
            .map_err(|_| anyhow!("the bundled plot font could not be read"));
    });
    result
}

/// Renders `draw` on a white w x h canvas and writes it as PNG to `path`.
fn render_png(
    path: &Path,
    (w, h): (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend, plotters::coord::Shift>) -> Result<()>,
) -> Result<()> {
    register_font()?;
    let mut pixels = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (w, h)).into_drawing_area();
        root.fill(&WHITE)?;
        draw(&root)?;
        root.present()?;
    }
    let mut png = Vec::new();
    PngEncoder::new(&mut png)
        .write_image(&pixels, w, h, image::ExtendedColorType::Rgb8)
        .with_context(|| format!("cannot encode {}", path.display()))?;
    write_atomic(path, &png)
}

/// Centred moving average (window `w`), so noisy per-step losses read as a trend.
fn smooth(values: &[(f64, f64)], w: usize) -> Vec<(f64, f64)> {
    let half = w / 2;
    (0..values.len())
        .map(|i| {
            let lo = i.saturating_sub(half);
            let hi = (i + half + 1).min(values.len());
            let mean = values[lo..hi].iter().map(|v| v.1).sum::<f64>() / (hi - lo) as f64;
            (values[i].0, mean)
        })
        .collect()
}

/// Padded value range of a series; a flat series still gets a visible band.
fn value_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-3 * lo.abs().max(1.0));
    (lo - pad, hi + pad)
}

/// One chart: its title, its points and whether x counts steps (else epochs).
struct Panel {
    name: String,
    points: Vec<(f64, f64)>,
    per_step: bool,
}

/// One panel per loss (and one for the validation score) of one stage.
struct StageCurves {
    losses: BTreeMap<String, Vec<(f64, f64)>>,
    validation: Vec<(f64, f64)>,
}

/// Groups metric lines by stage, in file order (a resumed run has dropped
/// the rows it replays, so the x axis is the step count).
fn read_curves(metrics: &Path) -> Result<BTreeMap<String, StageCurves>> {
    let mut stages: BTreeMap<String, StageCurves> = BTreeMap::new();
    for m in crate::metrics::read(metrics)? {
        let stage = stages
            .entry(m.stage.clone())
            .or_insert_with(|| StageCurves {
                losses: BTreeMap::new(),
                validation: Vec::new(),
            });
        if let Some(v) = m.validation {
            if v.is_finite() {
                stage.validation.push(((m.epoch + 1) as f64, v));
            }
            continue;
        }
        for (name, value) in m.losses {
            let series = stage.losses.entry(name).or_default();
            let x = series.len() as f64 + 1.0;
            if value.is_finite() {
                series.push((x, value));
            }
        }
    }
    Ok(stages)
}

/// The unit of a logged series, for its y axis.
fn unit(name: &str) -> &'static str {
    match name {
        "recon" | "l1" | "recon_coarse" | "recon_fine" => "L1 in [-1,1] units",
        "ce_adv" | "loss" => "cross-entropy (nats)",
        "lr_factor" => "fraction of the base lr",
        "lambda" => "weight",
        n if n.contains("ratio") => "ratio",
        n if n.contains("stalled") || n.contains("fraction") => "fraction",
        _ => "loss value",
    }
}

/// One panel: a per-step series (raw and smoothed) or the per-epoch
/// validation score; a validation series of fewer than three epochs is
/// drawn as labelled points, not a line that reads as a curve.
fn draw_panel(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    panel: &Panel,
) -> Result<()> {
    let series = &panel.points;
    let x_max = series.last().map_or(1.0, |p| p.0).max(2.0);
    let (y0, y1) = value_range(series.iter().map(|p| p.1));
    let (x_desc, y_desc) = match panel.per_step {
        true => ("optimizer step", unit(&panel.name)),
        false => ("epoch", "score (accuracy, or minus L1)"),
    };
    let x_min = if panel.per_step { 1.0 } else { 0.5 };
    let x_max = if panel.per_step { x_max } else { x_max + 0.5 };
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.name, (FAMILY, 16))
        .margin(8)
        .x_label_area_size(34)
        .y_label_area_size(64)
        .build_cartesian_2d(x_min..x_max, y0..y1)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .label_style((FAMILY, 12))
        .draw()?;
    if panel.per_step {
        let window = (series.len() / 40).max(1) | 1;
        chart.draw_series(LineSeries::new(series.iter().copied(), BLUE.mix(0.25)))?;
        chart.draw_series(LineSeries::new(
            smooth(series, window),
            BLUE.stroke_width(2),
        ))?;
        return Ok(());
    }
    if series.len() >= 3 {
        chart.draw_series(LineSeries::new(series.iter().copied(), RED.stroke_width(2)))?;
    }
    chart.draw_series(series.iter().map(|p| Circle::new(*p, 4, RED.filled())))?;
    if series.len() < 3 {
        chart.draw_series(
            series
                .iter()
                .map(|&(x, y)| Text::new(format!("  {y:.4}"), (x, y), (FAMILY, 12).into_font())),
        )?;
    }
    Ok(())
}

/// Draws `curves-<stage>.png` into `dir` for every stage in `dir/metrics.jsonl`.
pub fn training_curves(dir: &Path) -> Result<Vec<PathBuf>> {
    let metrics = dir.join("metrics.jsonl");
    if !metrics.exists() {
        return Ok(Vec::new());
    }
    let mut written = Vec::new();
    for (stage, curves) in read_curves(&metrics)? {
        // A series that never moves (λ without warm-up) is said in the
        // title, not drawn as a flat panel.
        let (constant, moving): (Vec<_>, Vec<_>) = curves
            .losses
            .into_iter()
            .filter(|(_, points)| !points.is_empty())
            .partition(|(_, points)| points.iter().all(|p| p.1 == points[0].1));
        let mut panels: Vec<Panel> = moving
            .into_iter()
            .map(|(name, points)| Panel {
                name,
                points,
                per_step: true,
            })
            .collect();
        if !curves.validation.is_empty() {
            panels.push(Panel {
                name: "validation score (per epoch)".into(),
                points: curves.validation,
                per_step: false,
            });
        }
        if panels.is_empty() {
            continue;
        }
        let mut title = format!("{stage}: training curves");
        if !constant.is_empty() {
            let fixed: Vec<String> = constant
                .iter()
                .map(|(name, points)| format!("{name} = {}", points[0].1))
                .collect();
            title.push_str(&format!(" (constant: {})", fixed.join(", ")));
        }
        let cols = if panels.len() > 3 { 2 } else { 1 };
        let rows = panels.len().div_ceil(cols);
        let path = dir.join(format!("curves-{stage}.png"));
        render_png(&path, (560 * cols as u32, 40 + 240 * rows as u32), |root| {
            let (top, body) = root.split_vertically(40);
            top.titled(&title, (FAMILY, 20))?;
            for (area, panel) in body.split_evenly((rows, cols)).iter().zip(&panels) {
                draw_panel(area, panel)?;
            }
            Ok(())
        })?;
        written.push(path);
    }
    Ok(written)
}

/// The label of a results row, e.g. "RT+purifier (AToP) · PGD full".
fn row_label(model: &str, attack: &str, mode: &str) -> String {
    if attack == "clean" || attack == crate::eval::TRANSFORM_ONLY {
        format!("{model} · {attack}")
    } else {
        format!("{model} · {} {mode}", attack.to_uppercase())
    }
}

/// The expected accuracy's bars (orange, apart from the two blues).
const MEAN_COLOR: RGBColor = RGBColor(230, 120, 20);

/// Draws `results.png`: accuracy per evaluated row: expected over the final
/// draws, robust in every draw, and by majority vote.
pub fn results(report: &EvalReport, path: &Path, title: &str) -> Result<()> {
    let rows = &report.rows;
    if rows.is_empty() {
        return Ok(());
    }
    let n = rows.len();
    let height = 110 + 54 * n as u32;
    render_png(path, (1100, height), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!("{title} ({} test points)", report.indices.len()),
                (FAMILY, 20),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(330)
            .build_cartesian_2d(0.0..100.0, 0.0..n as f64)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_desc("accuracy (%)")
            .label_style((FAMILY, 12))
            .draw()?;
        let label_style =
            TextStyle::from((FAMILY, 13).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
        let value_style =
            TextStyle::from((FAMILY, 11).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        for (i, r) in rows.iter().enumerate() {
            // First row on top.
            let top = (n - i) as f64 - 0.12;
            let bars = [
                (100.0 * r.accuracy_mean, top - 0.26, MEAN_COLOR),
                (100.0 * r.accuracy_every_draw, top - 0.52, BLUE),
                (100.0 * r.accuracy_majority, top - 0.78, CYAN),
            ];
            for (value, y, color) in bars {
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(0.0, y), (value, y + 0.24)],
                    color.mix(0.8).filled(),
                )))?;
                let (px, py) = chart.backend_coord(&(value, y + 0.12));
                root.draw(&Text::new(
                    format!("{value:.1}%"),
                    (px + 4, py),
                    value_style.clone(),
                ))?;
            }
            let (px, py) = chart.backend_coord(&(0.0, top - 0.40));
            root.draw(&Text::new(
                row_label(&r.model, &r.attack, &r.mode),
                (px - 8, py),
                label_style.clone(),
            ))?;
        }
        // The legend sits in the caption's row, clear of the bars.
        let (lx, ly) = (1100 - 200, 6);
        for (k, (text, color)) in [
            ("mean over draws", MEAN_COLOR),
            ("robust in every draw", BLUE),
            ("majority vote", CYAN),
        ]
        .into_iter()
        .enumerate()
        {
            let y = ly + 15 * k as i32;
            root.draw(&Rectangle::new(
                [(lx, y), (lx + 14, y + 12)],
                color.mix(0.8).filled(),
            ))?;
            root.draw(&Text::new(text, (lx + 20, y + 6), value_style.clone()))?;
        }
        Ok(())
    })
}
