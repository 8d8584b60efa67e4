//! What a rollback would go back to, looked up before anyone needs it
//! (issue 14, "the registry that forgot"): a backend names the revision a
//! rollback restores and the images it runs; the controller then asks each
//! image's registry whether the image is still there.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde::Serialize;

/// A backend's answer to "could this service be rolled back now?".
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Capability {
    /// This backend does not look (the default).
    NotChecked,
    /// The rollback target exists on the platform; `images` are the images
    /// its containers run, which must still be pullable.
    Target {
        /// The revision a rollback restores, as people name it ("4").
        revision: String,
        /// Where it was found ("Deployment prod/web").
        place: String,
        images: Vec<String>,
    },
    /// The platform has no rollback target any more (history trimmed);
    /// `reason` says what is missing and what to do.
    Missing {
        revision: Option<String>,
        reason: String,
    },
}

/// Every image a pod of `t` pulls: init containers first, then containers
/// (a pod that cannot pull its init image never starts either).
pub(crate) fn pulled_images(t: &PodTemplateSpec) -> Vec<String> {
    let Some(spec) = &t.spec else { return vec![] };
    let mut out: Vec<String> = Vec::new();
    let init = spec.init_containers.iter().flatten();
    for image in init.chain(&spec.containers).filter_map(|c| c.image.clone()) {
        if !out.contains(&image) {
            out.push(image);
        }
    }
    out
}
