//! Keeps the node crate's files small enough to read in one sitting: every source file under
//! `node/src` stays under 600 lines (issue "One engine", criterion 4). Reads files only.

use std::path::{Path, PathBuf};

const MAX_LINES: usize = 600;

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("node/src is readable").flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_node_source_file_is_under_600_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    assert!(files.len() > 20, "found the crate's sources: {files:?}");
    let too_long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).expect("a source file is readable").lines().count();
            (lines >= MAX_LINES).then(|| format!("{} ({lines} lines)", f.display()))
        })
        .collect();
    assert!(too_long.is_empty(), "split these along their seams: {too_long:?}");
}
