//! `relay user hash-password`: the argon2id hash to paste into a User's
//! `password_hash`. The password comes from stdin, never from argv (which
//! other users of the machine can read).

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// Read a password from stdin (asked twice, without echo, on a
    /// terminal) and print its argon2id hash for a User's `password_hash`.
    HashPassword,
}

pub fn run(cmd: UserCommand) -> ExitCode {
    match cmd {
        UserCommand::HashPassword => hash_password(),
    }
}

fn hash_password() -> ExitCode {
    let password = match read_password() {
        Ok(p) => p,
        Err(e) => return super::fail(e),
    };
    if password.is_empty() {
        return super::fail("the password is empty; type one, or pipe it in: `printf %s \"$PW\" | relay user hash-password`");
    }
    match crate::auth::password::hash(&password) {
        Ok(phc) => {
            println!("{phc}");
            ExitCode::SUCCESS
        }
        Err(e) => super::fail(format!("cannot hash the password: {e}")),
    }
}

fn read_password() -> Result<String, String> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("password: ").map_err(|e| e.to_string())?;
        let again = rpassword::prompt_password("again: ").map_err(|e| e.to_string())?;
        if first != again {
            return Err("the two passwords differ; run the command again".into());
        }
        let _ = std::io::stderr().flush();
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}
