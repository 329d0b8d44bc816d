//! Salvage: sets aside what recovery could not keep (copies of damaged ranges, whole files
//! that are no readable segment in their place), then rewrites each damaged segment with
//! only the records it may keep, a `gap` record standing for lost LSNs.

use super::scan::{Item, Scan};
use super::{DroppedRange, QUARANTINE_DIR, RecoveredSegment, TornTail};
use crate::error::{Error, Result};
use crate::format::{Kind, RecordKey, RecordMeta};
use crate::hint;
use crate::id::{Lsn, SegmentId};
use crate::io::Dir;
use crate::segment::{SegmentBuilder, record_at};

/// The session id of the `gap` records salvage writes (they belong to no session).
const GAP_SESSION: &[u8] = b"-";

/// Quarantines, then rewrites; returns the dropped ranges (with where their bytes went) and
/// the torn tail the scan cut, if any.
pub(super) fn rewrite(scan: &mut Scan<'_>) -> Result<(Vec<DroppedRange>, Option<TornTail>)> {
    let dir = scan.dir;
    let qdir_path = dir.join(QUARANTINE_DIR);
    dir.create_dir(&qdir_path)?;
    let qdir = Dir::new(dir.vfs, &qdir_path);
    let mut dropped = std::mem::take(&mut scan.report.dropped);
    for d in dropped.iter_mut().filter(|d| d.len > 0) {
        let Some(seg) = scan.segments.iter().find(|s| s.id == d.segment) else {
            continue;
        };
        let bytes = read_range(seg, d.offset, d.len)?;
        let name = format!("{:020}-{:012}.bin", d.segment.0, d.offset);
        d.quarantined = Some(qdir.write_unique(&name, &bytes)?);
    }
    // Files that are no readable segment in their place go aside whole, by rename.
    for aside in std::mem::take(&mut scan.set_aside) {
        let name = aside
            .path
            .file_name()
            .map_or_else(|| "segment".into(), |n| n.to_string_lossy().into_owned());
        let mut dest = qdir.join(&format!("{name}.aside"));
        let mut n = 1;
        while dir.vfs.open(&dest, crate::io::OpenMode::Read).is_ok() {
            n += 1;
            dest = qdir.join(&format!("{name}.aside.{n}"));
        }
        dir.rename(&aside.path, &dest)?;
        let _ = dir
            .vfs
            .remove_file(&hint::path(dir.path, aside.range.segment));
        dropped.push(DroppedRange {
            quarantined: Some(dest),
            ..aside.range
        });
    }
    qdir.sync()?;
    dir.sync()?;
    if let Some(count) = scan.missing_start {
        // The first segment is gone: a new one holding one gap record keeps the chain whole.
        let out = encode_segment(dir, Lsn::FIRST, false, |put| {
            put(&gap(dir, Lsn::FIRST.0, count), GAP_SESSION, None, &[]);
            Ok(())
        })?;
        write_segment(dir, SegmentId(Lsn::FIRST.0), &out.0, out.1)?;
    }
    for (seg, plan) in scan.segments.iter().zip(&scan.plans) {
        if !plan.rewrite {
            continue;
        }
        let whole = seg.file.map().map_err(|e| Error::io("map", &seg.path, e))?;
        let (out, salt) = encode_segment(dir, Lsn(seg.id.0), seg.compacted, |put| {
            for item in &plan.items {
                match *item {
                    Item::Keep(off) => {
                        // The scan verified this record; if it no longer does, the file
                        // changed under us: stop before renaming anything over it.
                        let rec =
                            record_at(&whole, seg.salt, off).map_err(|damage| Error::Corrupt {
                                segment: seg.id,
                                offset: off,
                                damage,
                            })?;
                        put(&rec.meta, rec.session.as_bytes(), rec.key, rec.payload);
                    }
                    Item::Gap { lsn, count } => {
                        put(&gap(dir, lsn, count), GAP_SESSION, None, &[]);
                    }
                }
            }
            Ok(())
        })?;
        write_segment(dir, seg.id, &out, salt)?;
    }
    Ok((dropped, scan.report.torn_tail.clone()))
}

fn gap(dir: Dir<'_>, lsn: u64, count: u64) -> RecordMeta {
    RecordMeta {
        kind: Kind::Gap,
        first: true,
        commit: true,
        lsn: Lsn(lsn),
        arg: count,
        timestamp: dir.vfs.now(),
    }
}

/// Encodes a segment starting at `first_lsn` (compacted or not, as the one it replaces):
/// `body` puts each record.
fn encode_segment(
    dir: Dir<'_>,
    first_lsn: Lsn,
    compacted: bool,
    body: impl FnOnce(&mut dyn FnMut(&RecordMeta, &[u8], Option<RecordKey<'_>>, &[u8])) -> Result<()>,
) -> Result<(Vec<u8>, u64)> {
    let mut out = SegmentBuilder::new(dir.vfs, first_lsn, compacted, None);
    let salt = out.salt();
    // (In memory: `put` cannot fail.)
    body(&mut |meta, session, key, payload| {
        let _ = out.put(meta, session, key, payload);
    })?;
    let bytes = out.finish().unwrap_or_default();
    Ok((bytes, salt))
}

/// Replaces segment `id` with `bytes` atomically, then gives it a hint (best effort, as
/// every hint: without it the segment is scanned).
fn write_segment(dir: Dir<'_>, id: SegmentId, bytes: &[u8], salt: u64) -> Result<()> {
    dir.atomic_write(&dir.join(&id.file_name()), bytes)?;
    let _ = hint::write(dir, bytes, id, salt);
    Ok(())
}

fn read_range(seg: &RecoveredSegment, offset: u64, len: u64) -> Result<Vec<u8>> {
    let map = seg.file.map().map_err(|e| Error::io("map", &seg.path, e))?;
    Ok(map
        .get(offset as usize..(offset + len) as usize)
        .unwrap_or(&[])
        .to_vec())
}
