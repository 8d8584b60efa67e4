//! `rollbot check-config FILE`: every problem with its line, exit status 1.

use rollbot::config_file::Config;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct CheckConfigArgs {
    file: PathBuf,
}

pub fn run(args: CheckConfigArgs) -> anyhow::Result<ExitCode> {
    let file = args.file;
    match Config::load(&file) {
        Ok(c) => {
            for w in c.warnings() {
                eprintln!("warning: {w}");
            }
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
