//! A snapshot's revision: a hash of the directory's content, plus the git
//! commit when the directory is inside a git work tree.

use std::fmt;
use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Revision {
    /// First 12 hex digits of SHA-256 over every file's relative path and bytes.
    pub content_hash: String,
    /// `HEAD` of the enclosing git work tree, if any.
    pub git_commit: Option<String>,
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.git_commit {
            Some(c) => write!(f, "{}@{}", self.content_hash, &c[..c.len().min(12)]),
            None => f.write_str(&self.content_hash),
        }
    }
}

/// Incremental content hash; feed files in sorted order.
#[derive(Default)]
pub struct ContentHasher(Sha256);

impl ContentHasher {
    pub fn file(&mut self, relative: &Path, bytes: &[u8]) {
        let name = relative.to_string_lossy();
        // Length-prefix both parts so no two directories hash alike.
        self.0.update((name.len() as u64).to_le_bytes());
        self.0.update(name.as_bytes());
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }

    pub fn finish(self, git_commit: Option<String>) -> Revision {
        let digest = self.0.finalize();
        Revision {
            content_hash: hex::encode(&digest[..6]),
            git_commit,
        }
    }
}

/// The commit checked out in the git work tree containing `dir`, read from
/// `.git` directly so reloads never spawn processes. `None` when `dir` is not
/// in a work tree or the HEAD cannot be resolved.
pub fn git_commit(dir: &Path) -> Option<String> {
    let dir = dir.canonicalize().ok()?;
    let git_dir = dir
        .ancestors()
        .find_map(|d| resolve_git_dir(&d.join(".git")))?;
    let head = std::fs::read_to_string(git_dir.join("HEAD")).ok()?;
    let head = head.trim();
    let Some(reference) = head.strip_prefix("ref: ") else {
        return is_sha(head).then(|| head.to_string());
    };
    let common = common_dir(&git_dir);
    for base in [&git_dir, &common] {
        if let Ok(s) = std::fs::read_to_string(base.join(reference)) {
            let s = s.trim();
            if is_sha(s) {
                return Some(s.to_string());
            }
        }
    }
    let packed = std::fs::read_to_string(common.join("packed-refs")).ok()?;
    packed.lines().find_map(|line| {
        let (sha, name) = line.split_once(' ')?;
        (name == reference && is_sha(sha)).then(|| sha.to_string())
    })
}

/// `.git` is a directory, or a file `gitdir: <path>` in worktrees/submodules.
fn resolve_git_dir(dot_git: &Path) -> Option<std::path::PathBuf> {
    let meta = std::fs::metadata(dot_git).ok()?;
    if meta.is_dir() {
        return Some(dot_git.to_path_buf());
    }
    let text = std::fs::read_to_string(dot_git).ok()?;
    let target = text.trim().strip_prefix("gitdir: ")?;
    let base = dot_git.parent()?;
    Some(base.join(target))
}

fn common_dir(git_dir: &Path) -> std::path::PathBuf {
    match std::fs::read_to_string(git_dir.join("commondir")) {
        Ok(s) => git_dir.join(s.trim()),
        Err(_) => git_dir.to_path_buf(),
    }
}

fn is_sha(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_names_and_bytes() {
        let h = |files: &[(&str, &str)]| {
            let mut c = ContentHasher::default();
            for (n, b) in files {
                c.file(Path::new(n), b.as_bytes());
            }
            c.finish(None).content_hash
        };
        assert_eq!(h(&[("a.yaml", "x")]), h(&[("a.yaml", "x")]));
        assert_ne!(h(&[("a.yaml", "x")]), h(&[("b.yaml", "x")]));
        assert_ne!(h(&[("a.yaml", "xy")]), h(&[("a.yamlx", "y")]));
        assert_eq!(h(&[]).len(), 12);
    }

    #[test]
    fn reads_head_from_a_real_git_checkout() {
        let dir = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| {
            let ok = std::process::Command::new("git")
                .args(args)
                .current_dir(dir.path())
                .env("GIT_AUTHOR_NAME", "t")
                .env("GIT_AUTHOR_EMAIL", "t@t")
                .env("GIT_COMMITTER_NAME", "t")
                .env("GIT_COMMITTER_EMAIL", "t@t")
                .output()
                .unwrap();
            assert!(ok.status.success(), "{ok:?}");
            String::from_utf8(ok.stdout).unwrap()
        };
        git(&["init", "-q"]);
        std::fs::create_dir(dir.path().join("config.d")).unwrap();
        std::fs::write(dir.path().join("config.d/a.yaml"), "x: 1\n").unwrap();
        git(&["add", "."]);
        git(&["commit", "-qm", "init"]);
        let head = git(&["rev-parse", "HEAD"]).trim().to_string();
        assert_eq!(git_commit(&dir.path().join("config.d")), Some(head.clone()));
        git(&["pack-refs", "--all"]);
        assert_eq!(git_commit(&dir.path().join("config.d")), Some(head));
        let outside = tempfile::tempdir().unwrap();
        assert_eq!(git_commit(outside.path()), None);
    }
}
