use std::io::Read;
use std::process::ExitCode;

use super::DataDirArg;
use crate::secrets::{parse_recipient, seal, unseal, MasterKey};

#[derive(Debug, clap::Subcommand)]
pub enum SecretCommand {
    /// Read a value on stdin and print it sealed (armored age) for `age:`.
    /// Needs only the public recipient, so CI and teammates can seal.
    Encrypt {
        /// Recipient (`age1…`); defaults to the master key's public half.
        #[arg(long, env = "RELAY_RECIPIENT")]
        recipient: Option<String>,
        #[command(flatten)]
        data: DataDirArg,
        #[command(flatten)]
        master_key: super::MasterKeyArg,
    },
    /// Read a sealed value on stdin and print the plaintext. Needs the master key.
    Decrypt {
        #[command(flatten)]
        data: DataDirArg,
        #[command(flatten)]
        master_key: super::MasterKeyArg,
    },
}

pub fn keygen() -> ExitCode {
    let key = MasterKey::generate();
    println!(
        "# public key (recipient, safe to share; use with `relay secret encrypt --recipient`): {}",
        key.recipient()
    );
    println!("{}", key.to_secret().expose());
    eprintln!(
        "Set RELAY_MASTER_KEY to the AGE-SECRET-KEY line on every replica and keep it stable."
    );
    ExitCode::SUCCESS
}

fn master_key(explicit: Option<&str>, data: &DataDirArg) -> Result<Option<MasterKey>, String> {
    match explicit {
        Some(text) => MasterKey::parse(text, "RELAY_MASTER_KEY")
            .map(Some)
            .map_err(|e| e.to_string()),
        None => MasterKey::read(&data.data_dir).map_err(|e| e.to_string()),
    }
}

fn read_stdin() -> Result<String, String> {
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .map_err(|e| format!("cannot read stdin: {e}"))?;
    Ok(s)
}

pub fn run(cmd: SecretCommand) -> ExitCode {
    match cmd {
        SecretCommand::Encrypt {
            recipient,
            data,
            master_key: mk,
        } => {
            let recipient = match recipient {
                Some(r) => parse_recipient(&r).map_err(|e| e.to_string()),
                None => master_key(mk.value(), &data).and_then(|k| {
                    k.map(|k| k.recipient()).ok_or_else(|| {
                        "no recipient: pass --recipient age1… (or RELAY_RECIPIENT), or set RELAY_MASTER_KEY".to_string()
                    })
                }),
            };
            let recipient = match recipient {
                Ok(r) => r,
                Err(e) => return super::fail(e),
            };
            let value = match read_stdin() {
                Ok(v) => v,
                Err(e) => return super::fail(e),
            };
            // `echo sk-… | relay secret encrypt` appends a newline nobody meant.
            let value = value
                .strip_suffix('\n')
                .map(|v| v.strip_suffix('\r').unwrap_or(v))
                .unwrap_or(&value);
            if value.is_empty() {
                return super::fail("nothing to seal: pipe the value on stdin");
            }
            match seal(&recipient, value) {
                Ok(armored) => {
                    print!("{armored}");
                    if !armored.ends_with('\n') {
                        println!();
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => super::fail(e),
            }
        }
        SecretCommand::Decrypt {
            data,
            master_key: mk,
        } => {
            let key = match master_key(mk.value(), &data) {
                Ok(Some(k)) => k,
                Ok(None) => {
                    return super::fail(
                        "decrypt needs the master key: set RELAY_MASTER_KEY or RELAY_DATA_DIR",
                    )
                }
                Err(e) => return super::fail(e),
            };
            let input = match read_stdin() {
                Ok(v) => v,
                Err(e) => return super::fail(e),
            };
            match unseal(&key, &input) {
                Ok(secret) => {
                    println!("{}", secret.expose());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
