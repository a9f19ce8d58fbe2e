//! The old side of `relay plan --base REV`: the config directory's files as
//! they are at a revision of the repository that holds it, read with `gix`
//! (no `git` binary; the container image has none) and written to a private
//! temporary directory that `load_dir` then reads like any other.

use std::path::{Path, PathBuf};

type GitResult<T> = Result<T, String>;

/// A config directory materialised from a revision; removed on drop.
pub struct Checkout {
    pub dir: PathBuf,
    /// `REV:path/in/repo` for headings.
    pub label: String,
    /// The commit `REV` resolved to.
    pub commit: String,
    /// False when the directory does not exist at that revision (the plan
    /// is then against an empty configuration).
    pub existed: bool,
}

impl Drop for Checkout {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Reads `config_dir`'s path relative to its repository's root at `rev`.
pub fn checkout(config_dir: &Path, rev: &str) -> GitResult<Checkout> {
    let repo = gix::discover(config_dir).map_err(|e| {
        format!(
            "{} is not inside a git repository ({e}); --base needs one (or compare two directories: \
             `relay plan OLD_DIR NEW_DIR`)",
            config_dir.display()
        )
    })?;
    let workdir = repo.workdir().ok_or_else(|| {
        format!(
            "the repository of {} has no work tree",
            config_dir.display()
        )
    })?;
    let abs = |p: &Path| {
        p.canonicalize()
            .map_err(|e| format!("cannot resolve {}: {e}", p.display()))
    };
    let rel = abs(config_dir)?
        .strip_prefix(abs(workdir)?)
        .map(Path::to_path_buf)
        .map_err(|_| {
            format!(
                "{} is outside its repository's work tree",
                config_dir.display()
            )
        })?;
    let id = resolve(&repo, rev)?;
    let commit = repo
        .find_commit(id)
        .map_err(|e| format!("`{rev}` is not a commit: {e}"))?;
    let root = commit.tree().map_err(|e| e.to_string())?;
    let tree = if rel.as_os_str().is_empty() {
        Some(root)
    } else {
        match root.lookup_entry_by_path(&rel).map_err(|e| e.to_string())? {
            Some(e) if e.mode().is_tree() => {
                Some(repo.find_tree(e.object_id()).map_err(|e| e.to_string())?)
            }
            _ => None,
        }
    };
    let dir = temp_dir()?;
    let mut out = Checkout {
        dir,
        label: format!(
            "{rev}:{}",
            if rel.as_os_str().is_empty() {
                ".".into()
            } else {
                rel.display().to_string()
            }
        ),
        commit: id.to_string(),
        existed: tree.is_some(),
    };
    if let Some(tree) = tree {
        write_tree(&repo, &tree, &out.dir)?;
    } else {
        out.existed = false;
    }
    Ok(out)
}

/// A private, empty directory under the system temp dir.
fn temp_dir() -> GitResult<PathBuf> {
    use rand::RngCore;
    let mut n = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut n);
    let dir = std::env::temp_dir().join(format!("relay-plan-{}", hex::encode(n)));
    crate::secrets::create_private_dir(&dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// Every file `load_dir` would read (YAML, no dot-named entries on the way).
fn write_tree(repo: &gix::Repository, tree: &gix::Tree<'_>, to: &Path) -> GitResult<()> {
    for entry in tree.iter() {
        let entry = entry.map_err(|e| e.to_string())?;
        let name = entry.filename().to_string();
        if name.starts_with('.') || name.contains(['/', '\\']) || name == ".." {
            continue;
        }
        let path = to.join(&name);
        if entry.mode().is_tree() {
            let sub = repo
                .find_tree(entry.object_id())
                .map_err(|e| e.to_string())?;
            crate::secrets::create_private_dir(&path).map_err(|e| e.to_string())?;
            write_tree(repo, &sub, &path)?;
        } else if entry.mode().is_blob() && is_yaml(&path) {
            let blob = repo
                .find_blob(entry.object_id())
                .map_err(|e| e.to_string())?;
            std::fs::write(&path, &blob.data)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
    }
    Ok(())
}

/// What `source::discover` loads: `*.yaml` / `*.yml`.
fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

/// `HEAD`, a branch, tag or remote-tracking ref (`origin/main`), a full or
/// abbreviated commit id, each optionally followed by `~N` / `^`.
fn resolve(repo: &gix::Repository, rev: &str) -> GitResult<gix::ObjectId> {
    let unknown = || {
        format!(
            "unknown revision `{rev}`: not a branch, tag, remote-tracking ref or commit id of this repository \
             (in CI, check out with `fetch-depth: 0` so the base branch is there)"
        )
    };
    let (base, steps) = split_ancestry(rev).ok_or_else(unknown)?;
    let mut id = if base == "HEAD" || base == "@" {
        repo.head_id()
            .map_err(|e| format!("HEAD has no commit: {e}"))?
            .detach()
    } else if let Some(mut r) = repo.try_find_reference(base).ok().flatten() {
        r.peel_to_id().map_err(|e| e.to_string())?.detach()
    } else if base.len() >= 4 && base.chars().all(|c| c.is_ascii_hexdigit()) {
        let prefix = gix::hash::Prefix::from_hex(base).map_err(|_| unknown())?;
        match repo.objects.lookup_prefix(prefix, None) {
            Ok(Some(Ok(id))) => id,
            Ok(Some(Err(()))) => return Err(format!("`{base}` is ambiguous: give more digits")),
            _ => return Err(unknown()),
        }
    } else {
        return Err(unknown());
    };
    for _ in 0..steps {
        let commit = repo.find_commit(id).map_err(|e| e.to_string())?;
        id = commit
            .parent_ids()
            .next()
            .map(|p| p.detach())
            .ok_or_else(|| format!("`{rev}` goes past the first commit"))?;
    }
    Ok(id)
}

/// `main~2^` → (`main`, 3).
fn split_ancestry(rev: &str) -> Option<(&str, usize)> {
    let mut steps = 0;
    let mut rest = rev;
    loop {
        if let Some(r) = rest.strip_suffix('^') {
            steps += 1;
            rest = r;
            continue;
        }
        let digits = rest.len() - rest.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let before = &rest[..rest.len() - digits];
        if let Some(r) = before.strip_suffix('~') {
            let n: usize = if digits == 0 {
                1
            } else {
                rest[rest.len() - digits..].parse().ok()?
            };
            steps += n;
            rest = r;
            continue;
        }
        break;
    }
    (!rest.is_empty()).then_some((rest, steps))
}

#[cfg(test)]
mod tests {
    use super::split_ancestry;

    #[test]
    fn ancestry_suffixes() {
        assert_eq!(split_ancestry("main"), Some(("main", 0)));
        assert_eq!(split_ancestry("HEAD~"), Some(("HEAD", 1)));
        assert_eq!(split_ancestry("HEAD~3^"), Some(("HEAD", 4)));
        assert_eq!(
            split_ancestry("origin/release-2"),
            Some(("origin/release-2", 0))
        );
        assert_eq!(split_ancestry("~1"), None);
    }
}
