use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::schema::schema_for;
use crate::config::Kind;

#[derive(Debug, clap::Args)]
pub struct SchemaArgs {
    /// Directory to write `<kind>.schema.json` files into; prints to stdout when absent.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The exact text of a kind's schema file (pretty JSON, trailing newline).
pub fn render(kind: Kind) -> String {
    let mut s = serde_json::to_string_pretty(&schema_for(kind)).unwrap_or_default();
    s.push('\n');
    s
}

pub fn run(args: SchemaArgs) -> ExitCode {
    for kind in Kind::ALL {
        let text = render(kind);
        match &args.out {
            Some(dir) => {
                let path = dir.join(kind.schema_file());
                if let Err(e) =
                    std::fs::create_dir_all(dir).and_then(|_| std::fs::write(&path, text))
                {
                    return super::fail(format!("cannot write {}: {e}", path.display()));
                }
                eprintln!("wrote {}", path.display());
            }
            None => print!("{text}"),
        }
    }
    ExitCode::SUCCESS
}
