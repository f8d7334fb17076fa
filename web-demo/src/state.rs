//! The page's state: the device, the loaded artifact and the upload. Every
//! other module reads it; it imports none of them but the DOM helpers.

use std::cell::RefCell;
use std::rc::Rc;

use atop::artifact::Artifact;
use atop::demo::{DemoModels, ImageRef};
use burn::tensor::Device;
use web_sys::HtmlButtonElement;

use crate::dom::by_id;

/// One loaded artifact.
pub struct Loaded {
    pub name: String,
    pub artifact: Artifact,
    /// The models on the page's device.
    pub models: DemoModels,
    /// The same models on the CPU backend, for APGD under WebGPU (made on
    /// first use).
    pub cpu_models: Option<DemoModels>,
}

impl Loaded {
    pub fn sha256(&self) -> &str {
        &self.artifact.manifest.defense_sha256
    }
}

pub struct App {
    pub device: Device,
    pub webgpu: bool,
    pub loaded: Option<Loaded>,
    /// The last uploaded image, as the model's 8-bit input.
    pub upload: Option<ImageRef>,
    pub busy: bool,
}

pub type Shared = Rc<RefCell<App>>;

/// Enables or disables the attack and scorecard buttons while one runs.
pub fn set_busy(app: &Shared, busy: bool) {
    app.borrow_mut().busy = busy;
    for id in ["run-attack", "run-scorecard"] {
        if let Ok(button) = by_id::<HtmlButtonElement>(id) {
            button.set_disabled(busy);
        }
    }
}
