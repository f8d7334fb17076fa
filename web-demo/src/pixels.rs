//! Pixel conversions between the models' `[c, h, w]` floats in [0,1] and the
//! browser's RGBA canvases. Pure Rust, tested natively.

/// RGBA bytes of an image `[c, h, w]` (c = 1 grey or 3 RGB) in [0,1].
/// Non-finite values are drawn magenta so they cannot pass unnoticed.
pub fn to_rgba(values: &[f32], [c, h, w]: [usize; 3]) -> Vec<u8> {
    let plane = h * w;
    let byte = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    (0..plane)
        .flat_map(|p| {
            let channel = |k: usize| values.get(k * plane + p).copied().unwrap_or(f32::NAN);
            let rgb = if c == 3 {
                [channel(0), channel(1), channel(2)]
            } else {
                [channel(0); 3]
            };
            if rgb.iter().any(|v| !v.is_finite()) {
                [255, 0, 255, 255]
            } else {
                [byte(rgb[0]), byte(rgb[1]), byte(rgb[2]), 255]
            }
        })
        .collect()
}

/// The transformed image with its holes shown in a flat colour (the model
/// sees zeros there, which would look like black image content).
pub fn transformed_rgba(values: &[f32], mask: &[f32], dims: [usize; 3]) -> Vec<u8> {
    let mut rgba = to_rgba(values, dims);
    for (p, &m) in mask.iter().enumerate() {
        if m > 0.5 && 4 * p + 3 < rgba.len() {
            rgba[4 * p..4 * p + 4].copy_from_slice(&[40, 90, 160, 255]);
        }
    }
    rgba
}

/// The perturbation `adversarial - clean` magnified to be visible: each
/// pixel's channel-mean change divided by the largest absolute change,
/// positive in red, negative in blue, zero white. Returns the RGBA bytes
/// and the largest absolute change (0 for no perturbation).
pub fn perturbation_rgba(
    clean: &[f32],
    adversarial: &[f32],
    [c, h, w]: [usize; 3],
) -> (Vec<u8>, f32) {
    let plane = h * w;
    let delta: Vec<f32> = (0..plane)
        .map(|p| {
            (0..c)
                .map(|k| adversarial[k * plane + p] - clean[k * plane + p])
                .sum::<f32>()
                / c as f32
        })
        .collect();
    let max = delta.iter().fold(0f32, |m, d| m.max(d.abs()));
    let rgba = delta
        .iter()
        .flat_map(|&d| {
            let t = if max > 0.0 { d / max } else { 0.0 };
            let fade = (255.0 * (1.0 - t.abs())).round() as u8;
            if t >= 0.0 {
                [255, fade, fade, 255]
            } else {
                [fade, fade, 255, 255]
            }
        })
        .collect();
    (rgba, max)
}

/// An uploaded picture's RGBA bytes (already resized to `w` x `h` by the
/// browser) as the model's 8-bit input `[c, h, w]`: RGB as is, or grey by
/// ITU-R BT.601 luma for one-channel models. Transparent pixels count as
/// black (the datasets' background for Fashion-MNIST).
pub fn rgba_to_input(rgba: &[u8], [c, h, w]: [usize; 3]) -> Result<Vec<u8>, String> {
    let plane = h * w;
    if rgba.len() != 4 * plane {
        return Err(format!(
            "expected {} RGBA bytes for {w}x{h}, got {}",
            4 * plane,
            rgba.len()
        ));
    }
    if c != 1 && c != 3 {
        return Err(format!("models with {c} channels are not supported"));
    }
    let mut out = vec![0u8; c * plane];
    for p in 0..plane {
        let px = &rgba[4 * p..4 * p + 4];
        let alpha = f32::from(px[3]) / 255.0;
        let rgb = [0, 1, 2].map(|k| f32::from(px[k]) * alpha);
        if c == 1 {
            let luma = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2];
            out[p] = luma.round().clamp(0.0, 255.0) as u8;
        } else {
            for k in 0..3 {
                out[k * plane + p] = rgb[k].round() as u8;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grey_and_colour_images_become_rgba() {
        assert_eq!(
            to_rgba(&[0.0, 1.0], [1, 1, 2]),
            vec![0, 0, 0, 255, 255, 255, 255, 255]
        );
        // [c, h, w] planes interleave into RGBA; out-of-range values clamp.
        assert_eq!(
            to_rgba(&[1.0, 2.0, 0.5, -1.0], [2, 1, 2]),
            // c = 2 is drawn from its first channel as grey.
            vec![255, 255, 255, 255, 255, 255, 255, 255]
        );
        assert_eq!(
            to_rgba(&[0.2, 0.4, 0.6], [3, 1, 1]),
            vec![51, 102, 153, 255]
        );
        assert_eq!(to_rgba(&[f32::NAN], [1, 1, 1]), vec![255, 0, 255, 255]);
    }

    #[test]
    fn holes_are_coloured() {
        let rgba = transformed_rgba(&[0.5, 0.0], &[0.0, 1.0], [1, 1, 2]);
        assert_eq!(&rgba[..4], &[128, 128, 128, 255]);
        assert_eq!(&rgba[4..], &[40, 90, 160, 255]);
    }

    #[test]
    fn perturbation_is_scaled_by_its_largest_change() {
        let (rgba, max) = perturbation_rgba(&[0.5, 0.5, 0.5], &[0.6, 0.45, 0.5], [1, 1, 3]);
        assert!((max - 0.1).abs() < 1e-6);
        assert_eq!(&rgba[..4], &[255, 0, 0, 255]); // +0.1: full red
        assert_eq!(&rgba[4..8], &[128, 128, 255, 255]); // -0.05: half blue
        assert_eq!(&rgba[8..], &[255, 255, 255, 255]); // unchanged: white
        let (flat, zero) = perturbation_rgba(&[0.3], &[0.3], [1, 1, 1]);
        assert_eq!((flat, zero), (vec![255, 255, 255, 255], 0.0));
    }

    #[test]
    fn uploads_become_model_input() {
        // One opaque white pixel, one half-transparent red, one transparent.
        let rgba = [255, 255, 255, 255, 255, 0, 0, 128, 9, 9, 9, 0];
        assert_eq!(rgba_to_input(&rgba, [1, 1, 3]).unwrap(), vec![255, 38, 0]);
        assert_eq!(
            rgba_to_input(&rgba, [3, 1, 3]).unwrap(),
            vec![255, 128, 0, 255, 0, 0, 255, 0, 0]
        );
        let err = rgba_to_input(&rgba, [1, 2, 2]).unwrap_err();
        assert!(err.contains("16 RGBA bytes"), "{err}");
    }
}
