//! The library's errors are typed: no `Result<_, String>` anywhere in it.
//!
//! The library's modules form no circle: no module uses, through `crate::`
//! paths, a module that uses it back (directly or by way of others). A
//! module's sub-modules (`source/*.rs` of `source`) count as the module.
//! Read from the source, test modules and comments left out.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The library's top-level modules, each with its files (`NAME.rs` and
/// everything under `NAME/`).
fn modules() -> BTreeMap<String, Vec<PathBuf>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules = BTreeMap::new();
    for entry in fs::read_dir(&src).expect("src/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "rs") {
            let name = path
                .file_stem()
                .expect("stem")
                .to_string_lossy()
                .into_owned();
            if name == "lib" {
                continue;
            }
            let mut files = vec![path.clone()];
            files.extend(rust_files_under(&src.join(&name)));
            modules.insert(name, files);
        }
    }
    modules
}

fn rust_files_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files.extend(rust_files_under(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The code of a file without its test module and its comments.
fn code_of(path: &Path) -> String {
    let text = fs::read_to_string(path).expect("read module");
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The items the crate root re-exports (`pub use error::{Error, Result}`
/// in `lib.rs`) and the module each comes from: `crate::Error` is a use of
/// `error`.
fn reexports() -> BTreeMap<String, String> {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs");
    let text = fs::read_to_string(lib).expect("read lib.rs");
    let mut items = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        let Some(path) = line.strip_prefix("pub use ") else {
            continue;
        };
        let path = path.trim_end_matches(';');
        let Some((module, rest)) = path.split_once("::") else {
            continue;
        };
        let rest = rest.trim_start_matches('{').trim_end_matches('}');
        for item in rest.split(',') {
            let name = item.rsplit("::").next().unwrap_or_default().trim();
            let name = name.rsplit(" as ").next().unwrap_or_default().trim();
            items.insert(name.to_owned(), module.to_owned());
        }
    }
    items
}

/// The modules `code` names as `crate::NAME` (in `use` lines and paths,
/// `use crate::{a, b::C}` included), or through an item the crate root
/// re-exports (`crate::Error`).
fn used_modules(
    code: &str,
    names: &[&String],
    reexports: &BTreeMap<String, String>,
) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut used = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = group.split('}').next().unwrap_or_default();
            for part in group.split(',') {
                used.push(ident(part.trim()));
            }
        } else {
            used.push(ident(rest));
        }
    }
    let used = used.into_iter().filter_map(|u| {
        if names.iter().any(|n| **n == u) {
            Some(u)
        } else {
            reexports.get(&u).cloned()
        }
    });
    let mut used: Vec<String> = used.collect();
    used.sort();
    used.dedup();
    used
}

/// Each module and the modules it uses.
fn module_graph() -> BTreeMap<String, Vec<String>> {
    let modules = modules();
    let names: Vec<&String> = modules.keys().collect();
    let reexports = reexports();
    modules
        .iter()
        .map(|(name, files)| {
            let mut uses: Vec<String> = files
                .iter()
                .flat_map(|f| used_modules(&code_of(f), &names, &reexports))
                .filter(|u| u != name)
                .collect();
            uses.sort();
            uses.dedup();
            (name.clone(), uses)
        })
        .collect()
}

/// A path from `start` back to itself, if there is one.
fn circle_through(graph: &BTreeMap<String, Vec<String>>, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![vec![start.to_owned()]];
    while let Some(path) = stack.pop() {
        let last = path.last().expect("non-empty");
        for next in graph.get(last).into_iter().flatten() {
            if next == start {
                let mut circle = path.clone();
                circle.push(next.clone());
                return Some(circle);
            }
            if !path.contains(next) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push(longer);
            }
        }
    }
    None
}

#[test]
fn no_two_library_modules_use_each_other() {
    let graph = module_graph();
    assert!(graph.len() >= 20, "modules found: {graph:?}");
    assert!(
        graph["execute"].contains(&"source".to_owned()),
        "the reader misses uses: {graph:?}"
    );
    assert!(
        reexports().get("Error").is_some_and(|m| m == "error"),
        "the reader misses the crate root's re-exports"
    );
    let circles: Vec<String> = graph
        .keys()
        .filter_map(|m| circle_through(&graph, m))
        .map(|c| c.join(" -> "))
        .collect();
    assert!(
        circles.is_empty(),
        "module circles:\n{}",
        circles.join("\n")
    );
}

#[test]
fn the_reader_finds_a_circle() {
    let graph: BTreeMap<String, Vec<String>> = [
        ("a".to_owned(), vec!["b".to_owned()]),
        ("b".to_owned(), vec!["c".to_owned()]),
        ("c".to_owned(), vec!["a".to_owned()]),
        ("d".to_owned(), vec!["a".to_owned()]),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        circle_through(&graph, "a").map(|c| c.join(" -> ")),
        Some("a -> b -> c -> a".to_owned())
    );
    assert_eq!(circle_through(&graph, "d"), None);
    let names = ["error".to_owned(), "path".to_owned()];
    let names: Vec<&String> = names.iter().collect();
    let reexports = [("Error".to_owned(), "error".to_owned())]
        .into_iter()
        .collect();
    assert_eq!(
        used_modules(
            "use crate::{error::Error, path::RelPath};\n",
            &names,
            &reexports
        ),
        ["error", "path"]
    );
    assert_eq!(
        used_modules("fn f() -> crate::Error { todo!() }", &names, &reexports),
        ["error"]
    );
}

/// The type arguments of each `Result<...>` in `code`, split at their
/// top-level commas.
fn result_arguments(code: &str) -> Vec<Vec<String>> {
    let mut all = Vec::new();
    for (i, _) in code.match_indices("Result<") {
        let (mut depth, mut parens) = (0, 0);
        let mut args = vec![String::new()];
        for c in code[i + "Result".len()..].chars() {
            match c {
                '<' => {
                    depth += 1;
                    if depth == 1 {
                        continue;
                    }
                }
                '>' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                '(' | '[' => parens += 1,
                ')' | ']' => parens -= 1,
                ',' if depth == 1 && parens == 0 => {
                    args.push(String::new());
                    continue;
                }
                _ => {}
            }
            if let Some(last) = args.last_mut() {
                last.push(c);
            }
        }
        all.push(args.into_iter().map(|a| a.trim().to_owned()).collect());
    }
    all
}

#[test]
fn no_result_carries_a_string_error() {
    let mut found = Vec::new();
    for (module, files) in modules() {
        for file in files {
            let text = fs::read_to_string(&file).expect("read module");
            for args in result_arguments(&text) {
                if args.get(1).is_some_and(|e| e == "String") {
                    found.push(format!(
                        "{module} ({}): Result<{}>",
                        file.display(),
                        args.join(", ")
                    ));
                }
            }
        }
    }
    assert!(found.is_empty(), "string errors:\n{}", found.join("\n"));
}

#[test]
fn the_reader_finds_string_errors() {
    let args = result_arguments(
        "fn a() -> Result<Option<BTreeMap<String, String>>> {}\nfn b() -> Result<(), String> {}\n\
         fn c() -> Result<(u64, String), Error> {}",
    );
    assert_eq!(args.len(), 3);
    assert_eq!(args[0], ["Option<BTreeMap<String, String>>"]);
    assert_eq!(args[1], ["()", "String"]);
    assert_eq!(args[2], ["(u64, String)", "Error"]);
}
