//! The `atop` binary as a user runs it.

use std::process::Command;

use atop::artifact::{Artifact, Manifest};
use atop::model::ClassifierConfig;
use atop::model::classifier::SmallCnnConfig;

fn atop(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_atop"))
        .args(args)
        .output()
        .expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn inspect_prints_a_verified_manifest() {
    let dir = std::env::temp_dir().join(format!("atop-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("small.safetensors");
    let device = burn::tensor::Device::flex();
    let cfg = ClassifierConfig::SmallCnn(SmallCnnConfig {
        width: 4,
        ..SmallCnnConfig::fashion_mnist()
    });
    let classifier = cfg.init(&device).unwrap();
    let manifest = Manifest {
        classifier: Some(cfg),
        ..Manifest::default()
    };
    let artifact = Artifact::new(manifest, Some(&classifier), None, None).unwrap();
    std::fs::write(&path, artifact.to_bytes().unwrap()).unwrap();

    let (ok, stdout, stderr) = atop(&["inspect", path.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("(verified)") && stdout.contains("small-cnn"),
        "{stdout}"
    );
    let (ok, stdout, _) = atop(&["inspect", "--json", path.to_str().unwrap()]);
    assert!(ok);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        json["payload_sha256"].as_str().unwrap(),
        artifact.manifest.payload_sha256
    );

    // A truncated copy is refused with the file's name.
    let bad = dir.join("bad.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
    let (ok, _, stderr) = atop(&["inspect", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stderr.contains("bad.safetensors") && stderr.contains("truncated"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_endless_file_given_as_an_artifact_is_refused_at_once() {
    // /dev/zero would otherwise be read until the kernel kills the process.
    let (ok, _, stderr) = atop(&["inspect", "/dev/zero"]);
    assert!(!ok);
    assert!(
        stderr.contains("/dev/zero") && stderr.contains("header length"),
        "{stderr}"
    );
}

#[test]
fn inspect_names_a_missing_file() {
    let (ok, _, stderr) = atop(&["inspect", "/nonexistent/model.safetensors"]);
    assert!(!ok);
    assert!(
        stderr.contains("/nonexistent/model.safetensors"),
        "{stderr}"
    );
}

#[test]
fn attack_replays_a_demo_link_and_refuses_bad_ones() {
    let artifact = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../web-demo/assets/fmnist-demo.safetensors"
    );
    let bytes = std::fs::read(artifact).unwrap();
    let sha = Artifact::from_bytes(&bytes, artifact)
        .unwrap()
        .manifest
        .defense_sha256;
    let link = format!(
        "v=2&artifact={sha}&image=sample:0&attack=fgsm&norm=linf&eps=0.1&steps=1&eot=1&transform=rt1&mode=classifier-only&seed=3"
    );
    let (ok, stdout, stderr) = atop(&["attack", "--artifact", artifact, "--link", &link]);
    assert!(ok, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["clean_logits"].as_array().unwrap().len(), 10);
    assert_eq!(report["adversarial"].as_array().unwrap().len(), 784);
    assert_eq!(report["permalink"], link.as_str());
    // A whole URL works too, and replays bit for bit.
    let url = format!("http://127.0.0.1:8080/#{link}");
    let (ok, again, _) = atop(&["attack", "--artifact", artifact, "--link", &url]);
    assert!(ok);
    assert_eq!(again, stdout);

    // Scoring the replay's own adversarial image gives the replay's logits
    // bit for bit; an image of the wrong size, with a value outside [0,1],
    // or a file too large to be one is refused, naming the file.
    let dir = std::env::temp_dir().join(format!("atop-cli-adv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let image_file = dir.join("adversarial.json");
    let image_arg = image_file.to_str().unwrap();
    let score = |contents: &str| {
        std::fs::write(&image_file, contents).unwrap();
        let args = [
            "attack",
            "--artifact",
            artifact,
            "--link",
            &link,
            "--adversarial",
            image_arg,
        ];
        atop(&args)
    };
    let (ok, scored, stderr) = score(&report["adversarial"].to_string());
    assert!(ok, "{stderr}");
    let scored: serde_json::Value = serde_json::from_str(&scored).unwrap();
    for field in [
        "clean_logits",
        "adversarial_logits",
        "defended_logits",
        "adversarial",
    ] {
        assert_eq!(scored[field], report[field], "{field}");
    }
    let (ok, _, stderr) = score("[0.5, 0.5]");
    assert!(
        !ok && stderr.contains("adversarial.json") && stderr.contains("2 values"),
        "{stderr}"
    );
    let (ok, _, stderr) = score(&format!("[{}1.5]", "0.5,".repeat(783)));
    assert!(!ok && stderr.contains("outside [0,1]"), "{stderr}");
    // More bytes than any JSON of 784 numbers needs: refused before parsing.
    let (ok, _, stderr) = score(&" ".repeat(64 * 784 + 4097));
    assert!(!ok && stderr.contains("too large"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();

    let other = link.replace(&sha, &"0".repeat(64));
    let (ok, _, stderr) = atop(&["attack", "--artifact", artifact, "--link", &other]);
    assert!(
        !ok && stderr.contains("--link names artifact 0000"),
        "{stderr}"
    );
    let bad = link.replace("eps=0.1", "eps=-2");
    let (ok, _, stderr) = atop(&["attack", "--artifact", artifact, "--link", &bad]);
    assert!(!ok && stderr.contains("`eps`"), "{stderr}");
}

/// Rewrites the manifest in a safetensors file's header, tensors untouched,
/// as someone editing the JSON by hand would.
fn edit_manifest(bytes: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let text = header["__metadata__"]["atop"].as_str().unwrap().to_string();
    let mut manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
    edit(&mut manifest);
    header["__metadata__"]["atop"] = manifest.to_string().into();
    let mut new_header = header.to_string().into_bytes();
    while !new_header.len().is_multiple_of(8) {
        new_header.push(b' ');
    }
    let mut out = (new_header.len() as u64).to_le_bytes().to_vec();
    out.extend(new_header);
    out.extend(&bytes[8 + n..]);
    out
}

#[test]
fn an_edited_manifest_is_not_verified() {
    let dir = std::env::temp_dir().join(format!("atop-cli-edit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let demo = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../web-demo/assets/fmnist-demo.safetensors"
    );
    let bytes = std::fs::read(demo).unwrap();
    let (ok, stdout, stderr) = atop(&["inspect", demo]);
    assert!(ok && stdout.contains("defense sha256"), "{stderr}");

    // The transform is part of the defense: editing it is caught.
    let edited = dir.join("edited-transform.safetensors");
    std::fs::write(
        &edited,
        edit_manifest(&bytes, |m| m["transform"]["missing_rate"] = 0.95.into()),
    )
    .unwrap();
    let (ok, stdout, stderr) = atop(&["inspect", edited.to_str().unwrap()]);
    assert!(
        !ok && !stdout.contains("verified") && stderr.contains("defense identity mismatch"),
        "{stdout}{stderr}"
    );
    assert!(stderr.contains("edited-transform.safetensors"), "{stderr}");

    // A manifest whose identity was recomputed but whose classifier width
    // does not describe the tensors: inspect builds the models and refuses.
    let width = dir.join("edited-width.safetensors");
    std::fs::write(
        &width,
        edit_manifest(&bytes, |m| {
            let w = m["classifier"]["width"].as_u64().unwrap();
            m["classifier"]["width"] = (2 * w).into();
            let mut manifest: Manifest = serde_json::from_value(m.clone()).unwrap();
            manifest.defense_sha256 = manifest.defense_identity();
            *m = serde_json::to_value(&manifest).unwrap();
        }),
    )
    .unwrap();
    let (ok, stdout, stderr) = atop(&["inspect", width.to_str().unwrap()]);
    assert!(
        !ok && !stdout.contains("verified") && stderr.contains("does not match its tensors"),
        "{stdout}{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_closed_stdout_ends_quietly_with_exit_0() {
    let demo = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../web-demo/assets/fmnist-demo.safetensors"
    );
    // The reading end is gone before atop writes: every write is EPIPE,
    // as in `atop inspect FILE | head -0`.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_atop"))
        .args(["inspect", demo])
        .stdout(writer)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn quickstart_refuses_a_purifier_pretrained_for_another_setting() {
    let dir = std::env::temp_dir().join(format!("atop-cli-qs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("out");
    let out = out.to_str().unwrap();
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/fmnist.toml");
    let quickstart = |purifier: &str| {
        atop(&[
            "quickstart",
            "--config",
            config,
            "--out",
            out,
            "--purifier",
            purifier,
        ])
    };
    // A missing file is named, with the way out.
    let (ok, _, stderr) = quickstart("/nonexistent/purifier.safetensors");
    assert!(!ok);
    assert!(
        stderr.contains("/nonexistent/purifier.safetensors") && stderr.contains("--pretrain"),
        "{stderr}"
    );
    // A conv AE is not the quickstart's GAN: refused before any training.
    let cfg: atop::model::PurifierConfig =
        serde_json::from_value(serde_json::json!({"kind": "ae", "image_channels": 1, "width": 4}))
            .unwrap();
    let purifier = cfg.init(&burn::tensor::Device::flex()).unwrap();
    let manifest = Manifest {
        classifier: None,
        purifier: Some(cfg),
        ..Manifest::default()
    };
    let path = dir.join("ae.safetensors");
    let artifact = Artifact::new(manifest, None, Some(&purifier), None).unwrap();
    std::fs::write(&path, artifact.to_bytes().unwrap()).unwrap();
    let (ok, _, stderr) = quickstart(path.to_str().unwrap());
    assert!(!ok);
    assert!(
        stderr.contains("ae.safetensors") && stderr.contains("[purifier] differs"),
        "{stderr}"
    );
    assert!(!dir.join("out/classifier.safetensors").exists());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bench_at_cifar_scale_writes_the_named_rows() {
    let dir = std::env::temp_dir().join(format!("atop-cli-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("bench.json");
    // ResNet-18 alone: the cheapest CIFAR-scale row (WRN-28-10 and the
    // 256x256 inpainter take seconds even at batch 1).
    let (ok, _, stderr) = atop(&[
        "bench",
        "--scale",
        "cifar",
        "--batch",
        "2",
        "--repeats",
        "1",
        "--only",
        "ResNet-18",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["name"], "ResNet-18 train step (32x32)");
    assert_eq!(rows[0]["batch"], 2);
    assert!(rows[0]["median_ms"].as_f64().unwrap() > 0.0);
    let (ok, _, stderr) = atop(&["bench", "--scale", "imagenet"]);
    assert!(!ok && stderr.contains("imagenet"), "{stderr}");
    // A row's full name at the quickstart's scale selects nothing there
    // (it picks groups): refused, naming the groups, before any timing.
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/fmnist.toml");
    let (ok, _, stderr) = atop(&["bench", "--config", config, "--only", "forward+backward"]);
    assert!(
        !ok && stderr.contains("forward+backward") && stderr.contains("finetune"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

const FMNIST_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/fmnist.toml");

/// The import golden files (scripts/golden/make_import_golden.py).
fn import_golden(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/import")
        .join(name)
}

/// A golden file's list of numbers.
fn golden_floats(name: &str, key: &str) -> Vec<f32> {
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(import_golden(name)).unwrap()).unwrap();
    golden[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// `atop import` of golden `file` into `out` with the `--set`s given, then
/// the artifact's classifier on `images` of `shape`: the artifact and the
/// largest difference of its logits from `expected` (PyTorch's).
fn import_and_compare(
    file: &str,
    sets: &[&str],
    out: &std::path::Path,
    (images, shape): (Vec<f32>, [usize; 4]),
    expected: &[f32],
) -> (Artifact, f32) {
    let weights = import_golden(file);
    let mut args = vec![
        "import",
        "--config",
        FMNIST_CONFIG,
        weights.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    for set in sets {
        args.extend(["--set", set]);
    }
    let (ok, stdout, stderr) = atop(&args);
    assert!(ok && stdout.contains("imported"), "{file}: {stderr}");
    let path = out.join("classifier.safetensors");
    let artifact = Artifact::from_bytes(&std::fs::read(&path).unwrap(), "imported").unwrap();
    let device = burn::tensor::Device::flex();
    let classifier = artifact.classifier(&device, "imported").unwrap();
    let x =
        burn::tensor::Tensor::<4>::from_data(burn::tensor::TensorData::new(images, shape), &device);
    let logits = classifier
        .forward(x)
        .unwrap()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let worst = logits
        .iter()
        .zip(expected)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    (artifact, worst)
}

#[test]
fn pytorch_weights_import_to_a_classifier_with_pytorchs_logits() {
    let images = golden_floats("small_cnn.json", "images");
    let expected = golden_floats("small_cnn.json", "logits");
    let dir = std::env::temp_dir().join(format!("atop-import-{}", std::process::id()));
    // A DataParallel .pt (keys under `module.`) and a plain .safetensors.
    for file in ["small_cnn.pt", "small_cnn.safetensors"] {
        let (artifact, worst) = import_and_compare(
            file,
            &["classifier.width=4"],
            &dir.join(file),
            (images.clone(), [3, 1, 28, 28]),
            &expected,
        );
        assert_eq!(artifact.manifest.training["stage"], "import");
        assert!(
            worst < 1e-5,
            "{file}: logits differ from PyTorch's by {worst}"
        );
    }
    // Wrong architecture, unexpected keys, and a pickle carrying code: named errors.
    let (ok, _, stderr) = atop(&[
        "import",
        "--config",
        FMNIST_CONFIG,
        import_golden("small_cnn.safetensors").to_str().unwrap(),
        "--out",
        dir.join("wide").to_str().unwrap(),
        "--set",
        "classifier.width=8",
    ]);
    assert!(
        !ok && stderr.contains("conv1.weight") && stderr.contains("shape"),
        "{stderr}"
    );
    let (ok, _, stderr) = atop(&[
        "import",
        "--config",
        FMNIST_CONFIG,
        import_golden("small_cnn.pt").to_str().unwrap(),
        "--out",
        dir.join("prefix").to_str().unwrap(),
        "--set",
        "classifier.width=4",
        "--strip-prefix",
        "model.",
    ]);
    assert!(!ok && stderr.contains("module.conv1.weight"), "{stderr}");
    let (ok, _, stderr) = atop(&[
        "import",
        "--config",
        FMNIST_CONFIG,
        import_golden("pickled_code.pt").to_str().unwrap(),
        "--out",
        dir.join("code").to_str().unwrap(),
        "--set",
        "classifier.width=4",
    ]);
    assert!(
        !ok && stderr.contains("`hook`") && stderr.contains("never runs pickled code"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Imports golden `name`.pt with the classifier configuration `classifier`
/// (3x32x32 inputs normalised with mean 0.5, std 0.25) and checks the
/// artifact's logits against PyTorch's.
fn imports_with_pytorchs_logits(name: &str, classifier: &str) {
    let dir = std::env::temp_dir().join(format!("atop-import-{name}-{}", std::process::id()));
    let classifier = format!(
        "classifier={{{classifier},image_channels=3,num_classes=10,normalization={{mean=[0.5,0.5,0.5],std=[0.25,0.25,0.25]}}}}"
    );
    let json = format!("{name}.json");
    let (_, worst) = import_and_compare(
        &format!("{name}.pt"),
        &[
            &classifier,
            r#"purifier={kind="ae",image_channels=3,width=4}"#,
        ],
        &dir,
        (golden_floats(&json, "images"), [2, 3, 32, 32]),
        &golden_floats(&json, "logits"),
    );
    assert!(
        worst < 1e-4,
        "{name}: logits differ from PyTorch's by {worst}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn robustbench_layout_resnet18_and_wide_resnet_import_with_their_batch_norm_statistics() {
    imports_with_pytorchs_logits("resnet18_w4", r#"architecture="resnet18",width=4"#);
    imports_with_pytorchs_logits(
        "wrn10_1",
        r#"architecture="wide-resnet",depth=10,widen_factor=1"#,
    );
}

#[test]
fn a_deepfillv2_layout_generator_imports_as_a_gan_purifier_with_pytorchs_output() {
    let dir = std::env::temp_dir().join(format!("atop-import-gan-{}", std::process::id()));
    let weights = import_golden("gan_generator.pt");
    let import = |key: &str| {
        atop(&[
            "import",
            "--config",
            FMNIST_CONFIG,
            weights.to_str().unwrap(),
            "--out",
            dir.to_str().unwrap(),
            "--model",
            "purifier",
            "--state-dict-key",
            key,
            "--set",
            r#"purifier={kind="gan",image_channels=1,cnum=4}"#,
        ])
    };
    let (ok, _, stderr) = import("generator");
    assert!(
        !ok && stderr.contains("no state dict under `generator`"),
        "{stderr}"
    );
    let (ok, stdout, stderr) = import("G");
    assert!(ok && stdout.contains("purifier.safetensors"), "{stderr}");
    let bytes = std::fs::read(dir.join("purifier.safetensors")).unwrap();
    let artifact = Artifact::from_bytes(&bytes, "imported").unwrap();
    assert!(artifact.manifest.classifier.is_none() && artifact.manifest.transform.is_some());
    let device = burn::tensor::Device::flex();
    let purifier = artifact.purifier(&device, "imported").unwrap();
    let tensor = |key| {
        burn::tensor::Tensor::<4>::from_data(
            burn::tensor::TensorData::new(golden_floats("gan_generator.json", key), [2, 1, 28, 28]),
            &device,
        )
    };
    let purified = purifier
        .purify(tensor("image"), tensor("mask"))
        .unwrap()
        .image;
    let purified = purified.into_data().try_to_vec::<f32>().unwrap();
    let expected = golden_floats("gan_generator.json", "purified");
    let worst = purified
        .iter()
        .zip(&expected)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        worst < 1e-4,
        "the GAN's output differs from PyTorch's by {worst}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
