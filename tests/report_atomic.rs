//! `report::write_atomically`: the file is either untouched or complete, and no temporary file
//! is left behind.

use std::fs;

use kdleak::report::write_atomically;

fn entries(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn creates_and_replaces_without_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leaks.json");
    write_atomically(&path, b"first").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"first");
    write_atomically(&path, b"second, longer content").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"second, longer content");
    write_atomically(&path, b"").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"");
    assert_eq!(entries(dir.path()), vec!["leaks.json"]);
}

#[test]
fn a_failed_write_keeps_the_old_file_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    // The target is a non-empty directory: the rename fails after the temporary file was written.
    let path = dir.path().join("out");
    fs::create_dir(&path).unwrap();
    fs::write(path.join("keep"), b"old").unwrap();
    assert!(write_atomically(&path, b"new").is_err());
    assert_eq!(fs::read(path.join("keep")).unwrap(), b"old");
    assert_eq!(entries(dir.path()), vec!["out"]);
}

#[test]
fn a_missing_directory_or_name_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    assert!(write_atomically(dir.path().join("no/such/dir/out.csv"), b"x").is_err());
    assert!(write_atomically("/", b"x").is_err());
    assert_eq!(entries(dir.path()), Vec::<String>::new());
}

#[test]
fn concurrent_writers_leave_one_complete_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.txt");
    let contents: Vec<Vec<u8>> = (0..8u8).map(|i| vec![b'a' + i; 64 * 1024]).collect();
    std::thread::scope(|s| {
        for content in &contents {
            let path = &path;
            s.spawn(move || write_atomically(path, content).unwrap());
        }
    });
    let got = fs::read(&path).unwrap();
    assert!(contents.contains(&got), "a torn file");
    assert_eq!(entries(dir.path()), vec!["report.txt"]);
}

#[cfg(unix)]
#[test]
fn a_dot_component_before_the_name_works() {
    // A `.` component before the name (changing the cwd would disturb the other tests).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("./plain.txt");
    write_atomically(&path, b"ok").unwrap();
    assert_eq!(fs::read(dir.path().join("plain.txt")).unwrap(), b"ok");
}
