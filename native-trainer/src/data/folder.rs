//! An image folder (ImageNette): one sub-folder per class holding JPEG/PNG
//! files; each image is resized (shorter side to `size`, bilinear) and
//! centre-cropped to `size` x `size`, RGB.

use std::path::Path;

use anyhow::{Context, Result, bail};
use image::imageops::FilterType;

use super::{Dataset, file_hash, read_file};

pub fn load(dir: &Path, name: &str, size: usize) -> Result<Dataset> {
    if size == 0 {
        bail!("data.image_size must be at least 1 for an image folder");
    }
    let mut classes: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read image folder {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    classes.sort();
    if classes.is_empty() {
        bail!("{}: no class folders", dir.display());
    }
    let mut data = Dataset {
        name: name.to_string(),
        shape: [3, size, size],
        images: Vec::new(),
        labels: Vec::new(),
        class_names: classes.clone(),
        files: Vec::new(),
    };
    for (label, class) in classes.iter().enumerate() {
        let mut files: Vec<_> = std::fs::read_dir(dir.join(class))
            .with_context(|| format!("cannot read {}", dir.join(class).display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                    matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png")
                })
            })
            .collect();
        files.sort();
        for path in files {
            let bytes = read_file(&path)?;
            let img = image::load_from_memory(&bytes)
                .with_context(|| format!("{}: not a readable JPEG/PNG image", path.display()))?;
            data.images.extend(resize_crop(&img, size));
            data.labels.push(label as i64);
            data.files.push(file_hash(&path, &bytes));
        }
    }
    if data.is_empty() {
        bail!("{}: no JPEG/PNG images in the class folders", dir.display());
    }
    Ok(data)
}

/// Centre square crop, then resize to `size` x `size` (bilinear); CHW f32
/// in [0,1]. Cropping first bounds the work by `size` whatever the image's
/// aspect ratio (a 1 x 100000 image must not become a 224 x 22400000 one).
pub fn resize_crop(img: &image::DynamicImage, size: usize) -> Vec<f32> {
    let (w, h) = (img.width(), img.height());
    let side = w.min(h).max(1);
    let square = img.crop_imm((w - side.min(w)) / 2, (h - side.min(h)) / 2, side, side);
    let rgb = square
        .resize_exact(size as u32, size as u32, FilterType::Triangle)
        .to_rgb8();
    let mut out = vec![0f32; 3 * size * size];
    for (x, y, p) in rgb.enumerate_pixels() {
        for c in 0..3 {
            out[(c * size + y as usize) * size + x as usize] = p[c] as f32 / 255.0;
        }
    }
    out
}
