//! The real kubectl, as the reference client.

use super::FakeKube;
use std::path::{Path, PathBuf};

/// kubectl on PATH; a test that needs it fails here, with what to install,
/// when it is missing.
pub fn kubectl_path() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
        .expect(
            "kubectl is not on PATH: this test uses the real kubectl as the reference client; \
             install kubectl 1.27 or later (e.g. apt-get install kubectl) and run it again",
        )
}

/// Runs kubectl against `fake` with a kubeconfig in `dir` (default namespace
/// `ns`) and its discovery cache in `dir`; returns (success, stdout, stderr).
pub async fn kubectl(
    fake: &FakeKube,
    dir: &Path,
    ns: &str,
    args: &[&str],
) -> (bool, String, String) {
    let kubeconfig = fake.kubeconfig(dir, ns);
    let out = tokio::process::Command::new(kubectl_path())
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--cache-dir")
        .arg(dir.join(format!("kube-cache-{}", fake.port)))
        .args(args)
        .env("HOME", dir)
        .env_remove("KUBECONFIG")
        .output()
        .await
        .expect("run kubectl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
