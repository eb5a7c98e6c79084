//! Keeps the modules of `api/src` a DAG: no two of them may reach each other, directly or around
//! a circle. A circle means neither side can be read, tested or moved without the other, which
//! is how shared types drift into whichever handler happened to need them first.
//!
//! The graph is read from the source text, not from a syntax tree (which keeps an attribute's
//! tokens unparsed, so `#[utoipa::path(.., body = crate::schema::Task)]` would be no edge): every
//! `crate::x` path (in `use` lines and inside code alike, grouped `crate::{a, b::c}` included),
//! and every `super::x` of a top-level file's own `use` lines, is an edge from the file's
//! top-level module to `x`. A name the crate root re-exports (`pub use m::{X, ..}`) resolves to
//! `m`; an item defined in `lib.rs` itself is an edge to the root, which in turn depends on every
//! module it declares, so a module may not lean on the root.
//! Comments are skipped (doc links are not dependencies). This test must never pass by finding
//! nothing: it also checks that the parser sees known edges and catches a planted circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crate root's node name in the graph.
const ROOT: &str = "lib";

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Every `.rs` file under `dir`, with its path relative to `dir`.
fn sources(dir: &Path) -> Vec<(String, String)> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<(String, String)>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
            .map(|e| e.expect("directory entry").path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, base, out);
            } else if path.extension().is_some_and(|x| x == "rs") {
                let rel = path.strip_prefix(base).expect("under base").to_string_lossy().replace('\\', "/");
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
                out.push((rel, text));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out
}

/// The top-level module a file belongs to: `lib.rs` is the root, `x.rs` and `x/**` are `x`.
fn module_of(rel: &str) -> String {
    let first = rel.split('/').next().unwrap_or(rel);
    first.strip_suffix(".rs").unwrap_or(first).to_string()
}

/// `text` without `//` comments (line and doc). A `//` inside a string literal cuts the rest of
/// that line too, which can only lose an edge written after a URL on the same line.
fn strip_comments(text: &str) -> String {
    text.lines().map(|l| l.find("//").map_or(l, |i| &l[..i])).collect::<Vec<_>>().join("\n")
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The identifier at the start of `s`, if any.
fn ident(s: &str) -> Option<&str> {
    let end = s.find(|c: char| !is_ident_char(c)).unwrap_or(s.len());
    (end > 0).then(|| &s[..end])
}

/// The first path segment of each item of a `{a, b::c, d as e}` group that `s` starts inside
/// (just after the `{`), at the group's own nesting level.
fn group_heads(s: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0usize;
    let mut expect_head = true;
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => expect_head = true,
            c if expect_head && depth == 0 && is_ident_char(c) => {
                if let Some(id) = ident(&s[i..]) {
                    heads.push(id.to_string());
                    for _ in 1..id.len() {
                        chars.next();
                    }
                }
                expect_head = false;
            }
            _ => {}
        }
    }
    heads
}

/// The first segment of every path after each occurrence of `prefix` (`crate::`), where the
/// prefix starts a path (not `mycrate::`).
fn heads_after(text: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(pos) = text[from..].find(prefix) {
        let at = from + pos;
        from = at + prefix.len();
        if text[..at].chars().next_back().is_some_and(|c| is_ident_char(c) || c == ':') {
            continue;
        }
        let rest = text[from..].trim_start();
        if let Some(group) = rest.strip_prefix('{') {
            out.extend(group_heads(group));
        } else if let Some(id) = ident(rest) {
            out.push(id.to_string());
        }
    }
    out
}

/// Modules the crate root declares (`mod x;`, `pub mod x;`, `pub(crate) mod x;`).
fn declared_modules(lib: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in lib.lines() {
        let line = line.trim();
        let rest = line
            .strip_prefix("pub(crate) mod ")
            .or_else(|| line.strip_prefix("pub mod "))
            .or_else(|| line.strip_prefix("mod "));
        if let Some(name) = rest.and_then(|r| r.strip_suffix(';')) {
            out.insert(name.trim().to_string());
        }
    }
    out
}

/// Names the root re-exports, and the module each comes from (`pub use m::X;`,
/// `pub use m::{X, Y as Z};`, over several lines too).
fn reexports(lib: &str, modules: &BTreeSet<String>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = lib;
    while let Some(pos) = rest.find("pub use ") {
        rest = &rest[pos + "pub use ".len()..];
        let Some(end) = rest.find(';') else { break };
        let stmt = rest[..end].trim().strip_prefix("crate::").unwrap_or(rest[..end].trim());
        let Some((module, items)) = stmt.split_once("::") else { continue };
        if !modules.contains(module) {
            continue;
        }
        let items = items.trim().trim_start_matches('{').trim_end_matches('}');
        for item in items.split(',') {
            let item = item.trim();
            let name = item.rsplit(" as ").next().unwrap_or(item).rsplit("::").next().unwrap_or(item).trim();
            if !name.is_empty() {
                out.insert(name.to_string(), module.to_string());
            }
        }
    }
    out
}

/// The module graph of a crate given as (path relative to `src/`, text) pairs.
fn graph(files: &[(String, String)]) -> Graph {
    let lib =
        files.iter().find(|(rel, _)| rel == "lib.rs").map(|(_, t)| strip_comments(t)).unwrap_or_default();
    let modules = declared_modules(&lib);
    let exported = reexports(&lib, &modules);
    let resolve = |head: &str| -> String {
        if modules.contains(head) {
            head.to_string()
        } else if let Some(m) = exported.get(head) {
            m.clone()
        } else {
            ROOT.to_string()
        }
    };
    let mut g = Graph::new();
    for (rel, text) in files {
        let from = module_of(rel);
        let code = strip_comments(text);
        let mut heads = heads_after(&code, "crate::");
        // `super::` reaches the root only from a top-level file's own top level; inside its
        // inline modules (`mod tests { use super::*; }`) it is the module itself.
        if !rel.contains('/') && rel != "lib.rs" {
            for line in
                code.lines().filter(|l| l.starts_with("use super::") || l.starts_with("pub use super::"))
            {
                heads.extend(heads_after(line, "super::"));
            }
        }
        let edges = g.entry(from.clone()).or_default();
        for head in heads {
            edges.insert(resolve(&head));
        }
        if rel == "lib.rs" {
            // The root declares every module, so it depends on each, named in a path or not:
            // an item of the root used by any module is a circle.
            edges.extend(modules.iter().cloned());
        }
        edges.remove(&from);
    }
    g
}

/// One circle of `g`, as the path `a -> b -> ... -> a`, if there is any.
fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    fn visit(
        n: &str,
        g: &Graph,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(n.to_string(), Mark::OnPath);
        path.push(n.to_string());
        for next in g.get(n).into_iter().flatten() {
            match marks.get(next.as_str()).copied().unwrap_or(Mark::New) {
                Mark::OnPath => {
                    let start = path.iter().position(|p| p == next).unwrap_or(0);
                    let mut cycle = path[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(c) = visit(next, g, marks, path) {
                        return Some(c);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks.insert(n.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for n in g.keys() {
        if marks.get(n.as_str()).copied().unwrap_or(Mark::New) == Mark::New
            && let Some(c) = visit(n, g, &mut marks, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

fn api_graph() -> Graph {
    graph(&sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src")))
}

fn render(g: &Graph) -> String {
    g.iter()
        .map(|(m, to)| format!("  {m} -> {}", to.iter().cloned().collect::<Vec<_>>().join(", ")))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn no_two_api_modules_import_each_other() {
    let g = api_graph();
    if let Some(cycle) = find_cycle(&g) {
        panic!(
            "api/src modules import each other around a circle: {}\nthe graph:\n{}",
            cycle.join(" -> "),
            render(&g)
        );
    }
}

/// The parser sees what is there: if it found nothing, the test above would pass on any code.
#[test]
fn the_graph_has_the_edges_the_router_needs() {
    let g = api_graph();
    assert!(g.len() >= 10, "too few modules found:\n{}", render(&g));
    let routes = g.get("routes").unwrap_or_else(|| panic!("no routes module:\n{}", render(&g)));
    for handler in ["tasks", "logs", "events", "node", "dashboard", "metrics", "openapi"] {
        assert!(routes.contains(handler), "routes -> {handler} not seen:\n{}", render(&g));
    }
    assert!(g[ROOT].contains("routes"), "lib -> routes not seen:\n{}", render(&g));
}

/// What some modules' docs promise about their imports, beyond the graph having no circle.
#[test]
fn the_modules_import_what_their_docs_allow() {
    let g = api_graph();
    let edges = |m: &str| g.get(m).unwrap_or_else(|| panic!("no module {m}:\n{}", render(&g)));
    // `schema` and `caller` are what the others share: they import none of them.
    for leaf in ["schema", "caller"] {
        assert!(edges(leaf).is_empty(), "{leaf} must import no module of the crate:\n{}", render(&g));
    }
    // `control` never builds an HTTP answer: it knows the shapes, nothing else.
    assert_eq!(edges("control"), &BTreeSet::from(["schema".to_string()]), "\n{}", render(&g));
    // Only the route table (and the root) may reach the OpenAPI document, never a handler.
    let importers: Vec<&String> =
        g.iter().filter(|(m, to)| to.contains("openapi") && *m != ROOT).map(|(m, _)| m).collect();
    assert_eq!(importers, ["routes"], "\n{}", render(&g));
}

fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(p, t)| (p.to_string(), t.to_string())).collect()
}

#[test]
fn a_planted_circle_is_found_and_named() {
    let fs = files(&[
        ("lib.rs", "mod a;\nmod b;\nmod c;\n"),
        ("a.rs", "use crate::b::Thing;\n"),
        // An inline path, not a `use` line.
        ("b.rs", "fn f() { let _ = crate::c::make(); }\n"),
        // A grouped import, over two lines.
        ("c.rs", "use crate::{\n    a::{X, Y},\n};\n"),
    ]);
    let cycle = find_cycle(&graph(&fs)).expect("a -> b -> c -> a is a circle");
    assert_eq!(cycle, ["a", "b", "c", "a"]);
}

#[test]
fn leaning_on_an_item_of_the_root_is_a_circle() {
    let fs = files(&[
        // The root names `a` in no path: declaring it is enough to depend on it.
        ("lib.rs", "mod a;\nmod b;\npub use b::Shared;\npub struct State;\n"),
        // `crate::Shared` is b's (re-exported): fine. `crate::State` is the root's own: a circle.
        ("a.rs", "use crate::Shared;\npub fn f() {}\n"),
        ("b.rs", "pub struct Shared;\n"),
    ]);
    assert_eq!(find_cycle(&graph(&fs)), None);
    let mut fs = fs;
    fs[1].1.push_str("use crate::State;\n");
    assert_eq!(find_cycle(&graph(&fs)), Some(vec!["a".into(), ROOT.into(), "a".into()]));
}

#[test]
fn comments_and_inline_tests_are_not_edges() {
    let fs = files(&[
        ("lib.rs", "mod a;\nmod b;\n"),
        ("a.rs", "//! See [`crate::b`].\nuse crate::b::X;\n"),
        // A doc link back to `a`, and a test module's `super::*` (which is b itself).
        (
            "b.rs",
            "/// Like [`crate::a::f`].\npub struct X;\n#[cfg(test)]\nmod tests {\n    use super::*;\n}\n",
        ),
    ]);
    let g = graph(&fs);
    assert_eq!(g["a"], BTreeSet::from(["b".to_string()]));
    assert!(g["b"].is_empty(), "{:?}", g["b"]);
    // But a top-level `use super::` in a top-level file is the crate's.
    let mut fs = fs;
    fs[2].1.push_str("use super::a::f;\n");
    assert_eq!(find_cycle(&graph(&fs)), Some(vec!["a".into(), "b".into(), "a".into()]));
}
