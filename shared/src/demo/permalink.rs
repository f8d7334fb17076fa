//! The demo's permalink: everything that determines an attack and its
//! predictions, as a URL query string, so that opening the link (or running
//! the trainer on the same values) reproduces the same adversarial image.
//!
//! `?v=2&artifact=<defense sha256>&image=sample:12&attack=pgd&norm=linf&eps=0.1&steps=10&eot=4&transform=rt2&mode=full&seed=42`
//!
//! An uploaded image travels in the link itself (`image=pixels:<w>x<h>x<c>:<hex>`,
//! 8-bit values after the demo's resize), since nothing else could bring it
//! back.

use std::fmt;
use std::str::FromStr;

pub use crate::attack::Norm;
pub use crate::transform::TransformKind;

/// The permalink format's version; a link of another version is refused.
/// Version 2 names the artifact by its defense identity (weights, model
/// configurations and transform), version 1 named it by its tensors alone.
pub const VERSION: u32 = 2;

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
    /// The artifact's defense identity (`Manifest::defense_sha256`, hex): a
    /// different artifact, or the same weights with another transform, is refused.
    pub artifact_sha256: String,
    pub image: ImageRef,
    pub attack: DemoAttack,
    pub norm: Norm,
    pub eps: f64,
    pub steps: usize,
    pub eot: usize,
    pub transform: TransformKind,
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

/// The names a link (and the page's controls) use for each choice; parsing
/// goes through [`FromStr`], so the page and the parser accept the same words.
pub trait LinkName: Sized + Copy + 'static {
    const PARAMETER: &'static str;
    const ALL: &'static [Self];
    fn link_name(self) -> &'static str;
}

impl LinkName for DemoAttack {
    const PARAMETER: &'static str = "attack";
    const ALL: &'static [Self] = &[Self::Fgsm, Self::Pgd, Self::ApgdCe];
    fn link_name(self) -> &'static str {
        self.name()
    }
}

impl LinkName for DemoMode {
    const PARAMETER: &'static str = "mode";
    const ALL: &'static [Self] = &[Self::Full, Self::ClassifierOnly];
    fn link_name(self) -> &'static str {
        self.name()
    }
}

impl LinkName for Norm {
    const PARAMETER: &'static str = "norm";
    const ALL: &'static [Self] = &[Norm::Linf, Norm::L2];
    fn link_name(self) -> &'static str {
        match self {
            Norm::Linf => "linf",
            Norm::L2 => "l2",
        }
    }
}

impl LinkName for TransformKind {
    const PARAMETER: &'static str = "transform";
    const ALL: &'static [Self] = &[TransformKind::Rt1, TransformKind::Rt2, TransformKind::Rt3];
    fn link_name(self) -> &'static str {
        match self {
            TransformKind::Rt1 => "rt1",
            TransformKind::Rt2 => "rt2",
            TransformKind::Rt3 => "rt3",
        }
    }
}

/// Parses a choice by its link name, or names the parameter and the choices.
pub fn parse_choice<T: LinkName>(text: &str) -> Result<T, PermalinkError> {
    T::ALL
        .iter()
        .copied()
        .find(|t| t.link_name() == text)
        .ok_or_else(|| {
            let names: Vec<&str> = T::ALL.iter().map(|t| t.link_name()).collect();
            bad(
                T::PARAMETER,
                format!("{text}: expected one of {}", names.join(", ")),
            )
        })
}

macro_rules! link_from_str {
    ($($t:ty),*) => {$(
        impl FromStr for $t {
            type Err = PermalinkError;
            fn from_str(text: &str) -> Result<Self, PermalinkError> {
                parse_choice(text)
            }
        }
    )*};
}
link_from_str!(DemoAttack, DemoMode, Norm, TransformKind);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes hex digits. Works on bytes, so a non-ASCII character is an
/// error, not a slice through the middle of it.
fn unhex(parameter: &str, text: &str) -> Result<Vec<u8>, PermalinkError> {
    let digit = |i: usize, b: u8| {
        (b as char)
            .to_digit(16)
            .map(|d| d as u8)
            .ok_or_else(|| bad(parameter, format!("not a hex digit at byte {i}")))
    };
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return Err(bad(parameter, "odd number of hex digits"));
    }
    bytes
        .chunks_exact(2)
        .enumerate()
        .map(|(i, pair)| Ok(digit(2 * i, pair[0])? << 4 | digit(2 * i + 1, pair[1])?))
        .collect()
}

/// Budgets a link may ask for: a link runs in a browser tab, so every
/// user-given count is bounded and the error names the bound.
pub const MAX_STEPS: u64 = 1000;
pub const MAX_EOT: u64 = 100;
/// The largest side of an uploaded image carried in a link.
pub const MAX_IMAGE_SIDE: usize = 1024;

/// The parameters of a link, in the order `to_query` writes them.
pub const PARAMETERS: [&str; 11] = [
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

/// The `key=value` pairs of a query, each key at most once.
struct Pairs<'a>(Vec<(&'a str, &'a str)>);

impl<'a> Pairs<'a> {
    fn parse(query: &'a str) -> Result<Self, PermalinkError> {
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        for part in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| bad(part, "expected key=value"))?;
            if !PARAMETERS.contains(&k) {
                return Err(bad(k, "unknown parameter"));
            }
            if pairs.iter().any(|(seen, _)| *seen == k) {
                return Err(bad(k, "given twice"));
            }
            pairs.push((k, v));
        }
        Ok(Self(pairs))
    }

    fn get(&self, k: &str) -> Result<&'a str, PermalinkError> {
        self.0
            .iter()
            .find(|(key, _)| *key == k)
            .map(|(_, v)| *v)
            .ok_or_else(|| bad(k, "missing"))
    }

    fn number(&self, k: &str) -> Result<u64, PermalinkError> {
        self.get(k)?
            .parse()
            .map_err(|_| bad(k, "expected a non-negative whole number"))
    }

    /// A count in `1..=max`.
    fn budget(&self, k: &str, max: u64) -> Result<usize, PermalinkError> {
        match self.number(k)? {
            0 => Err(bad(k, "must be at least 1")),
            n if n > max => Err(bad(k, format!("{n} is over the limit of {max}"))),
            n => Ok(n as usize),
        }
    }

    /// A choice, parsed by its link name.
    fn choice<T: LinkName>(&self) -> Result<T, PermalinkError> {
        parse_choice(self.get(T::PARAMETER)?)
    }
}

fn parse_image(text: &str) -> Result<ImageRef, PermalinkError> {
    if let Some(i) = text.strip_prefix("sample:") {
        return i
            .parse()
            .map(ImageRef::Sample)
            .map_err(|_| bad("image", "sample index is not a number"));
    }
    let rest = text
        .strip_prefix("pixels:")
        .ok_or_else(|| bad("image", "expected sample:<index> or pixels:..."))?;
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
    if width == 0 || height == 0 || width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE {
        return Err(bad(
            "image",
            format!("{width}x{height}: each side must be 1 to {MAX_IMAGE_SIDE} pixels"),
        ));
    }
    if channels != 1 && channels != 3 {
        return Err(bad(
            "image",
            format!("{channels} channels: expected 1 or 3"),
        ));
    }
    // Within the bounds above the product cannot overflow.
    let expected = width * height * channels;
    if data.len() != 2 * expected {
        return Err(bad(
            "image",
            format!(
                "{} hex digits for {width}x{height}x{channels} (expected {})",
                data.len(),
                2 * expected
            ),
        ));
    }
    Ok(ImageRef::Pixels {
        width,
        height,
        channels,
        values: unhex("image", data)?,
    })
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
            self.norm.link_name(),
            self.eps,
            self.steps,
            self.eot,
            self.transform.link_name(),
            self.mode.name(),
            self.seed
        )
    }

    /// Reads a query string (with or without the leading `?`).
    pub fn from_query(query: &str) -> Result<Self, PermalinkError> {
        let pairs = Pairs::parse(query.strip_prefix('?').unwrap_or(query))?;
        let version = pairs.number("v")?;
        if version != u64::from(VERSION) {
            return Err(bad(
                "v",
                format!("version {version}, this demo reads {VERSION}"),
            ));
        }
        let artifact_sha256 = pairs.get("artifact")?.to_ascii_lowercase();
        if artifact_sha256.len() != 64 || !artifact_sha256.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad("artifact", "expected a SHA-256 of 64 hex digits"));
        }
        let eps: f64 = pairs
            .get("eps")?
            .parse()
            .map_err(|_| bad("eps", "not a number"))?;
        if !(eps.is_finite() && eps >= 0.0) {
            return Err(bad("eps", format!("{eps}: must be finite and >= 0")));
        }
        Ok(Permalink {
            artifact_sha256,
            image: parse_image(pairs.get("image")?)?,
            attack: pairs.choice()?,
            norm: pairs.choice()?,
            eps,
            steps: pairs.budget("steps", MAX_STEPS)?,
            eot: pairs.budget("eot", MAX_EOT)?,
            transform: pairs.choice()?,
            mode: pairs.choice()?,
            seed: pairs.number("seed")?,
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
            norm: Norm::Linf,
            eps: 0.1,
            steps: 10,
            eot: 4,
            transform: TransformKind::Rt2,
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
                "v=2&artifact={}&image=sample:12&attack=pgd&norm=linf&eps=0.1&steps=10&eot=4&transform=rt2&mode=full&seed=42",
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
            (good.replace("v=2", "v=3"), "v"),
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
            // Hostile input: a non-ASCII character inside the hex, sides
            // whose product overflows usize, and budgets that would hang.
            (
                good.replace("image=sample:12", "image=pixels:1x1x1:\u{e9}"),
                "image",
            ),
            (
                good.replace("image=sample:12", "image=pixels:2x1x1:0\u{e9}0"),
                "image",
            ),
            (
                good.replace(
                    "image=sample:12",
                    &format!("image=pixels:{}x{}x3:00", usize::MAX, usize::MAX),
                ),
                "image",
            ),
            (good.replace("steps=10", "steps=100000000"), "steps"),
            (good.replace("eot=4", "eot=1000000"), "eot"),
        ];
        for (query, parameter) in cases {
            let err = Permalink::from_query(&query).unwrap_err();
            assert_eq!(err.parameter, parameter, "{query}: {err}");
        }
        let err = Permalink::from_query(&good.replace("steps=10", "steps=100000000")).unwrap_err();
        assert!(err.problem.contains("limit of 1000"), "{err}");
    }
}
