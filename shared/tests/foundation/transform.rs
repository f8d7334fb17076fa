use atop::rng::seeded;
use atop::transform::{MaskScope, TransformConfig, TransformKind};

use crate::common::*;

fn holes_per_sample(draw: &atop::transform::TransformDraw, pass: usize) -> Vec<usize> {
    draw.cell_masks[pass]
        .iter()
        .map(|cells| cells.iter().filter(|&&h| h).count())
        .collect()
}

#[test]
fn mask_hole_count_is_exact_for_every_rate_and_grid() {
    let d = device();
    for grid in [1usize, 2, 4, 7, 8] {
        let size = grid * 4;
        let cells = grid * grid;
        for k in 0..=20 {
            let rate = k as f64 / 20.0;
            let cfg = TransformConfig {
                kind: TransformKind::Rt1,
                missing_rate: rate,
                grid,
                ..TransformConfig::default()
            };
            let draw = cfg.draw(&mut seeded(k), [5, 1, size, size]).unwrap();
            let expected = (rate * cells as f64).round() as usize;
            assert!(
                holes_per_sample(&draw, 0).iter().all(|&h| h == expected),
                "grid {grid} rate {rate}: expected {expected} holes"
            );
            // The pixel mask agrees with the cells: 16 pixels per hole cell.
            let mask = values(draw.mask(0, &d));
            for s in 0..5 {
                let pixels: f32 = mask[s * size * size..(s + 1) * size * size].iter().sum();
                assert_eq!(
                    pixels as usize,
                    expected * 16,
                    "grid {grid} rate {rate} sample {s}"
                );
            }
        }
    }
}

#[test]
fn default_rate_blanks_16_of_64_cells() {
    let draw = TransformConfig::rt2()
        .draw(&mut seeded(0), [3, 3, 32, 32])
        .unwrap();
    assert_eq!(holes_per_sample(&draw, 0), vec![16, 16, 16]);
}

#[test]
fn rt3_masks_are_disjoint_and_cover_the_image() {
    let d = device();
    for (grid, passes) in [(8usize, 4usize), (7, 4), (4, 3)] {
        let size = grid * 4;
        let cfg = TransformConfig {
            kind: TransformKind::Rt3,
            passes,
            grid,
            ..TransformConfig::default()
        };
        let draw = cfg.draw(&mut seeded(9), [4, 1, size, size]).unwrap();
        assert_eq!(draw.num_passes(), passes);
        let mut coverage = vec![0f32; 4 * size * size];
        for pass in 0..passes {
            for (c, m) in coverage.iter_mut().zip(values(draw.mask(pass, &d))) {
                *c += m;
            }
        }
        assert!(
            coverage.iter().all(|&c| c == 1.0),
            "grid {grid}, {passes} passes"
        );
        if grid == 8 {
            assert_eq!(holes_per_sample(&draw, 0), vec![16; 4]);
        }
    }
}

#[test]
fn same_seed_same_draw_different_seed_different_draw() {
    let cfg = TransformConfig::rt2();
    let a = cfg.draw(&mut seeded(7), [2, 3, 32, 32]).unwrap();
    let b = cfg.draw(&mut seeded(7), [2, 3, 32, 32]).unwrap();
    let c = cfg.draw(&mut seeded(8), [2, 3, 32, 32]).unwrap();
    assert_eq!(a, b);
    assert_ne!(a.cell_masks, c.cell_masks);
    let d = device();
    assert_ne!(
        values(a.noise(0, &d).unwrap()),
        values(c.noise(0, &d).unwrap())
    );
}

#[test]
fn masks_are_per_sample_by_default_and_shared_on_request() {
    let per = TransformConfig::rt1()
        .draw(&mut seeded(1), [8, 1, 32, 32])
        .unwrap();
    let first = &per.cell_masks[0][0];
    assert!(
        per.cell_masks[0].iter().any(|m| m != first),
        "per-sample masks all equal"
    );
    let shared_cfg = TransformConfig {
        mask_scope: MaskScope::BatchShared,
        ..TransformConfig::rt1()
    };
    let shared = shared_cfg.draw(&mut seeded(1), [8, 1, 32, 32]).unwrap();
    assert!(
        shared.cell_masks[0]
            .iter()
            .all(|m| m == &shared.cell_masks[0][0])
    );
}

#[test]
fn noise_statistics_match_sigma() {
    let d = device();
    for sigma in [0.1f64, 0.25, 0.5] {
        let cfg = TransformConfig {
            noise_sigma: sigma,
            ..TransformConfig::rt2()
        };
        let draw = cfg.draw(&mut seeded(11), [16, 3, 32, 32]).unwrap();
        let noise = values(draw.noise(0, &d).unwrap());
        let n = noise.len() as f64;
        let mean = noise.iter().map(|&v| v as f64).sum::<f64>() / n;
        let std = (noise
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / n)
            .sqrt();
        assert!(
            mean.abs() < 0.01 * sigma.max(0.1),
            "sigma {sigma}: mean {mean}"
        );
        assert!((std / sigma - 1.0).abs() < 0.02, "sigma {sigma}: std {std}");
    }
}

#[test]
fn rt2_clips_noise_and_zeroes_holes() {
    let d = device();
    let x = images([2, 3, 32, 32], 5, &d);
    let draw = TransformConfig::rt2()
        .draw(&mut seeded(3), [2, 3, 32, 32])
        .unwrap();
    let out = draw.apply(x.clone()).unwrap();
    assert_eq!(out.len(), 1);
    let img = values(out[0].image.clone());
    let mask = values(out[0].mask.clone());
    let xs = values(x);
    let noise = values(draw.noise(0, &d).unwrap());
    for i in 0..img.len() {
        let (s, rest) = (i / (3 * 1024), i % 1024);
        let hole = mask[s * 1024 + rest] == 1.0;
        let expected = if hole {
            0.0
        } else {
            (xs[i] + noise[i]).clamp(0.0, 1.0)
        };
        assert!((img[i] - expected).abs() < 1e-6, "pixel {i}");
    }
}

#[test]
fn rt1_adds_no_noise() {
    let d = device();
    let x = images([1, 1, 32, 32], 2, &d);
    let draw = TransformConfig::rt1()
        .draw(&mut seeded(3), [1, 1, 32, 32])
        .unwrap();
    assert!(draw.noise(0, &d).is_none());
    let out = values(draw.apply(x.clone()).unwrap()[0].image.clone());
    let mask = values(draw.mask(0, &d));
    for ((o, xi), m) in out.iter().zip(values(x)).zip(mask) {
        assert_eq!(*o, xi * (1.0 - m));
    }
}

#[test]
fn bad_transform_configs_name_the_field() {
    let cases = [
        (
            TransformConfig {
                missing_rate: 1.5,
                ..Default::default()
            },
            32,
            "missing_rate",
        ),
        (
            TransformConfig {
                missing_rate: -0.1,
                ..Default::default()
            },
            32,
            "missing_rate",
        ),
        (
            TransformConfig {
                noise_sigma: -1.0,
                ..Default::default()
            },
            32,
            "noise_sigma",
        ),
        (
            TransformConfig {
                noise_sigma: f64::NAN,
                ..Default::default()
            },
            32,
            "noise_sigma",
        ),
        (TransformConfig::default(), 28, "grid"),
        (
            TransformConfig {
                grid: 0,
                ..Default::default()
            },
            32,
            "grid",
        ),
        (
            TransformConfig {
                passes: 0,
                ..TransformConfig::rt3()
            },
            32,
            "passes",
        ),
    ];
    for (cfg, size, field) in cases {
        let err = cfg
            .draw(&mut seeded(0), [1, 1, size, size])
            .unwrap_err()
            .to_string();
        assert!(err.contains(field), "{err}");
    }
}

#[test]
fn apply_rejects_a_batch_of_another_shape() {
    let d = device();
    let draw = TransformConfig::rt2()
        .draw(&mut seeded(0), [2, 3, 32, 32])
        .unwrap();
    let err = draw
        .apply(images([1, 3, 32, 32], 0, &d))
        .unwrap_err()
        .to_string();
    assert!(err.contains("transform input"), "{err}");
}

#[test]
fn config_parses_from_json_with_defaults_and_rejects_unknown_keys() {
    let cfg: TransformConfig = serde_json::from_str(r#"{"kind": "rt3", "grid": 7}"#).unwrap();
    assert_eq!(cfg.kind, TransformKind::Rt3);
    assert_eq!(cfg.passes, 4);
    assert_eq!(cfg.noise_sigma, 0.25);
    assert!(serde_json::from_str::<TransformConfig>(r#"{"sigma": 0.2}"#).is_err());
}
