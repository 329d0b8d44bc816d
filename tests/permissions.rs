//! Owner-only by default: the modes of what a store creates, the `Permissions` that widen
//! them, the report on a store others may read, and symbolic links never written through.
//! (Under other umasks, and as another user: `tests/cli_permissions.rs`.)

mod store_files;

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use convlog::io::sim::SimFs;
use convlog::{Error, Permissions, RecoveryMode, Store, permission_report};
use serde_json::json;
use store_files::{drop_hints, records_end, segments};

fn message(i: u64) -> serde_json::Value {
    json!({"role": "user", "content": format!("message {i} {}", "x".repeat(200))})
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Every entry of `dir` and of its subdirectories, with `dir` itself first.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut all = vec![dir.to_owned()];
    let mut i = 0;
    while i < all.len() {
        if all[i].is_dir() {
            let mut inner: Vec<PathBuf> = fs::read_dir(&all[i])
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            inner.sort();
            all.extend(inner);
        }
        i += 1;
    }
    all
}

/// Asserts every directory of the tree at `dir` has mode `d` and every file `f`; returns the
/// names of the files, to check that each kind was there.
fn assert_modes(dir: &Path, d: u32, f: u32) -> Vec<String> {
    let mut names = Vec::new();
    for path in walk(dir) {
        let meta = fs::symlink_metadata(&path).unwrap();
        let want = if meta.is_dir() { d } else { f };
        assert!(meta.is_dir() || meta.is_file(), "{}", path.display());
        assert_eq!(
            mode(&path),
            want,
            "{:o} for {}",
            mode(&path),
            path.display()
        );
        if let Some(name) = path.strip_prefix(dir).ok().and_then(|p| p.to_str()) {
            names.push(name.to_owned());
        }
    }
    names
}

/// A store in `dir` (a new subdirectory tree) with sealed and active segments, hints, lock
/// files and a quarantined torn tail, written with `perms`.
fn full_store(dir: &Path, perms: Permissions) {
    let open = || {
        Store::builder()
            .segment_size(4096)
            .permissions(perms)
            // The quarantined tail stays through the compaction, for the modes to be checked.
            .keep_quarantine(true)
            .open(dir)
            .unwrap()
    };
    let store = open();
    for i in 0..40 {
        store.append("s", &message(i)).unwrap();
    }
    drop(store);
    // A torn write after the last record: the next open copies it to quarantine/ and cuts it.
    drop_hints(dir);
    let seg = segments(dir).pop().unwrap();
    let end = records_end(&seg) as usize;
    let mut bytes = fs::read(&seg).unwrap();
    bytes[end..end + 10].copy_from_slice(b"torn write");
    fs::write(&seg, &bytes).unwrap();
    let store = open();
    assert!(store.recovery_report().torn_tail.is_some());
    store.append("s", &message(99)).unwrap();
    // A compaction: its lock file, its output (renamed into place) and the new hint.
    store.append("gone", &message(0)).unwrap();
    store.delete_session("gone").unwrap();
    store.seal().unwrap();
    assert!(store.compact().unwrap().segments_rewritten > 0);
    drop(store);
}

fn kinds_present(names: &[String]) {
    for want in [
        ".seg",
        ".hint",
        "LOCK",
        "WRITERS",
        "SYNC",
        "COMPACT",
        "quarantine",
        ".torn",
    ] {
        assert!(
            names.iter().any(|n| n.ends_with(want)),
            "no {want} among {names:?}"
        );
    }
    assert!(names.iter().filter(|n| n.ends_with(".seg")).count() > 1);
}

#[test]
fn a_new_store_is_owner_only_in_every_directory_and_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a").join("store");
    full_store(&dir, Permissions::default());
    kinds_present(&assert_modes(&dir, 0o700, 0o600));
    // The report agrees: nothing is exposed.
    assert!(
        permission_report(&dir, Permissions::default())
            .unwrap()
            .is_private()
    );
}

#[test]
fn permissions_widen_the_modes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let group = tmp.path().join("group");
    full_store(&group, Permissions::GROUP_READABLE);
    kinds_present(&assert_modes(&group, 0o750, 0o640));
    // Within what was asked for: private by that measure, exposed by the default's.
    assert!(
        permission_report(&group, Permissions::GROUP_READABLE)
            .unwrap()
            .is_private()
    );
    assert!(
        !permission_report(&group, Permissions::OWNER_ONLY)
            .unwrap()
            .is_private()
    );

    let explicit = tmp.path().join("explicit");
    let perms = Permissions::new(0o711, 0o660).unwrap();
    full_store(&explicit, perms);
    kinds_present(&assert_modes(&explicit, 0o711, 0o660));
    assert_eq!(perms.file_mode(), 0o660);

    // A second open in this process with other modes would create files with the wrong ones.
    let store = Store::open(&explicit).unwrap();
    let err = Store::builder()
        .permissions(Permissions::GROUP_READABLE)
        .open(&explicit)
        .unwrap_err();
    assert!(matches!(err, Error::AlreadyOpen { .. }), "{err}");
    drop(store);
}

#[test]
fn existing_directories_keep_their_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    Store::open(&dir).unwrap().append("s", &message(1)).unwrap();
    assert_eq!(mode(&dir), 0o755, "the user's directory is left as it was");
    for path in walk(&dir).into_iter().skip(1) {
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
}

#[test]
fn the_simulated_file_system_records_the_modes_asked_for() {
    let fs = SimFs::new(3);
    let store = Store::builder()
        .vfs(Arc::new(fs.clone()))
        .permissions(Permissions::GROUP_READABLE)
        .segment_size(4096)
        .open("/s")
        .unwrap();
    for i in 0..30 {
        store.append("s", &message(i)).unwrap();
    }
    drop(store);
    assert_eq!(fs.mode(Path::new("/s")), Some(0o750));
    let paths = fs.paths();
    assert!(paths.len() > 5, "{paths:?}");
    for p in &paths {
        assert_eq!(fs.mode(p), Some(0o640), "{}", p.display());
    }
}

/// Gives every file in the tree `file` and every directory `dir`.
fn chmod_tree(root: &Path, dir: u32, file: u32) {
    for path in walk(root) {
        let m = if path.is_dir() { dir } else { file };
        fs::set_permissions(&path, fs::Permissions::from_mode(m)).unwrap();
    }
}

#[test]
fn a_store_others_may_read_opens_and_the_report_says_so_plainly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    full_store(&dir, Permissions::default());
    chmod_tree(&dir, 0o755, 0o644);
    let files = walk(&dir).iter().filter(|p| p.is_file()).count();
    let active_hint = segments(&dir).pop().unwrap().with_extension("hint");

    // Opens (read-only, writable, strict) all work, and change no mode.
    let ro = Store::builder().read_only(true).open(&dir).unwrap();
    assert_eq!(ro.interaction_count("s"), 41);
    drop(ro);
    let rw = Store::open(&dir).unwrap();
    rw.append("s", &message(100)).unwrap();
    drop(rw);
    let strict = Store::builder()
        .read_only(true)
        .recovery(RecoveryMode::Strict)
        .open(&dir)
        .unwrap();
    drop(strict);

    // The writer's clean close replaced the active segment's hint: that file is new, and
    // owner-only; every other file kept its mode.
    assert_eq!(mode(&active_hint), 0o600);
    let files = files - 1;
    let report = permission_report(&dir, Permissions::default()).unwrap();
    let dirs = report.exposed.iter().filter(|e| e.is_dir).count();
    assert_eq!(dirs, 2, "the store and quarantine/: {report:?}");
    assert_eq!(report.exposed.len() - dirs, files, "{report:?}");
    assert!(report.exposed.iter().all(|e| e.mode == 0o644 || e.is_dir));
    let note = report.note().unwrap();
    assert_eq!(
        note,
        format!(
            "{files} files (mode 0644) and 2 directories (mode 0755) of the store {} are \
             readable by other users; convlog creates 0600 files and 0700 directories; \
             chmod -R go-rwx {} to fix",
            dir.display(),
            dir.display()
        )
    );
    chmod_tree(&dir, 0o700, 0o600);
    assert!(
        permission_report(&dir, Permissions::default())
            .unwrap()
            .note()
            .is_none()
    );
    // A missing directory is an error, not a panic.
    let missing = permission_report(&tmp.path().join("nope"), Permissions::default());
    assert!(matches!(missing, Err(Error::Io { op: "stat", .. })));
}

/// The bytes of a file outside the store that a planted link points at.
fn outside(tmp: &Path) -> PathBuf {
    let target = tmp.join("outside");
    fs::write(&target, b"not yours").unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o644)).unwrap();
    target
}

/// The file a link pointed at kept its bytes and its mode (set to 0644 by [`outside`]).
fn assert_untouched(target: &Path) {
    assert_eq!(fs::read(target).unwrap(), b"not yours");
    assert_eq!(mode(target), 0o644, "its mode changed");
}

#[test]
fn a_symlinked_lock_file_is_refused_and_its_target_untouched() {
    for name in ["LOCK", "WRITERS", "SYNC"] {
        let tmp = tempfile::tempdir().unwrap();
        let target = outside(tmp.path());
        let dir = tmp.path().join("store");
        fs::create_dir(&dir).unwrap();
        symlink(&target, dir.join(name)).unwrap();
        let err = Store::open(&dir).unwrap_err();
        assert!(
            matches!(&err, Error::Io { path, source, .. }
                if path.ends_with(name) && source.kind() == std::io::ErrorKind::InvalidInput),
            "{name}: {err}"
        );
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_untouched(&target);
        // A dangling link: the file it names is never created.
        let dangling = tmp.path().join("dangling");
        fs::remove_file(dir.join(name)).unwrap();
        symlink(&dangling, dir.join(name)).unwrap();
        assert!(Store::open(&dir).is_err(), "{name}");
        assert!(!dangling.exists(), "{name}: created through a link");
    }
}

#[test]
fn a_symlinked_segment_is_refused_and_its_target_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let target = outside(tmp.path());
    // A new store whose first segment name is a link.
    let dir = tmp.path().join("new");
    fs::create_dir(&dir).unwrap();
    symlink(&target, dir.join("00000000000000000001.seg")).unwrap();
    let err = Store::open(&dir).unwrap_err();
    assert!(
        matches!(&err, Error::Io { op: "create", path, .. } if path.ends_with("00000000000000000001.seg")),
        "{err}"
    );
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert_untouched(&target);

    // An existing store whose next segment name is a link: the roll fails, nothing is
    // written through it, and every acknowledged message stays.
    let dir = tmp.path().join("old");
    let store = Store::builder().segment_size(4096).open(&dir).unwrap();
    store.append("s", &message(0)).unwrap();
    let mut appended = 1;
    let mut failed = None;
    for i in 1..100 {
        let next = store.last_lsn().0 + 1;
        let link = dir.join(format!("{next:020}.seg"));
        if !link.exists() {
            symlink(&target, &link).unwrap();
        }
        match store.append("s", &message(i)) {
            Ok(_) => appended += 1,
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
        if fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink()) {
            fs::remove_file(&link).unwrap();
        }
    }
    let err = failed.expect("a roll met the link");
    assert!(matches!(&err, Error::Io { .. }), "{err}");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert_untouched(&target);
    drop(store);
    let store = Store::builder().read_only(true).open(&dir).unwrap();
    assert_eq!(store.interaction_count("s"), appended);
}

#[test]
fn a_symlinked_hint_is_replaced_never_written_through() {
    let tmp = tempfile::tempdir().unwrap();
    let target = outside(tmp.path());
    let dir = tmp.path().join("store");
    Store::open(&dir).unwrap().append("s", &message(1)).unwrap();
    let hint = dir.join("00000000000000000001.hint");
    fs::remove_file(&hint).unwrap();
    symlink(&target, &hint).unwrap();
    let store = Store::open(&dir).unwrap();
    store.append("s", &message(2)).unwrap();
    drop(store);
    // The clean close renamed its new hint over the link (a rename never follows one).
    assert!(fs::symlink_metadata(&hint).unwrap().is_file());
    assert_eq!(mode(&hint), 0o600);
    assert_untouched(&target);
}

#[test]
fn a_symlinked_quarantine_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let elsewhere = tmp.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    Store::open(&dir).unwrap().append("s", &message(1)).unwrap();
    symlink(&elsewhere, dir.join("quarantine")).unwrap();
    drop_hints(&dir);
    let seg = segments(&dir).pop().unwrap();
    let end = records_end(&seg) as usize;
    let mut bytes = fs::read(&seg).unwrap();
    bytes[end..end + 4].copy_from_slice(b"torn");
    fs::write(&seg, &bytes).unwrap();
    // The torn tail would be copied into quarantine/ first: refused, nothing cut.
    let err = Store::open(&dir).unwrap_err();
    assert!(
        matches!(&err, Error::Io { path, .. } if path.ends_with("quarantine")),
        "{err}"
    );
    assert!(err.to_string().contains("not a directory"), "{err}");
    assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
    assert_eq!(fs::read(&seg).unwrap(), bytes);
}
