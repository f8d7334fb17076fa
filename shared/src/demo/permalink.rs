//! The demo's permalink: everything that determines an attack and its
//! predictions, as a URL query string, so that opening the link (or running
//! the trainer on the same values) reproduces the same adversarial image.
//!
//! `?v=1&artifact=<sha256>&image=sample:12&attack=pgd&norm=linf&eps=0.1&steps=10&eot=4&transform=rt2&mode=full&seed=42`
//!
//! An uploaded image travels in the link itself (`image=pixels:<w>x<h>x<c>:<hex>`,
//! 8-bit values after the demo's resize), since nothing else could bring it
//! back.

use std::fmt;

/// The permalink format's version; a link of another version is refused.
pub const VERSION: u32 = 1;

/// Which image was attacked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageRef {
    /// The artifact's bundled sample with this index.
    Sample(usize),
    /// An uploaded image after conversion to the model's input: `[c, h, w]`
    /// 8-bit values, row-major.
    Pixels {
        width: usize,
        height: usize,
        channels: usize,
        values: Vec<u8>,
    },
}

/// The attack's kind, as the demo offers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DemoAttack {
    Fgsm,
    Pgd,
    ApgdCe,
}

/// What the attack differentiates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DemoMode {
    /// Attack the classifier only, then score the defense (transfer).
    ClassifierOnly,
    /// Full gradients through the whole defense, with EOT.
    Full,
}

/// Everything a permalink fixes.
#[derive(Clone, Debug, PartialEq)]
pub struct Permalink {
    /// The artifact's payload SHA-256 (hex): a different artifact is refused.
    pub artifact_sha256: String,
    pub image: ImageRef,
    pub attack: DemoAttack,
    /// "linf" or "l2".
    pub norm: String,
    pub eps: f64,
    pub steps: usize,
    pub eot: usize,
    /// "rt1", "rt2" or "rt3".
    pub transform: String,
    pub mode: DemoMode,
    /// Seeds the transform draws and the attack's random start.
    pub seed: u64,
}

/// A link that cannot be read, naming the parameter and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermalinkError {
    pub parameter: String,
    pub problem: String,
}

impl fmt::Display for PermalinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "permalink parameter `{}`: {}",
            self.parameter, self.problem
        )
    }
}

impl std::error::Error for PermalinkError {}

fn bad(parameter: &str, problem: impl Into<String>) -> PermalinkError {
    PermalinkError {
        parameter: parameter.into(),
        problem: problem.into(),
    }
}

impl DemoAttack {
    pub fn name(self) -> &'static str {
        match self {
            Self::Fgsm => "fgsm",
            Self::Pgd => "pgd",
            Self::ApgdCe => "apgd-ce",
        }
    }
}

impl DemoMode {
    pub fn name(self) -> &'static str {
        match self {
            Self::ClassifierOnly => "classifier-only",
            Self::Full => "full",
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(parameter: &str, text: &str) -> Result<Vec<u8>, PermalinkError> {
    if !text.len().is_multiple_of(2) {
        return Err(bad(parameter, "odd number of hex digits"));
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&text[i..i + 2], 16)
                .map_err(|_| bad(parameter, format!("not hex at character {i}")))
        })
        .collect()
}

impl Permalink {
    /// The query string, without the leading `?`.
    pub fn to_query(&self) -> String {
        let image = match &self.image {
            ImageRef::Sample(i) => format!("sample:{i}"),
            ImageRef::Pixels {
                width,
                height,
                channels,
                values,
            } => format!("pixels:{width}x{height}x{channels}:{}", hex(values)),
        };
        // `{}` prints the shortest decimal that parses back to the same f64.
        format!(
            "v={VERSION}&artifact={}&image={image}&attack={}&norm={}&eps={}&steps={}&eot={}&transform={}&mode={}&seed={}",
            self.artifact_sha256,
            self.attack.name(),
            self.norm,
            self.eps,
            self.steps,
            self.eot,
            self.transform,
            self.mode.name(),
            self.seed
        )
    }

    /// Reads a query string (with or without the leading `?`).
    pub fn from_query(query: &str) -> Result<Self, PermalinkError> {
        let query = query.strip_prefix('?').unwrap_or(query);
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        for part in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| bad(part, "expected key=value"))?;
            if pairs.iter().any(|(seen, _)| *seen == k) {
                return Err(bad(k, "given twice"));
            }
            pairs.push((k, v));
        }
        let get = |k: &str| -> Result<&str, PermalinkError> {
            pairs
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| *v)
                .ok_or_else(|| bad(k, "missing"))
        };
        let number = |k: &str| -> Result<u64, PermalinkError> {
            get(k)?
                .parse()
                .map_err(|_| bad(k, "expected a non-negative whole number"))
        };
        let known = [
            "v",
            "artifact",
            "image",
            "attack",
            "norm",
            "eps",
            "steps",
            "eot",
            "transform",
            "mode",
            "seed",
        ];
        if let Some((k, _)) = pairs.iter().find(|(k, _)| !known.contains(k)) {
            return Err(bad(k, "unknown parameter"));
        }
        let version = number("v")?;
        if version != u64::from(VERSION) {
            return Err(bad(
                "v",
                format!("version {version}, this demo reads {VERSION}"),
            ));
        }
        let artifact_sha256 = get("artifact")?.to_ascii_lowercase();
        if artifact_sha256.len() != 64 || !artifact_sha256.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad("artifact", "expected a SHA-256 of 64 hex digits"));
        }
        let image_text = get("image")?;
        let image = if let Some(i) = image_text.strip_prefix("sample:") {
            ImageRef::Sample(
                i.parse()
                    .map_err(|_| bad("image", "sample index is not a number"))?,
            )
        } else if let Some(rest) = image_text.strip_prefix("pixels:") {
            let (dims, data) = rest
                .split_once(':')
                .ok_or_else(|| bad("image", "expected pixels:<w>x<h>x<c>:<hex>"))?;
            let d: Vec<usize> = dims
                .split('x')
                .map(|v| v.parse().map_err(|_| bad("image", "bad dimensions")))
                .collect::<Result<_, _>>()?;
            let [width, height, channels] = d[..] else {
                return Err(bad("image", "expected three dimensions w x h x c"));
            };
            let values = unhex("image", data)?;
            if values.len() != width * height * channels || values.is_empty() {
                return Err(bad(
                    "image",
                    format!("{} values for {width}x{height}x{channels}", values.len()),
                ));
            }
            ImageRef::Pixels {
                width,
                height,
                channels,
                values,
            }
        } else {
            return Err(bad("image", "expected sample:<index> or pixels:..."));
        };
        let attack = match get("attack")? {
            "fgsm" => DemoAttack::Fgsm,
            "pgd" => DemoAttack::Pgd,
            "apgd-ce" => DemoAttack::ApgdCe,
            other => {
                return Err(bad(
                    "attack",
                    format!("{other}: expected fgsm, pgd or apgd-ce"),
                ));
            }
        };
        let norm = get("norm")?;
        if norm != "linf" && norm != "l2" {
            return Err(bad("norm", format!("{norm}: expected linf or l2")));
        }
        let eps: f64 = get("eps")?
            .parse()
            .map_err(|_| bad("eps", "not a number"))?;
        if !(eps.is_finite() && eps >= 0.0) {
            return Err(bad("eps", format!("{eps}: must be finite and >= 0")));
        }
        let (steps, eot) = (number("steps")?, number("eot")?);
        if steps == 0 || eot == 0 {
            return Err(bad(
                if steps == 0 { "steps" } else { "eot" },
                "must be at least 1",
            ));
        }
        let transform = get("transform")?;
        if !["rt1", "rt2", "rt3"].contains(&transform) {
            return Err(bad(
                "transform",
                format!("{transform}: expected rt1, rt2 or rt3"),
            ));
        }
        let mode = match get("mode")? {
            "full" => DemoMode::Full,
            "classifier-only" => DemoMode::ClassifierOnly,
            other => {
                return Err(bad(
                    "mode",
                    format!("{other}: expected full or classifier-only"),
                ));
            }
        };
        Ok(Permalink {
            artifact_sha256,
            image,
            attack,
            norm: norm.to_string(),
            eps,
            steps: steps as usize,
            eot: eot as usize,
            transform: transform.to_string(),
            mode,
            seed: number("seed")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Permalink {
        Permalink {
            artifact_sha256: "ab".repeat(32),
            image: ImageRef::Sample(12),
            attack: DemoAttack::Pgd,
            norm: "linf".into(),
            eps: 0.1,
            steps: 10,
            eot: 4,
            transform: "rt2".into(),
            mode: DemoMode::Full,
            seed: 42,
        }
    }

    #[test]
    fn links_round_trip_exactly() {
        let link = example();
        let query = link.to_query();
        assert_eq!(
            query,
            format!(
                "v=1&artifact={}&image=sample:12&attack=pgd&norm=linf&eps=0.1&steps=10&eot=4&transform=rt2&mode=full&seed=42",
                "ab".repeat(32)
            )
        );
        assert_eq!(Permalink::from_query(&format!("?{query}")).unwrap(), link);
        // Awkward floats and an uploaded image survive too.
        let upload = Permalink {
            eps: 8.0 / 255.0,
            image: ImageRef::Pixels {
                width: 2,
                height: 2,
                channels: 1,
                values: vec![0, 17, 200, 255],
            },
            attack: DemoAttack::ApgdCe,
            mode: DemoMode::ClassifierOnly,
            ..example()
        };
        let back = Permalink::from_query(&upload.to_query()).unwrap();
        assert_eq!(back, upload);
        assert_eq!(back.eps.to_bits(), (8.0f64 / 255.0).to_bits());
    }

    #[test]
    fn bad_links_name_the_parameter() {
        let good = example().to_query();
        let cases = [
            (good.replace("v=1", "v=2"), "v"),
            (good.replace("eps=0.1", "eps=-1"), "eps"),
            (good.replace("eps=0.1", "eps=abc"), "eps"),
            (good.replace("steps=10", "steps=0"), "steps"),
            (good.replace("attack=pgd", "attack=cw"), "attack"),
            (good.replace("transform=rt2", "transform=rt9"), "transform"),
            (good.replace("mode=full", "mode=bpda"), "mode"),
            (
                good.replace("image=sample:12", "image=pixels:2x2x1:00ff"),
                "image",
            ),
            (good.replace(&"ab".repeat(32), "abc"), "artifact"),
            (good.replace("&seed=42", ""), "seed"),
            (format!("{good}&extra=1"), "extra"),
            (format!("{good}&seed=3"), "seed"),
        ];
        for (query, parameter) in cases {
            let err = Permalink::from_query(&query).unwrap_err();
            assert_eq!(err.parameter, parameter, "{query}: {err}");
        }
    }
}
