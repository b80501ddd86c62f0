//! The paths given to a backup, made absolute and free of `.` and `..`.
//!
//! `..` is resolved the way the kernel resolves it when any other program opens the
//! path: the part of the path up to its last `..` is canonicalized (a symlinked folder
//! before a `..` is followed, so `link/..` is the link target's parent), and the
//! components after it are appended as given. Lexical cleaning (restic's
//! `filepath.Clean`) would instead back up a different folder than `ls` or `tar`
//! show whenever a folder before a `..` is a symlink. The last component is never
//! resolved: a symlink named as the path is backed up as a symlink, as without `..`.
//! A path without `..` stays as given (made absolute, `.` dropped), so the paths of
//! earlier snapshots still match and they are still found as parents.

use std::path::{Component, Path, PathBuf};

/// The absolute path a backup of `given` reads (see the module doc).
pub fn resolve(given: &Path) -> std::io::Result<PathBuf> {
    let abs = std::path::absolute(given)?;
    let comps: Vec<Component<'_>> = abs.components().collect();
    let (mut out, rest) = match comps.iter().rposition(|c| *c == Component::ParentDir) {
        Some(last) => (
            std::fs::canonicalize(comps[..=last].iter().collect::<PathBuf>())?,
            &comps[last + 1..],
        ),
        None => (PathBuf::from("/"), &comps[..]),
    };
    for c in rest {
        if let Component::Normal(name) = c {
            out.push(name);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_without_dotdot_stay_as_given() {
        assert_eq!(
            resolve(Path::new("/no/such/./place/")).unwrap(),
            Path::new("/no/such/place")
        );
    }

    #[test]
    fn dotdot_follows_a_symlinked_folder_like_the_kernel() {
        let tmp = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        std::fs::create_dir_all(root.join("real/inner")).unwrap();
        std::os::unix::fs::symlink(root.join("real/inner"), root.join("link")).unwrap();
        assert_eq!(
            resolve(&root.join("link/../x/./y")).unwrap(),
            root.join("real/x/y")
        );
        assert_eq!(
            resolve(&root.join("real/inner/../../link")).unwrap(),
            root.join("link"),
            "the last component is not resolved"
        );
    }
}
