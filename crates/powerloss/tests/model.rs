//! The durability models, each checked on a real mount: what survives a
//! power cut in the backing directory, and what a clean unmount keeps.

use powerloss::{CutAt, FsyncFault, Model, Mount, OpKind};
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use tempfile::TempDir;

fn mounted(model: Model, cut: Option<CutAt>) -> Option<(TempDir, TempDir, Mount)> {
    if let Some(why) = powerloss::unavailable() {
        eprintln!("skipped: {why}");
        return None;
    }
    let (backing, mnt) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    fs::write(backing.path().join("old"), b"old bytes").unwrap();
    let m = Mount::new(backing.path(), mnt.path(), model, cut).unwrap();
    Some((backing, mnt, m))
}

fn write_synced(path: &Path, bytes: &[u8]) {
    let mut f = File::create(path).unwrap();
    f.write_all(bytes).unwrap();
    f.sync_all().unwrap();
}

fn sync_dir(path: &Path) {
    File::open(path).unwrap().sync_all().unwrap();
}

#[test]
fn strict_keeps_only_what_was_synced() {
    let Some((backing, mnt, m)) = mounted(Model::Strict, None) else {
        return;
    };
    let root = m.path().to_path_buf();
    // A synced file in a new directory that was never synced.
    fs::create_dir(root.join("new")).unwrap();
    write_synced(&root.join("new/f"), b"lost with its directory");
    // A synced file in the root, the root synced: survives.
    write_synced(&root.join("kept"), b"kept");
    // A file whose data is never synced, its entry synced.
    fs::write(root.join("unsynced"), b"never synced").unwrap();
    sync_dir(&root);
    fs::rename(root.join("kept"), root.join("moved")).unwrap();
    m.cut_power();
    assert!(
        fs::write(root.join("after"), b"x").is_err(),
        "writes fail after the cut"
    );
    m.unmount().unwrap();
    let b = backing.path();
    assert!(
        b.join("new").is_dir(),
        "the root was synced after the mkdir"
    );
    assert!(
        !b.join("new/f").exists(),
        "`new` was never synced: its entry is lost"
    );
    assert_eq!(
        fs::read(b.join("kept")).unwrap(),
        b"kept",
        "the rename was not synced"
    );
    assert!(!b.join("moved").exists());
    assert_eq!(
        fs::read(b.join("unsynced")).unwrap(),
        b"",
        "data never synced is lost"
    );
    assert_eq!(fs::read(b.join("old")).unwrap(), b"old bytes");
    drop(mnt);
}

#[test]
fn ext4_commits_every_directory_operation_with_any_fsync() {
    let Some((backing, _mnt, m)) = mounted(Model::Ext4Ordered, None) else {
        return;
    };
    let root = m.path().to_path_buf();
    fs::create_dir_all(root.join("a/b")).unwrap();
    fs::write(root.join("a/b/unsynced"), b"data not flushed").unwrap();
    fs::write(root.join("replacement"), b"new bytes").unwrap();
    fs::rename(root.join("replacement"), root.join("old")).unwrap();
    write_synced(&root.join("other"), b"synced");
    fs::write(root.join("late"), b"after the last commit").unwrap();
    m.cut_power();
    m.unmount().unwrap();
    let b = backing.path();
    assert_eq!(
        fs::read(b.join("a/b/unsynced")).unwrap(),
        b"",
        "created, data lost"
    );
    assert_eq!(
        fs::read(b.join("old")).unwrap(),
        b"new bytes",
        "auto_da_alloc"
    );
    assert_eq!(fs::read(b.join("other")).unwrap(), b"synced");
    assert!(!b.join("late").exists(), "created after the last commit");
}

#[test]
fn a_cut_at_the_nth_rename_loses_it_and_everything_after() {
    let cut = CutAt {
        kind: Some(OpKind::Rename),
        under: String::new(),
        nth: 2,
    };
    let Some((backing, _mnt, m)) = mounted(Model::Strict, Some(cut)) else {
        return;
    };
    let root = m.path().to_path_buf();
    write_synced(&root.join("t1"), b"one");
    fs::rename(root.join("t1"), root.join("f1")).unwrap();
    sync_dir(&root);
    write_synced(&root.join("t2"), b"two");
    assert!(
        fs::rename(root.join("t2"), root.join("f2")).is_err(),
        "the power is off"
    );
    assert!(m.powered_off());
    let kinds: Vec<OpKind> = m.trace().iter().map(|o| o.kind).collect();
    assert_eq!(kinds.iter().filter(|k| **k == OpKind::Rename).count(), 1);
    m.unmount().unwrap();
    let b = backing.path();
    assert_eq!(fs::read(b.join("f1")).unwrap(), b"one");
    assert!(!b.join("t2").exists() && !b.join("f2").exists());
}

#[test]
fn a_clean_unmount_keeps_everything() {
    let Some((backing, _mnt, m)) = mounted(Model::Strict, None) else {
        return;
    };
    let root = m.path().to_path_buf();
    fs::create_dir_all(root.join("x/y")).unwrap();
    fs::write(root.join("x/y/z"), b"zzz").unwrap();
    fs::remove_file(root.join("old")).unwrap();
    m.unmount().unwrap();
    let b = backing.path();
    assert_eq!(fs::read(b.join("x/y/z")).unwrap(), b"zzz");
    assert!(!b.join("old").exists());
}

#[test]
fn a_failed_directory_fsync_loses_its_entries_for_good() {
    for model in [Model::Strict, Model::Ext4Ordered] {
        let Some((backing, _mnt, m)) = mounted(model, None) else {
            return;
        };
        m.fail_fsync(FsyncFault {
            kind: OpKind::FsyncDir,
            under: String::new(),
            nth: 1,
        });
        let root = m.path().to_path_buf();
        write_synced(&root.join("t1"), b"one");
        fs::rename(root.join("t1"), root.join("f1")).unwrap();
        let failed = File::open(&root).unwrap().sync_all();
        assert_eq!(
            failed.unwrap_err().raw_os_error(),
            Some(libc::EIO),
            "{model:?}"
        );
        let failed_op = m.failed_fsync().expect("the fault was met");
        assert_eq!(
            (failed_op.kind, failed_op.path.as_str()),
            (OpKind::FsyncDir, "")
        );
        // Later requests work, a retried fsync succeeds: it proves nothing.
        write_synced(&root.join("t2"), b"two");
        fs::rename(root.join("t2"), root.join("f2")).unwrap();
        sync_dir(&root);
        assert_eq!(fs::read(root.join("f1")).unwrap(), b"one", "live still");
        m.cut_power();
        m.unmount().unwrap();
        let b = backing.path();
        assert!(
            !b.join("f1").exists(),
            "{model:?}: the rename the failed fsync dropped is lost"
        );
        // Its creation was made durable by the journal commit of t1's own
        // fsync (ext4) or never (strict).
        match model {
            Model::Ext4Ordered => assert_eq!(fs::read(b.join("t1")).unwrap(), b"one"),
            Model::Strict => assert!(!b.join("t1").exists()),
        }
        assert_eq!(fs::read(b.join("f2")).unwrap(), b"two", "{model:?}");
        assert!(!b.join("t2").exists(), "{model:?}");
    }
}

#[test]
fn a_failed_file_fsync_loses_its_bytes_for_good() {
    for model in [Model::Strict, Model::Ext4Ordered] {
        let Some((backing, _mnt, m)) = mounted(model, None) else {
            return;
        };
        m.fail_fsync(FsyncFault {
            kind: OpKind::Fsync,
            under: "f".into(),
            nth: 1,
        });
        let root = m.path().to_path_buf();
        write_synced(&root.join("first"), b"not under f: not counted");
        let mut f = File::create(root.join("f")).unwrap();
        f.write_all(b"lost bytes").unwrap();
        assert_eq!(
            f.sync_all().unwrap_err().raw_os_error(),
            Some(libc::EIO),
            "{model:?}"
        );
        f.write_all(b"+later").unwrap();
        f.sync_all().unwrap();
        sync_dir(&root);
        assert_eq!(fs::read(root.join("f")).unwrap(), b"lost bytes+later");
        drop(f);
        // A clean shutdown does not bring them back either.
        m.unmount().unwrap();
        let b = backing.path();
        assert_eq!(
            fs::read(b.join("first")).unwrap(),
            b"not under f: not counted"
        );
        assert_eq!(
            fs::read(b.join("f")).unwrap(),
            b"\0\0\0\0\0\0\0\0\0\0+later",
            "{model:?}: only the bytes written after the failure reach the disk"
        );
    }
}

#[test]
fn what_is_written_again_after_a_failed_fsync_is_synced_again() {
    let Some((backing, _mnt, m)) = mounted(Model::Strict, None) else {
        return;
    };
    let root = m.path().to_path_buf();
    write_synced(&root.join("f"), b"");
    sync_dir(&root);
    for kind in [OpKind::Fsync, OpKind::FsyncDir] {
        m.fail_fsync(FsyncFault {
            kind,
            under: String::new(),
            nth: 1,
        });
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(root.join("f"))
            .unwrap();
        f.write_all(b"same bytes").unwrap();
        fs::write(root.join("tmp"), b"").unwrap();
        fs::rename(root.join("tmp"), root.join("named")).unwrap();
        let failed = match kind {
            OpKind::Fsync => f.sync_all(),
            _ => File::open(&root).unwrap().sync_all(),
        };
        assert!(failed.is_err(), "{kind:?}");
        // The same changes made again are dirty again.
        f.write_all_at(b"same bytes", 0).unwrap();
        f.sync_all().unwrap();
        drop(f);
        fs::rename(root.join("named"), root.join("tmp")).unwrap();
        fs::rename(root.join("tmp"), root.join("named")).unwrap();
        sync_dir(&root);
    }
    m.cut_power();
    m.unmount().unwrap();
    let b = backing.path();
    assert_eq!(fs::read(b.join("f")).unwrap(), b"same bytes");
    assert!(b.join("named").exists() && !b.join("tmp").exists());
}
