//! Loaders tested on small files written in each dataset's real format.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::*;

fn tmp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("atop-data-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        out.extend(d.to_be_bytes());
    }
    out.extend(data);
    out
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Writes the four IDX files: `n_train` and `n_test` 4x4 images.
fn write_idx(dir: &Path, n_train: u32, n_test: u32, compress: bool) {
    for (prefix, n) in [("train", n_train), ("t10k", n_test)] {
        let pixels: Vec<u8> = (0..n * 16).map(|i| (i % 256) as u8).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        let images = idx_bytes(&[n, 4, 4], &pixels);
        let labels = idx_bytes(&[n], &labels);
        let (ext, images, labels) = if compress {
            (".gz", gz(&images), gz(&labels))
        } else {
            ("", images, labels)
        };
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte{ext}")), images).unwrap();
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte{ext}")), labels).unwrap();
    }
}

#[test]
fn idx_loads_gzip_and_raw_files() {
    for compress in [true, false] {
        let dir = tmp_dir(&format!("idx-{compress}"));
        write_idx(&dir, 12, 5, compress);
        let (train, test) = load(DatasetKind::FashionMnist, Some(&dir), 0).unwrap();
        assert_eq!((train.len(), test.len()), (12, 5));
        assert_eq!(train.shape, [1, 4, 4]);
        assert_eq!(train.labels[..3], [0, 1, 2]);
        assert_eq!(train.image(1)[0], 16.0 / 255.0);
        assert_eq!(train.files.len(), 2);
        assert_eq!(train.class_names[9], "Ankle boot");
    }
}

#[test]
fn idx_errors_name_the_file_and_the_problem() {
    let dir = tmp_dir("idx-bad");
    write_idx(&dir, 6, 3, false);
    let images = dir.join("train-images-idx3-ubyte");
    let full = std::fs::read(&images).unwrap();
    std::fs::write(&images, &full[..full.len() - 5]).unwrap();
    let err = format!(
        "{:#}",
        load(DatasetKind::FashionMnist, Some(&dir), 0).unwrap_err()
    );
    assert!(
        err.contains("train-images-idx3-ubyte") && err.contains("promises"),
        "{err}"
    );

    std::fs::write(&images, b"not an idx file").unwrap();
    let err = format!(
        "{:#}",
        load(DatasetKind::FashionMnist, Some(&dir), 0).unwrap_err()
    );
    assert!(err.contains("bad magic"), "{err}");

    write_idx(&dir, 6, 3, false);
    std::fs::write(
        dir.join("train-labels-idx1-ubyte"),
        idx_bytes(&[5], &[0; 5]),
    )
    .unwrap();
    let err = format!(
        "{:#}",
        load(DatasetKind::FashionMnist, Some(&dir), 0).unwrap_err()
    );
    assert!(err.contains("labels") && err.contains("6 images"), "{err}");

    write_idx(&dir, 6, 3, true);
    std::fs::remove_file(dir.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    std::fs::remove_file(dir.join("t10k-labels-idx1-ubyte")).unwrap();
    let err = format!(
        "{:#}",
        load(DatasetKind::FashionMnist, Some(&dir), 0).unwrap_err()
    );
    assert!(err.contains("missing t10k-labels-idx1-ubyte"), "{err}");

    write_idx(&dir, 6, 3, true);
    let gz_path = dir.join("train-images-idx3-ubyte.gz");
    let bytes = std::fs::read(&gz_path).unwrap();
    std::fs::write(&gz_path, &bytes[..bytes.len() / 2]).unwrap();
    let err = format!(
        "{:#}",
        load(DatasetKind::FashionMnist, Some(&dir), 0).unwrap_err()
    );
    assert!(err.contains("gzip"), "{err}");
}

#[test]
fn hostile_idx_headers_are_errors_not_panics() {
    let path = Path::new("hostile-idx");
    // Dimensions whose product overflows usize, a rank with no room for its
    // dimensions, and a product that fits but is not the data's length.
    let cases: [(Vec<u8>, &str); 4] = [
        (
            idx_bytes(&[u32::MAX, u32::MAX, u32::MAX], &[1, 2, 3]),
            "more than usize::MAX",
        ),
        (vec![0, 0, 0x08, 255, 0, 0, 0, 1], "truncated IDX header"),
        (idx_bytes(&[u32::MAX, 2], &[0; 8]), "promises"),
        (vec![0, 0, 0x08], "bad magic"),
    ];
    for (bytes, expected) in cases {
        let err = format!("{:#}", idx::parse(path, &bytes).unwrap_err());
        assert!(
            err.contains(expected) && err.contains("hostile-idx"),
            "{err}"
        );
    }
}

#[test]
fn mnist_is_never_looked_for_where_fashion_mnist_lives() {
    // The two share their IDX file names, so a shared directory would train
    // on the wrong dataset without a word.
    for place in idx_candidates(DatasetKind::Mnist) {
        let place = place.display().to_string();
        assert!(
            place.ends_with("/mnist") && !place.contains("fashion"),
            "{place}"
        );
    }
    if idx::find_dir(&idx_candidates(DatasetKind::Mnist)).is_none() {
        let err = format!("{:#}", load(DatasetKind::Mnist, None, 0).unwrap_err());
        assert!(
            err.contains("mnist not found") && err.contains("data.dir"),
            "{err}"
        );
    }
}

fn cifar_record(label_bytes: &[u8], value: u8) -> Vec<u8> {
    let mut r = label_bytes.to_vec();
    r.extend(std::iter::repeat_n(value, 3072));
    r
}

#[test]
fn cifar10_and_cifar100_binary_files_load() {
    let dir = tmp_dir("cifar10");
    for i in 1..=5 {
        let bytes: Vec<u8> = (0..2)
            .flat_map(|j| cifar_record(&[(i + j) as u8 % 10], 51))
            .collect();
        std::fs::write(dir.join(format!("data_batch_{i}.bin")), bytes).unwrap();
    }
    std::fs::write(dir.join("test_batch.bin"), cifar_record(&[3], 255)).unwrap();
    let (train, test) = load(DatasetKind::Cifar10, Some(&dir), 0).unwrap();
    assert_eq!((train.len(), test.len()), (10, 1));
    assert_eq!(train.shape, [3, 32, 32]);
    assert_eq!(test.labels, vec![3]);
    assert_eq!(test.image(0)[100], 1.0);
    assert_eq!(train.class_names[0], "airplane");

    let dir = tmp_dir("cifar100");
    std::fs::write(
        dir.join("train.bin"),
        [cifar_record(&[1, 42], 0), cifar_record(&[2, 99], 0)].concat(),
    )
    .unwrap();
    std::fs::write(dir.join("test.bin"), cifar_record(&[3, 7], 0)).unwrap();
    let (train, test) = load(DatasetKind::Cifar100, Some(&dir), 0).unwrap();
    assert_eq!(train.labels, vec![42, 99], "fine labels");
    assert_eq!(test.labels, vec![7]);
    assert_eq!(train.class_names.len(), 100);
}

#[test]
fn cifar_errors_name_the_file() {
    let dir = tmp_dir("cifar-bad");
    for i in 1..=5 {
        std::fs::write(
            dir.join(format!("data_batch_{i}.bin")),
            cifar_record(&[1], 0),
        )
        .unwrap();
    }
    std::fs::write(dir.join("test_batch.bin"), &cifar_record(&[1], 0)[..3000]).unwrap();
    let err = format!(
        "{:#}",
        load(DatasetKind::Cifar10, Some(&dir), 0).unwrap_err()
    );
    assert!(
        err.contains("test_batch.bin") && err.contains("records"),
        "{err}"
    );
    std::fs::write(dir.join("test_batch.bin"), cifar_record(&[12], 0)).unwrap();
    let err = format!(
        "{:#}",
        load(DatasetKind::Cifar10, Some(&dir), 0).unwrap_err()
    );
    assert!(err.contains("label 12"), "{err}");
    std::fs::remove_file(dir.join("data_batch_3.bin")).unwrap();
    let err = format!(
        "{:#}",
        load(DatasetKind::Cifar10, Some(&dir), 0).unwrap_err()
    );
    assert!(err.contains("data_batch_3.bin"), "{err}");
}

#[test]
fn image_folder_resizes_and_crops_png_and_jpeg() {
    let dir = tmp_dir("folder");
    for split in ["train", "val"] {
        for class in ["n01", "n02"] {
            std::fs::create_dir_all(dir.join(split).join(class)).unwrap();
        }
        // A 40x20 red PNG and a 16x32 blue JPEG.
        let png = image::RgbImage::from_pixel(40, 20, image::Rgb([255, 0, 0]));
        png.save(dir.join(split).join("n01").join("a.png")).unwrap();
        let jpg = image::RgbImage::from_pixel(16, 32, image::Rgb([0, 0, 255]));
        jpg.save(dir.join(split).join("n02").join("b.JPEG"))
            .unwrap();
        std::fs::write(dir.join(split).join("n02").join("notes.txt"), "ignored").unwrap();
    }
    let (train, val) = load(DatasetKind::Imagenette, Some(&dir), 8).unwrap();
    assert_eq!(train.shape, [3, 8, 8]);
    assert_eq!((train.len(), val.len()), (2, 2));
    assert_eq!(train.labels, vec![0, 1]);
    assert_eq!(train.class_names, vec!["n01", "n02"]);
    let red = train.image(0);
    assert!(
        (red[0] - 1.0).abs() < 1e-6 && red[64] == 0.0,
        "red channel first"
    );
    let blue = train.image(1);
    assert!(blue[128 + 27] > 0.9 && blue[27] < 0.1, "blue JPEG");

    std::fs::write(
        dir.join("train").join("n01").join("broken.png"),
        b"not a png",
    )
    .unwrap();
    let err = format!(
        "{:#}",
        load(DatasetKind::Imagenette, Some(&dir), 8).unwrap_err()
    );
    assert!(
        err.contains("broken.png") && err.contains("not a readable"),
        "{err}"
    );
}

#[test]
fn validation_split_is_carved_from_training_data_and_seeded() {
    let dir = tmp_dir("split");
    write_idx(&dir, 100, 5, false);
    let (train, _) = load(DatasetKind::Mnist, Some(&dir), 0).unwrap();
    let (a, va) = split_validation(&train, 0.2, 1).unwrap();
    let (b, vb) = split_validation(&train, 0.2, 1).unwrap();
    let (_, vc) = split_validation(&train, 0.2, 2).unwrap();
    assert_eq!((a.len(), va.len()), (80, 20));
    assert_eq!(va.images, vb.images);
    assert_eq!(a.labels, b.labels);
    assert_ne!(va.images, vc.images);
    assert!(split_validation(&train, 1.0, 1).is_err());
}

#[test]
fn augmentation_flips_and_shifts_within_the_frame() {
    let image: Vec<f32> = (0..16).map(|v| v as f32).collect();
    let flip = Augment {
        crop_padding: 0,
        horizontal_flip: true,
    };
    let mut rng = atop::rng::seeded(0);
    let mut flipped = 0;
    for _ in 0..20 {
        let out = flip.apply(&image, [1, 4, 4], &mut rng);
        if out[0] == 3.0 {
            flipped += 1;
            assert_eq!(out[..4], [3.0, 2.0, 1.0, 0.0]);
        } else {
            assert_eq!(out, image);
        }
    }
    assert!(
        (3..=17).contains(&flipped),
        "flip about half the time: {flipped}"
    );
    let crop = Augment {
        crop_padding: 1,
        horizontal_flip: false,
    };
    let out = crop.apply(&image, [1, 4, 4], &mut rng);
    assert_eq!(out.len(), 16);
    assert!(out.iter().all(|v| *v == 0.0 || image.contains(v)));
}

mod hostile {
    //! The invariants of the IDX and CIFAR fuzz targets (fuzz/), as property
    //! tests that run in CI: any bytes parse or give an error, never a panic,
    //! and what parses is consistent with its header.
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn any_bytes_parse_as_idx_or_error(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            if let Ok((dims, data)) = idx::parse(Path::new("fuzz"), &bytes) {
                prop_assert_eq!(dims.iter().product::<usize>(), data.len());
            }
        }

        #[test]
        fn any_idx_header_parses_or_errors(
            dims in prop::collection::vec(any::<u32>(), 0..5),
            len in 0usize..64,
        ) {
            let bytes = idx_bytes(&dims, &vec![7; len]);
            if let Ok((parsed, data)) = idx::parse(Path::new("fuzz"), &bytes) {
                prop_assert_eq!(parsed.len(), dims.len());
                prop_assert_eq!(data.len(), len);
            }
        }

        #[test]
        fn any_bytes_parse_as_cifar_or_error(
            bytes in prop::collection::vec(any::<u8>(), 0..7000),
            cifar100 in any::<bool>(),
        ) {
            if let Ok((images, labels)) = cifar::parse(Path::new("fuzz"), &bytes, cifar100) {
                prop_assert_eq!(images.len(), labels.len() * 3072);
                let classes = if cifar100 { 100 } else { 10 };
                prop_assert!(labels.iter().all(|&l| (0..classes).contains(&l)));
            }
        }
    }
}
