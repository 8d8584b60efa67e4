//! `rollbot check-config FILE`: every problem with its line, exit status 1.

use rollbot::config_file::Config;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct CheckConfigArgs {
    file: PathBuf,
}

pub async fn run(args: CheckConfigArgs) -> anyhow::Result<ExitCode> {
    let file = args.file;
    match Config::load(&file) {
        Ok(c) => {
            for w in c.warnings() {
                eprintln!("warning: {w}");
            }
            scrape_interval(&c, &file).await;
            outln!(
                "{}: ok ({} services, {} backends, {} channels)",
                file.display(),
                c.services.len(),
                c.backends.len(),
                c.channels.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::from(1))
        }
    }
}

/// Without `[metrics] scrape_interval`, asks Prometheus how often it
/// scrapes (when it can be reached) and warns at `interval` when a tick is
/// shorter than two scrapes; says so when it cannot check.
async fn scrape_interval(c: &Config, file: &std::path::Path) {
    if c.metrics.scrape_interval.is_some() {
        return;
    }
    let Some(url) = c.metrics.url.as_deref() else {
        return;
    };
    match rollbot::controller::scrape_interval_of(c).await {
        Ok(Some(scrape)) => {
            let source = std::fs::read_to_string(file).unwrap_or_default();
            let mut w = rollbot::config_file::tick::short_interval(
                file,
                &source,
                c.metrics.interval.0,
                scrape,
                &format!("Prometheus at {url}"),
            );
            if let Some(w) = &mut w {
                rollbot::config::locate(std::slice::from_mut(w), &source);
                eprintln!("warning: {w}");
            }
        }
        Ok(None) => eprintln!(
            "note: Prometheus at {url} did not say its scrape interval; set [metrics] scrape_interval to check [metrics] interval against it"
        ),
        Err(e) => eprintln!(
            "note: could not ask Prometheus for its scrape interval ({e}); set [metrics] scrape_interval to check [metrics] interval offline"
        ),
    }
}
