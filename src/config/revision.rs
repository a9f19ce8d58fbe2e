//! A snapshot's revision: a hash of the directory's content, plus the git
//! commit whose tree holds exactly what is served, or `<sha>-dirty` when a
//! file relay loads differs from (or is missing in) HEAD's tree, or HEAD's
//! tree has a config file relay did not load.
//!
//! The repository is read directly with `gix` (the container image has no
//! `git` binary): HEAD, the commit, its tree and the blob ids of the config
//! directory's YAML files. Files relay does not load (READMEs, CI files,
//! anything outside the config directory) never make a revision dirty.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

/// A git object id (SHA-1) as raw bytes.
pub type BlobId = gix::ObjectId;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Revision {
    /// First 12 hex digits of SHA-256 over every file's relative path and bytes.
    pub content_hash: String,
    /// `HEAD` of the enclosing git work tree, if any.
    pub git_commit: Option<String>,
    /// True when what is served differs from `git_commit`'s tree (an
    /// uncommitted edit, a deleted or untracked config file).
    pub dirty: bool,
    /// `git_commit`, or `<git_commit>-dirty`: the commit that names what is
    /// served. `None` outside a git work tree.
    pub git_revision: Option<String>,
}

impl Revision {
    /// Whether two revisions serve the same bytes (the git part aside).
    pub fn same_content(&self, other: &Revision) -> bool {
        self.content_hash == other.content_hash
    }

    /// This content at another git state.
    pub fn with_git(&self, git: Option<GitState>) -> Revision {
        let (git_commit, dirty) = match git {
            Some(g) => (Some(g.commit), g.dirty),
            None => (None, false),
        };
        Revision {
            content_hash: self.content_hash.clone(),
            git_revision: git_commit.as_ref().map(|c| {
                if dirty {
                    format!("{c}-dirty")
                } else {
                    c.clone()
                }
            }),
            git_commit,
            dirty,
        }
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.git_commit {
            Some(c) => {
                write!(f, "{}@{}", self.content_hash, &c[..c.len().min(12)])?;
                if self.dirty {
                    f.write_str("-dirty")?;
                }
                Ok(())
            }
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

    pub fn finish(self, git: Option<GitState>) -> Revision {
        let digest = self.0.finalize();
        Revision {
            content_hash: hex::encode(&digest[..6]),
            git_commit: None,
            dirty: false,
            git_revision: None,
        }
        .with_git(git)
    }
}

/// The git blob id of a file's bytes (`blob <len>\0` + bytes, SHA-1), the
/// id HEAD's tree holds for the same content.
pub fn blob_id(bytes: &[u8]) -> Option<BlobId> {
    gix::objs::compute_hash(gix::hash::Kind::Sha1, gix::objs::Kind::Blob, bytes).ok()
}

/// The files a snapshot was built from: path relative to the config
/// directory → git blob id.
pub type LoadedFiles = BTreeMap<PathBuf, BlobId>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitState {
    pub commit: String,
    pub dirty: bool,
}

/// Where a HEAD move shows: the repository's own directory (HEAD) and the
/// common directory (refs, packed-refs; differs in linked worktrees).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GitPaths {
    pub git_dir: PathBuf,
    pub common_dir: PathBuf,
}

/// The git repository enclosing `dir`, if any.
pub fn git_paths(dir: &Path) -> Option<GitPaths> {
    let repo = gix::discover(dir).ok()?;
    Some(GitPaths {
        git_dir: absolute(repo.git_dir()),
        common_dir: absolute(repo.common_dir()),
    })
}

fn absolute(p: &Path) -> PathBuf {
    p.canonicalize()
        .or_else(|_| std::path::absolute(p))
        .unwrap_or_else(|_| p.to_path_buf())
}

/// The commit checked out in the git work tree containing `dir`, and whether
/// `files` (what relay loaded from `dir`) differ from that commit's tree.
/// `None` when `dir` is not in a work tree or HEAD has no commit yet.
pub fn git_state(dir: &Path, files: &LoadedFiles) -> Option<GitState> {
    match read_git_state(dir, files) {
        Ok(state) => state,
        Err(e) => {
            tracing::debug!(error = %e, dir = %dir.display(), "cannot read the git revision");
            None
        }
    }
}

type GitResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn read_git_state(dir: &Path, files: &LoadedFiles) -> GitResult<Option<GitState>> {
    let Ok(repo) = gix::discover(dir) else {
        return Ok(None);
    };
    let Some(workdir) = repo.workdir() else {
        return Ok(None);
    };
    let Ok(commit) = repo.head_commit() else {
        // Unborn HEAD: nothing committed yet.
        return Ok(None);
    };
    let commit_id = commit.id;
    // The config directory may be a subdirectory of the repository, and
    // either may be reached through symlinks (git-sync's `current`).
    let rel = dir
        .canonicalize()?
        .strip_prefix(workdir.canonicalize()?)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let root = commit.tree()?;
    let mut committed = LoadedFiles::new();
    let sub = if rel.as_os_str().is_empty() {
        Some(root)
    } else {
        match root.lookup_entry_by_path(&rel)? {
            Some(e) if e.mode().is_tree() => Some(repo.find_tree(e.object_id())?),
            _ => None,
        }
    };
    if let Some(tree) = sub {
        collect(&repo, &tree, Path::new(""), &mut committed)?;
    }
    let dirty = repo.object_hash() != gix::hash::Kind::Sha1 || committed != *files;
    Ok(Some(GitState {
        commit: commit_id.to_string(),
        dirty,
    }))
}

/// Every file in `tree` that `source::discover` would load: YAML files, no
/// dot-named file or directory on the way.
fn collect(
    repo: &gix::Repository,
    tree: &gix::Tree<'_>,
    prefix: &Path,
    out: &mut LoadedFiles,
) -> GitResult<()> {
    for entry in tree.iter() {
        let entry = entry?;
        let name = entry.filename().to_string();
        if name.starts_with('.') {
            continue;
        }
        let path = prefix.join(&name);
        if entry.mode().is_tree() {
            let sub = repo.find_tree(entry.object_id())?;
            collect(repo, &sub, &path, out)?;
        } else if super::source::is_yaml(&path) {
            out.insert(path, entry.object_id());
        }
    }
    Ok(())
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

    struct Repo(tempfile::TempDir);

    impl Repo {
        fn new() -> Repo {
            let r = Repo(tempfile::tempdir().unwrap());
            r.git(&["init", "-q"]);
            r
        }
        fn git(&self, args: &[&str]) -> String {
            let ok = std::process::Command::new("git")
                .args(args)
                .current_dir(self.0.path())
                .env("GIT_AUTHOR_NAME", "t")
                .env("GIT_AUTHOR_EMAIL", "t@t")
                .env("GIT_COMMITTER_NAME", "t")
                .env("GIT_COMMITTER_EMAIL", "t@t")
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("HOME", self.0.path())
                .output()
                .unwrap();
            assert!(ok.status.success(), "{ok:?}");
            String::from_utf8(ok.stdout).unwrap().trim().to_string()
        }
        fn write(&self, rel: &str, text: &str) {
            let p = self.0.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        fn commit(&self) -> String {
            self.git(&["add", "-A"]);
            self.git(&["commit", "-qm", "c", "--allow-empty"]);
            self.git(&["rev-parse", "HEAD"])
        }
        /// What `load_dir` records for `rel` (the config directory).
        fn state(&self, rel: &str) -> Option<GitState> {
            let dir = self.0.path().join(rel);
            let mut files = LoadedFiles::new();
            for f in crate::config::source::discover(&dir).unwrap() {
                let bytes = std::fs::read(&f).unwrap();
                let rel = f.strip_prefix(&dir).unwrap().to_path_buf();
                files.insert(rel, blob_id(&bytes).unwrap());
            }
            git_state(&dir, &files)
        }
    }

    fn clean(commit: &str) -> Option<GitState> {
        Some(GitState {
            commit: commit.to_string(),
            dirty: false,
        })
    }

    fn dirty(commit: &str) -> Option<GitState> {
        Some(GitState {
            commit: commit.to_string(),
            dirty: true,
        })
    }

    #[test]
    fn blob_ids_are_git_blob_ids() {
        let r = Repo::new();
        r.write("a.yaml", "x: 1\n");
        let git = r.git(&["hash-object", "a.yaml"]);
        assert_eq!(blob_id(b"x: 1\n").unwrap().to_string(), git);
    }

    #[test]
    fn revision_names_the_commit_whose_tree_is_served() {
        let r = Repo::new();
        // Nothing committed yet: no revision.
        r.write("config.d/a.yaml", "x: 1\n");
        assert_eq!(r.state("config.d"), None);
        r.write("README.md", "hello\n");
        r.write("config.d/sub/b.yml", "y: 1\n");
        r.write("config.d/.hidden.yaml", "ignored: 1\n");
        let c1 = r.commit();
        assert_eq!(r.state("config.d"), clean(&c1));

        // An uncommitted edit of a loaded file.
        r.write("config.d/sub/b.yml", "y: 2\n");
        assert_eq!(r.state("config.d"), dirty(&c1));
        // Committing it: a new commit, clean, without touching the files.
        let c2 = r.commit();
        assert_ne!(c1, c2);
        assert_eq!(r.state("config.d"), clean(&c2));

        // Files relay does not load do not count.
        r.write("README.md", "changed\n");
        r.write("config.d/notes.txt", "untracked\n");
        r.write("config.d/.hidden.yaml", "changed: 1\n");
        assert_eq!(r.state("config.d"), clean(&c2));

        // A new, untracked config file; a committed one deleted.
        r.write("config.d/new.yaml", "z: 1\n");
        assert_eq!(r.state("config.d"), dirty(&c2));
        std::fs::remove_file(r.0.path().join("config.d/new.yaml")).unwrap();
        std::fs::remove_file(r.0.path().join("config.d/a.yaml")).unwrap();
        assert_eq!(r.state("config.d"), dirty(&c2));
        r.write("config.d/a.yaml", "x: 1\n");
        assert_eq!(r.state("config.d"), clean(&c2));

        // Packed objects and refs (a clone, `git gc`) read the same.
        r.git(&["gc", "-q"]);
        r.git(&["pack-refs", "--all"]);
        assert_eq!(r.state("config.d"), clean(&c2));

        // The repository root as the config directory: the root's files count.
        r.write("root.yaml", "r: 1\n");
        assert_eq!(r.state(""), dirty(&c2));
        let c3 = r.commit();
        assert_eq!(r.state(""), clean(&c3));

        // A detached HEAD (checkout of an older commit).
        r.git(&["checkout", "-q", &c1]);
        assert_eq!(r.state("config.d"), clean(&c1));

        let outside = tempfile::tempdir().unwrap();
        assert_eq!(git_state(outside.path(), &LoadedFiles::new()), None);
    }

    #[test]
    fn display_marks_dirty() {
        let base = ContentHasher::default().finish(None);
        let r = base.with_git(dirty("0123456789abcdef0123456789abcdef01234567"));
        assert!(r.to_string().ends_with("@0123456789ab-dirty"), "{r}");
        assert_eq!(
            r.git_revision.as_deref(),
            Some("0123456789abcdef0123456789abcdef01234567-dirty")
        );
        assert!(base.same_content(&r));
    }
}
