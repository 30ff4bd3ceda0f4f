//! SVG plots (plotters' SVG backend: no fonts or system libraries needed):
//! the latency distribution by percentile, server RSS against open
//! connections, one line per target, and a soak run's figures over time.

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;

/// One line of a plot.
pub struct Series<'a> {
    pub name: &'a str,
    pub points: &'a [(f64, f64)],
}

const COLORS: [RGBColor; 4] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
];

/// Latency against percentile, on a scale that opens up the tail: x is
/// `-log10(1 - p)`, so p90, p99 and p99.9 are evenly spaced. The axis ends at
/// the last "nines" the data reaches (at most p99.99).
pub fn latency(path: &Path, title: &str, series: &[Series]) -> anyhow::Result<()> {
    let to_x = |percentile: f64| -(1.0 - (percentile / 100.0)).max(1e-9).log10();
    let reached = series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|&&(p, _)| p < 100.0)
        .map(|&(p, _)| to_x(p))
        .fold(1.0f64, f64::max);
    let x_max = reached.ceil().clamp(1.0, 4.0);
    let lines: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .map(|s| {
            let points = s
                .points
                .iter()
                .map(|&(p, ms)| (to_x(p).min(x_max), ms))
                .collect();
            (s.name, points)
        })
        .collect();
    let y_max = max_y(&lines) * 1.1;
    let axes = Axes {
        x_desc: "percentile",
        y_desc: "latency (ms)",
        x: 0.0..x_max,
        y: 0.0..y_max,
        x_labels: x_max as usize + 1,
        x_label: &|x: &f64| {
            let nines = x.round();
            if (x - nines).abs() > 0.05 {
                return String::new();
            }
            const NAMES: [&str; 5] = ["p0", "p90", "p99", "p99.9", "p99.99"];
            NAMES.get(nines as usize).copied().unwrap_or("").to_string()
        },
    };
    draw(path, title, &axes, &lines)
}

/// Server RSS (MB) against open connections.
pub fn rss(path: &Path, title: &str, series: &[Series]) -> anyhow::Result<()> {
    let lines: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .map(|s| {
            (
                s.name,
                s.points.iter().map(|&(n, b)| (n, b / 1e6)).collect(),
            )
        })
        .collect();
    let x_max = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(x, _)| x))
        .fold(1.0f64, f64::max);
    let y_max = max_y(&lines) * 1.1;
    let axes = Axes {
        x_desc: "open connections",
        y_desc: "server RSS (MB)",
        x: 0.0..x_max,
        y: 0.0..y_max,
        x_labels: 10,
        x_label: &|x: &f64| format!("{x:.0}"),
    };
    draw(path, title, &axes, &lines)
}

/// Figures against time (minutes), one panel per unit, stacked: each panel
/// is `(y axis description, its lines)`.
pub fn over_time(path: &Path, title: &str, panels: &[(&str, &[Series])]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let plotting = |e| anyhow!("plotting {}: {e:?}", path.display());
    let height = 40 + 300 * panels.len() as u32;
    let root = SVGBackend::new(path, (760, height)).into_drawing_area();
    root.fill(&WHITE).map_err(plotting)?;
    let root = root.titled(title, ("sans-serif", 18)).map_err(plotting)?;
    let areas = root.split_evenly((panels.len().max(1), 1));
    let mut color = 0;
    for (area, (y_desc, series)) in areas.iter().zip(panels) {
        let lines: Vec<(&str, Vec<(f64, f64)>)> =
            series.iter().map(|s| (s.name, s.points.to_vec())).collect();
        let x_max = lines
            .iter()
            .flat_map(|(_, p)| p.iter().map(|&(x, _)| x))
            .fold(1e-3f64, f64::max);
        let axes = Axes {
            x_desc: "minutes",
            y_desc,
            x: 0.0..x_max,
            y: 0.0..max_y(&lines) * 1.2,
            x_labels: 10,
            x_label: &|x: &f64| {
                if x_max < 2.0 {
                    format!("{x:.2}")
                } else if x_max < 5.0 {
                    format!("{x:.1}")
                } else {
                    format!("{x:.0}")
                }
            },
        };
        chart(area, None, &axes, &lines, &mut color).map_err(plotting)?;
    }
    root.present().map_err(plotting)?;
    Ok(())
}

fn max_y(lines: &[(&str, Vec<(f64, f64)>)]) -> f64 {
    lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(_, y)| y))
        .fold(1e-3f64, f64::max)
}

/// The axes of a plot: names, ranges, and how the x labels read.
struct Axes<'a> {
    x_desc: &'a str,
    y_desc: &'a str,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
    /// How many x labels to aim for.
    x_labels: usize,
    x_label: &'a dyn Fn(&f64) -> String,
}

fn draw(
    path: &Path,
    title: &str,
    axes: &Axes,
    lines: &[(&str, Vec<(f64, f64)>)],
) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let plotting = |e| anyhow!("plotting {}: {e:?}", path.display());
    let root = SVGBackend::new(path, (760, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(plotting)?;
    chart(&root, Some(title), axes, lines, &mut 0).map_err(plotting)?;
    root.present().map_err(plotting)?;
    Ok(())
}

/// One chart of `lines` on `area`, under `caption` if given; `color` is the
/// next line's color index, carried across the panels of one figure.
fn chart<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    caption: Option<&str>,
    axes: &Axes,
    lines: &[(&str, Vec<(f64, f64)>)],
    color: &mut usize,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let mut builder = ChartBuilder::on(area);
    if let Some(caption) = caption {
        builder.caption(caption, ("sans-serif", 18));
    }
    let mut chart = builder
        .margin(12)
        .margin_right(36)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(axes.x.clone(), axes.y.clone())?;
    chart
        .configure_mesh()
        .x_desc(axes.x_desc)
        .y_desc(axes.y_desc)
        .x_labels(axes.x_labels)
        .x_label_formatter(axes.x_label)
        .draw()?;
    for (name, points) in lines {
        let line = COLORS[*color % COLORS.len()];
        *color += 1;
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                line.stroke_width(2),
            ))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], line.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_svg_files() {
        let dir = std::env::temp_dir().join(format!("herald-bench-plot-{}", std::process::id()));
        let a = [(50.0, 1.0), (90.0, 2.0), (99.0, 5.0), (99.9, 9.0)];
        let b = [(50.0, 2.0), (99.0, 8.0)];
        latency(
            &dir.join("latency.svg"),
            "latency",
            &[
                Series {
                    name: "herald",
                    points: &a,
                },
                Series {
                    name: "nchan",
                    points: &b,
                },
            ],
        )
        .unwrap();
        rss(
            &dir.join("rss.svg"),
            "rss",
            &[Series {
                name: "herald",
                points: &[(0.0, 1e6), (1000.0, 3e6)],
            }],
        )
        .unwrap();
        over_time(
            &dir.join("soak.svg"),
            "soak",
            &[
                (
                    "MB",
                    &[Series {
                        name: "RSS",
                        points: &[(0.0, 20.0), (30.0, 21.0)],
                    }],
                ),
                (
                    "count",
                    &[Series {
                        name: "open file descriptors",
                        points: &[(0.0, 13.0), (30.0, 13.0)],
                    }],
                ),
            ],
        )
        .unwrap();
        let soak = std::fs::read_to_string(dir.join("soak.svg")).unwrap();
        assert!(soak.contains("RSS") && soak.contains("open file descriptors"));
        let svg = std::fs::read_to_string(dir.join("latency.svg")).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("herald") && svg.contains("nchan"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
