//! Unit tests of the sim module.
use super::*;

fn p(s: &str) -> PathBuf {
    PathBuf::from(s)
}

/// A SimFs with `/d` made, and `/d/f` created and written (nothing synced).
fn setup(bytes: &[u8]) -> io::Result<(SimFs, Arc<dyn VfsFile>)> {
    let fs = SimFs::new(7);
    fs.create_dir_all(&p("/d"))?;
    let f = fs.open(&p("/d/f"), OpenMode::CreateNew)?;
    f.write_all_at(bytes, 0)?;
    Ok((fs, f))
}

#[test]
fn unsynced_create_vanishes() -> io::Result<()> {
    let (fs, f) = setup(b"hello")?;
    f.sync_data()?;
    let after = fs.crash(Tear::DropUnsynced);
    assert_eq!(after.read_file(&p("/d/f")), None);
    assert!(after.is_dir(&p("/d")));
    assert!(after.list(&p("/d"))?.is_empty());
    Ok(())
}

#[test]
fn synced_file_and_dir_survive() -> io::Result<()> {
    let (fs, f) = setup(b"hello")?;
    f.sync_data()?;
    fs.sync_dir(&p("/d"))?;
    let after = fs.crash(Tear::Sectors(512));
    assert_eq!(after.read_file(&p("/d/f")).as_deref(), Some(&b"hello"[..]));
    assert_eq!(after.list(&p("/d"))?, vec!["f".to_owned()]);
    let g = after.open(&p("/d/f"), OpenMode::Read)?;
    let mut buf = [0u8; 5];
    g.read_exact_at(&mut buf, 0)?;
    assert_eq!(&buf, b"hello");
    assert!(
        matches!(g.write_all_at(b"x", 0), Err(e) if e.kind() == io::ErrorKind::PermissionDenied)
    );
    assert!(
        matches!(g.read_exact_at(&mut buf, 1), Err(e) if e.kind() == io::ErrorKind::UnexpectedEof)
    );
    Ok(())
}

#[test]
fn unsynced_rename_reverts() -> io::Result<()> {
    let (fs, f) = setup(b"v1")?;
    f.sync_data()?;
    fs.sync_dir(&p("/d"))?;
    fs.rename(&p("/d/f"), &p("/d/g"))?;
    // The handle follows the inode across the rename.
    f.write_all_at(b"!", 2)?;
    assert_eq!(fs.read_file(&p("/d/g")).as_deref(), Some(&b"v1!"[..]));
    assert_eq!(fs.paths(), vec![p("/d/g")]);
    let after = fs.crash(Tear::DropUnsynced);
    assert_eq!(after.paths(), vec![p("/d/f")]);
    assert_eq!(after.read_file(&p("/d/f")).as_deref(), Some(&b"v1"[..]));
    Ok(())
}

#[test]
fn drop_unsynced_keeps_exactly_durable_bytes() -> io::Result<()> {
    let (fs, f) = setup(&[1u8; 1000])?;
    f.sync_data()?;
    fs.sync_dir(&p("/d"))?;
    f.write_all_at(&[2u8; 3000], 500)?;
    assert_eq!(fs.durable_len(&p("/d/f")), Some(1000));
    let after = fs.crash(Tear::DropUnsynced);
    assert_eq!(after.read_file(&p("/d/f")), Some(vec![1u8; 1000]));
    assert_eq!(after.durable_len(&p("/d/f")), Some(1000));
    Ok(())
}

#[test]
fn sectors_tear_only_at_boundaries() -> io::Result<()> {
    let old: Vec<u8> = (0..2000u32).map(|i| (i % 251) as u8).collect();
    let mut new = old.clone();
    new.iter_mut().for_each(|b| *b = b.wrapping_add(1));
    new.extend(std::iter::repeat_n(9u8, 3000));
    let mut kept = BTreeSet::new();
    for seed in 0..20 {
        let fs = SimFs::new(seed);
        fs.write_file(&p("/d/f"), &old);
        let f = fs.open(&p("/d/f"), OpenMode::ReadWrite)?;
        f.write_all_at(&new, 0)?;
        let got = fs
            .crash(Tear::Sectors(512))
            .read_file(&p("/d/f"))
            .unwrap_or_default();
        assert!(got.len() == old.len() || got.len() == new.len());
        for (i, chunk) in got.chunks(512).enumerate() {
            let start = i * 512;
            let fresh = &new[start..start + chunk.len()];
            let stale: Vec<u8> = (start..start + chunk.len())
                .map(|j| old.get(j).copied().unwrap_or(0))
                .collect();
            assert!(
                chunk == fresh || chunk == &stale[..],
                "sector {i} is torn inside"
            );
            kept.insert(chunk == fresh);
        }
    }
    assert_eq!(kept.len(), 2, "both old and new sectors occur");
    Ok(())
}

#[test]
fn fail_at_fires_exactly_at_op_n() -> io::Result<()> {
    let (fs, f) = setup(b"abc")?;
    let n = fs.ops();
    fs.fail_at(n + 2, Fault::NoSpace);
    f.len()?;
    let err = f.write_all_at(b"defgh", 3).err();
    assert!(matches!(err, Some(ref e) if e.raw_os_error() == Some(28)));
    assert_eq!(fs.ops(), n + 2);
    f.write_all_at(b"xyz", 0)?;
    fs.fail_sticky(fs.ops() + 1, Fault::Io);
    assert!(matches!(f.len(), Err(e) if e.raw_os_error() == Some(5)));
    assert!(matches!(fs.list(&p("/d")), Err(e) if e.raw_os_error() == Some(5)));
    fs.clear_faults();
    assert!(matches!(f.len(), Ok(len) if len >= 3));
    Ok(())
}

/// A write failing with `Io` may land a prefix of its bytes (a short write); one failing
/// with `Dead` (a killed process's close code) lands none, whatever the seed.
#[test]
fn a_dead_process_writes_nothing_where_an_io_error_may_write_a_prefix() -> io::Result<()> {
    let mut short = 0;
    for seed in 0..64 {
        for (fault, prefix_allowed) in [(Fault::Io, true), (Fault::Dead, false)] {
            let fs = SimFs::new(seed);
            fs.create_dir_all(&p("/d"))?;
            let f = fs.open(&p("/d/f"), OpenMode::CreateNew)?;
            fs.fail_sticky(fs.ops() + 1, fault);
            assert!(f.write_all_at(&[7; 100], 0).is_err());
            fs.clear_faults();
            let landed = f.len()?;
            assert!(
                prefix_allowed || landed == 0,
                "seed {seed}: {landed} bytes landed"
            );
            short += usize::from(landed > 0);
        }
    }
    assert!(short > 0, "an I/O error never landed a prefix");
    Ok(())
}

#[test]
fn failed_sync_leaves_durable_unchanged() -> io::Result<()> {
    let (fs, f) = setup(b"first")?;
    f.sync_data()?;
    f.write_all_at(b"second", 0)?;
    fs.fail_next_sync(Fault::Io);
    assert!(matches!(f.sync_data(), Err(e) if e.raw_os_error() == Some(5)));
    assert_eq!(fs.durable_len(&p("/d/f")), Some(5));
    fs.sync_dir(&p("/d"))?;
    let after = fs.crash(Tear::DropUnsynced);
    assert_eq!(after.read_file(&p("/d/f")).as_deref(), Some(&b"first"[..]));
    Ok(())
}

#[test]
fn locks_exclude_as_their_mode_says_until_released_or_dropped() -> io::Result<()> {
    let fs = SimFs::new(1);
    fs.create_dir_all(&p("/d"))?;
    let a = fs.lock_file(&p("/d/LOCK"))?;
    let b = fs.lock_file(&p("/d/LOCK"))?;
    assert_eq!(fs.paths(), vec![p("/d/LOCK")]);
    assert!(!fs.is_locked(&p("/d/LOCK"), LockMode::Exclusive)?);
    assert!(a.try_lock(LockMode::Exclusive)?);
    assert!(fs.is_locked(&p("/d/LOCK"), LockMode::Shared)?);
    assert!(!b.try_lock(LockMode::Exclusive)?);
    assert!(!b.try_lock(LockMode::Shared)?);
    a.unlock()?;
    assert!(a.try_lock(LockMode::Shared)?);
    assert!(b.try_lock(LockMode::Shared)?);
    assert!(!b.try_lock(LockMode::Exclusive)?, "a still holds it shared");
    assert!(!fs.is_locked(&p("/d/LOCK"), LockMode::Shared)?);
    assert!(fs.is_locked(&p("/d/LOCK"), LockMode::Exclusive)?);
    drop(a);
    assert!(
        b.try_lock(LockMode::Exclusive)?,
        "b converts its shared lock"
    );
    b.unlock()?;
    assert!(!fs.is_locked(&p("/d/LOCK"), LockMode::Exclusive)?);
    assert!(b.is_current()?);
    fs.remove_file(&p("/d/LOCK"))?;
    assert!(!b.is_current()?);
    Ok(())
}

#[test]
fn same_seed_same_result() -> io::Result<()> {
    let run = |seed| -> io::Result<Option<Vec<u8>>> {
        let fs = SimFs::new(seed);
        fs.write_file(&p("/d/f"), &[0u8; 4096]);
        let f = fs.open(&p("/d/f"), OpenMode::ReadWrite)?;
        fs.fail_at(fs.ops() + 2, Fault::Io);
        f.write_all_at(&[1u8; 8192], 0)?;
        assert!(f.write_all_at(&[2u8; 8192], 0).is_err());
        Ok(fs
            .crash(Tear::Sectors(512))
            .crash(Tear::Sectors(512))
            .read_file(&p("/d/f")))
    };
    assert_eq!(run(3)?, run(3)?);
    Ok(())
}

#[test]
fn records_the_modes_of_what_it_creates_across_renames_and_crashes() -> io::Result<()> {
    let fs = SimFs::new(1);
    let wide = fs
        .with_permissions(Permissions::GROUP_READABLE)
        .ok_or_else(|| io::Error::other("no permissions"))?;
    wide.create_dir_all(&p("/d"))?;
    wide.open(&p("/d/a"), OpenMode::CreateNew)?;
    fs.open(&p("/d/b"), OpenMode::CreateNew)?;
    fs.lock_file(&p("/d/LOCK"))?;
    wide.create_dir(&p("/d/q"))?;
    fs.rename(&p("/d/a"), &p("/d/c"))?;
    fs.sync_dir(&p("/d"))?;
    for fs in [fs.clone(), fs.crash(Tear::DropUnsynced)] {
        assert_eq!(fs.mode(&p("/d")), Some(0o750));
        assert_eq!(fs.mode(&p("/d/q")), Some(0o750));
        assert_eq!(
            fs.mode(&p("/d/c")),
            Some(0o640),
            "the mode moves with the inode"
        );
        assert_eq!(fs.mode(&p("/d/b")), Some(0o600));
        assert_eq!(fs.mode(&p("/d/LOCK")), Some(0o600));
        assert_eq!(fs.mode(&p("/d/a")), None);
    }
    Ok(())
}
