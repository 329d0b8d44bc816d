//! A handle does not cross `fork()`: the child's writes through an inherited handle are
//! `Error::Forked` and change nothing, dropping the handle leaves the parent's store as it
//! was, and the child can open the store again as a process of its own.
//!
//! Each test forks from a process with the store's threads running; the child does only
//! what it must and leaves with `_exit`, its verdict in the exit code.
#![cfg(unix)]

use convlog::{Error, Store};

/// Forks; in the child, runs `child` and exits 0 if it returns `Ok`, else prints why and
/// exits 1. Returns the child's exit code in the parent.
fn in_child(child: impl FnOnce() -> Result<(), String>) -> i32 {
    // SAFETY: `fork` has no preconditions; the child runs `child` (which allocates: glibc's
    // malloc is fork-safe) and leaves through `_exit`, never returning into the test harness.
    #[allow(unsafe_code)]
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = match child() {
            Ok(()) => 0,
            Err(why) => {
                eprintln!("child: {why}");
                1
            }
        };
        // SAFETY: ends the child at once, without running the parent's exit handlers.
        #[allow(unsafe_code)]
        unsafe {
            libc::_exit(code)
        };
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above; `status` is a valid out-pointer.
    #[allow(unsafe_code)]
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid);
    assert!(libc::WIFEXITED(status), "child did not exit: {status}");
    libc::WEXITSTATUS(status)
}

fn msg(i: u64) -> Vec<u8> {
    format!(r#"{{"role":"user","content":"message {i}"}}"#).into_bytes()
}

#[test]
fn a_child_cannot_write_through_an_inherited_handle_but_can_open_the_store_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.append_raw("s", &msg(1)).unwrap();
    // The child takes the handle (its copy of `slot`), to drop it; the parent keeps its own.
    let mut slot = Some(store.clone());
    let code = in_child(|| {
        let store = slot.take().expect("the inherited handle");
        match store.append_raw("s", &msg(2)) {
            Err(Error::Forked { opened_by, .. }) if opened_by != std::process::id() => {}
            other => return Err(format!("append through the parent's handle: {other:?}")),
        }
        if !matches!(store.sync(), Err(Error::Forked { .. })) {
            return Err("sync through the parent's handle was not Forked".into());
        }
        if !matches!(store.compact(), Err(Error::Forked { .. })) {
            return Err("compact through the parent's handle was not Forked".into());
        }
        if !matches!(store.delete_session("s"), Err(Error::Forked { .. })) {
            return Err("delete through the parent's handle was not Forked".into());
        }
        // Reads go on through it.
        if store.interaction_count("s") != 1 {
            return Err("the inherited handle does not read the parent's message".into());
        }
        drop(store);
        drop(slot.take()); // (nothing left: the child holds no handle now but `store` below)
        // A store of its own: not the inherited one (the registry skips the parent's).
        let mine = Store::open(dir.path()).map_err(|e| format!("reopen: {e}"))?;
        let r = mine
            .append_raw("s", &msg(2))
            .map_err(|e| format!("append: {e}"))?;
        if r.interaction_id != 2 {
            return Err(format!("the child's append got id {}", r.interaction_id));
        }
        mine.sync().map_err(|e| format!("sync: {e}"))?;
        Ok(())
    });
    assert_eq!(code, 0, "the child's checks failed (see its stderr)");
    // The parent's handle goes on, beside the child's write, as beside any other process's.
    assert_eq!(store.interaction_count("s"), 2);
    let r = store.append_raw("s", &msg(3)).unwrap();
    assert_eq!(r.interaction_id, 3);
    drop((store, slot));
    let strict = Store::builder()
        .recovery(convlog::RecoveryMode::Strict)
        .open(dir.path())
        .unwrap();
    let got: Vec<Vec<u8>> = strict
        .messages("s")
        .raw()
        .map(|e| e.unwrap().message)
        .collect();
    assert_eq!(got, [msg(1), msg(2), msg(3)]);
}

#[test]
fn a_child_of_an_exclusive_store_is_refused_its_lock_and_leaves_the_parent_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::builder().exclusive(true).open(dir.path()).unwrap();
    store.append_raw("s", &msg(1)).unwrap();
    let mut slot = Some(store.clone());
    let code = in_child(|| {
        let store = slot.take().expect("the inherited handle");
        if !matches!(store.append_raw("s", &msg(2)), Err(Error::Forked { .. })) {
            return Err("append through the parent's exclusive handle was not Forked".into());
        }
        // Dropping it must not release the parent's lock (one open file description,
        // shared with the parent): the child's own open is still refused.
        drop(store);
        match Store::open(dir.path()) {
            Err(Error::Locked { .. }) => Ok(()),
            other => Err(format!(
                "open beside the parent's exclusive store: {other:?}"
            )),
        }
    });
    assert_eq!(code, 0, "the child's checks failed (see its stderr)");
    drop(slot);
    let r = store.append_raw("s", &msg(2)).unwrap();
    assert_eq!(r.interaction_id, 2);
    store.sync().unwrap();
    drop(store);
    let reopened = Store::open(dir.path()).unwrap();
    assert_eq!(reopened.interaction_count("s"), 2);
}
