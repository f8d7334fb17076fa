//! Hostile input to the parsers of outside bytes: the permalink and the
//! artifact reader. Property tests carry the fuzz targets' invariants (fuzz/)
//! into CI: any input gives a value or an error, never a panic, and what
//! parses once parses the same again.

use atop::artifact::Artifact;
use atop::demo::permalink::Permalink;
use proptest::prelude::*;

use crate::common::*;

fn small_artifact() -> Vec<u8> {
    let d = device();
    let cfg = small_cnn_fmnist();
    let classifier = cfg.init(&d).unwrap();
    let manifest = atop::artifact::Manifest {
        classifier: Some(cfg),
        transform: Some(atop::transform::TransformConfig::rt2()),
        ..Default::default()
    };
    Artifact::new(manifest, Some(&classifier), None, None)
        .unwrap()
        .to_bytes()
        .unwrap()
}

/// A valid link's parameters, each replaced by an arbitrary string.
fn mangled_link() -> impl Strategy<Value = String> {
    let keys = atop::demo::permalink::PARAMETERS;
    (any::<usize>(), any::<String>()).prop_map(move |(k, value)| {
        let good = format!(
            "v=2&artifact={}&image=sample:1&attack=pgd&norm=linf&eps=0.1&steps=3&eot=2&transform=rt2&mode=full&seed=9",
            "ab".repeat(32)
        );
        let key = keys[k % keys.len()];
        good.split('&')
            .map(|p| {
                if p.starts_with(&format!("{key}=")) {
                    format!("{key}={value}")
                } else {
                    p.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("&")
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_query_parses_or_errors_and_round_trips(query in any::<String>()) {
        if let Ok(link) = Permalink::from_query(&query) {
            prop_assert_eq!(Permalink::from_query(&link.to_query()).unwrap(), link);
        }
    }

    #[test]
    fn a_mangled_parameter_parses_or_errors_and_round_trips(query in mangled_link()) {
        if let Ok(link) = Permalink::from_query(&query) {
            prop_assert!(link.steps <= 1000 && link.eot <= 100);
            prop_assert_eq!(Permalink::from_query(&link.to_query()).unwrap(), link);
        }
    }

    #[test]
    fn uploaded_pixel_links_with_any_dimensions_never_panic(
        w in any::<u64>(), h in any::<u64>(), c in any::<u64>(), hex in "[0-9a-f\u{e9}]{0,64}"
    ) {
        let query = format!(
            "v=2&artifact={}&image=pixels:{w}x{h}x{c}:{hex}&attack=pgd&norm=linf&eps=0.1&steps=3&eot=2&transform=rt2&mode=full&seed=9",
            "ab".repeat(32)
        );
        let _ = Permalink::from_query(&query);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn any_bytes_read_as_an_artifact_or_an_error(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = Artifact::from_bytes(&bytes, "fuzz.safetensors");
    }

    #[test]
    fn a_damaged_artifact_reads_or_errors(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = small_artifact();
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        let keep = cut.index(bytes.len() + 1);
        if let Ok(artifact) = Artifact::from_bytes(&bytes[..keep.max(bytes.len() / 2)], "fuzz") {
            // Whatever reads back verified must also build its models.
            let _ = artifact.check_models(&device(), "fuzz");
        }
    }
}

#[test]
fn an_edited_transform_breaks_the_defense_identity() {
    let mut bytes = small_artifact();
    // The manifest is JSON inside the header's JSON, so its quotes are escaped.
    let (from, to) = (br#"\"missing_rate\":0.25"#, br#"\"missing_rate\":0.95"#);
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .expect("the manifest holds the transform");
    bytes[at..at + to.len()].copy_from_slice(to);
    let err = Artifact::from_bytes(&bytes, "edited.safetensors")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("edited.safetensors") && err.contains("defense identity mismatch"),
        "{err}"
    );
}

#[test]
fn a_hostile_model_size_is_an_error_before_any_allocation() {
    // A manifest can name any width (its identity is a hash, not a
    // signature); init refuses sizes far past any real model.
    let mut cfg = small_cnn_fmnist();
    if let atop::model::ClassifierConfig::SmallCnn(c) = &mut cfg {
        c.width = 1 << 40;
    }
    assert_over_limit(cfg.init(&device()).err(), "classifier.width");
    let mut gan = small_gan(1);
    if let atop::model::PurifierConfig::Gan(c) = &mut gan {
        c.cnum = 1 << 40;
    }
    assert_over_limit(gan.init(&device()).err(), "purifier.cnum");
}

/// `err` is there and names `key` and its limit.
fn assert_over_limit(err: Option<atop::AtopError>, key: &str) {
    let err = err
        .unwrap_or_else(|| panic!("{key} = 2^40 was accepted"))
        .to_string();
    assert!(err.contains(key) && err.contains("limit"), "{err}");
}
