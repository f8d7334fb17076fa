//! Load a shipped defense and classify images through it: a fresh random
//! transform draw, the purifier, then the classifier.
//!
//!     cargo run -p atop --example purify_and_classify -- [ARTIFACT]
//!
//! ARTIFACT defaults to the browser demo's bundled defense, which also
//! carries the test images used here.

use atop::artifact::Artifact;
use atop::defense::Defense;
use atop::host::{floats, ints};
use atop::rng::seeded;
use burn::tensor::{Device, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "web-demo/assets/fmnist-demo.safetensors".into());
    // The library never touches the file system: the caller reads the bytes.
    let artifact = Artifact::from_bytes(&std::fs::read(&path)?, &path)?;
    let device = Device::flex();
    let defense = Defense::from_artifact(&artifact, &device, &path)?;
    let samples = artifact
        .samples(&path)?
        .ok_or("this artifact bundles no images")?;
    let images = Tensor::<4>::from_data(samples.images, &device); // [n, c, h, w] in [0,1]

    let mut rng = seeded(2024); // every random draw comes from a seeded generator
    let out = defense.forward(images.clone(), &mut rng)?;
    let defended = ints(out.logits.argmax(1).flatten::<1>(0, 1), "predictions")?;
    let bare = ints(
        defense.classify(images)?.argmax(1).flatten::<1>(0, 1),
        "predictions",
    )?;
    let names = artifact
        .manifest
        .dataset
        .as_ref()
        .map(|d| d.class_names.clone());
    let name = |k: i64| {
        names
            .as_ref()
            .map_or(k.to_string(), |n| n[k as usize].clone())
    };
    println!("label -> bare classifier / defense (one random draw)");
    for (i, label) in samples.labels.iter().enumerate() {
        println!(
            "{:>12} -> {:>12} / {}",
            name(*label),
            name(bare[i]),
            name(defended[i])
        );
    }
    let purified = floats(out.purified.flatten::<1>(0, 3), "purified")?;
    println!("purified pixels: {} values in [0,1]", purified.len());
    Ok(())
}
