//! The server's modules form no circle: no module uses one that (directly
//! or not) uses it back. Read from the source (test modules left out).

use std::fs;
use std::path::Path;

/// The modules of the crate (`lib` for `src/lib.rs`, and `src/*.rs`) and
/// the modules each one uses.
fn module_uses() -> Vec<(String, Vec<String>)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    for ent in fs::read_dir(&src).expect("src") {
        let path = ent.expect("entry").path();
        if path.extension().is_some_and(|e| e == "rs") {
            let name = path
                .file_stem()
                .expect("stem")
                .to_string_lossy()
                .into_owned();
            files.push((name, path));
        }
    }
    files.sort();
    let names: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
    let ident_after = |text: &str, prefix: &str| -> Vec<String> {
        text.match_indices(prefix)
            .map(|(i, _)| {
                text[i + prefix.len()..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect()
            })
            .collect()
    };
    files
        .iter()
        .map(|(name, path)| {
            let text = fs::read_to_string(path).expect("read module");
            let text = text.split("#[cfg(test)]").next().unwrap_or_default();
            let mut uses = Vec::new();
            if name == "lib" {
                // The crate root uses a child by naming it: `http::handle`.
                for child in names.iter().filter(|n| *n != "lib") {
                    if text.contains(&format!("{child}::")) {
                        uses.push(child.clone());
                    }
                }
            } else {
                for prefix in ["super::", "crate::"] {
                    for id in ident_after(text, prefix) {
                        // `crate::Item` of the root itself is a use of it.
                        let used = if names.contains(&id) {
                            id
                        } else {
                            "lib".into()
                        };
                        uses.push(used);
                    }
                }
            }
            uses.sort();
            uses.dedup();
            uses.retain(|u| u != name);
            (name.clone(), uses)
        })
        .collect()
}

#[test]
fn no_two_server_modules_import_each_other() {
    let graph = module_uses();
    assert!(graph.len() >= 4, "modules found: {graph:?}");
    let uses = |m: &str| -> Vec<String> {
        graph
            .iter()
            .find(|(n, _)| n == m)
            .map(|(_, u)| u.clone())
            .unwrap_or_default()
    };
    // Depth-first search for a path from each module back to itself.
    for (start, _) in &graph {
        let mut stack: Vec<Vec<String>> = vec![vec![start.clone()]];
        while let Some(path) = stack.pop() {
            let last = path.last().expect("non-empty").clone();
            for next in uses(&last) {
                assert!(
                    next != *start,
                    "module cycle: {} -> {next}",
                    path.join(" -> ")
                );
                if !path.contains(&next) {
                    let mut p = path.clone();
                    p.push(next);
                    stack.push(p);
                }
            }
        }
    }
}

/// The graph sees a circle when there is one (the test above can fail).
#[test]
fn the_graph_has_the_uses_the_source_shows() {
    let graph = module_uses();
    let uses = |m: &str| graph.iter().find(|(n, _)| n == m).map(|(_, u)| u.clone());
    assert_eq!(uses("root"), Some(vec!["paths".to_owned()]));
    let lib = uses("lib").expect("lib");
    assert!(lib.contains(&"http".to_owned()), "{lib:?}");
    let http = uses("http").expect("http");
    assert!(http.contains(&"root".to_owned()), "{http:?}");
}
