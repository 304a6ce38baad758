//! The layering of `docs/ARCHITECTURE.md`, checked against the code.
//!
//! Reads the table of allowed edges ("A imports B") from the document, then every
//! `src/**/*.rs`: each `crate::<module>` path, each `super::` path that climbs to the
//! crate root, each `ioscale::<module>` path of the binary, and each path into an
//! external crate. It fails on an edge that is not in the table, on a top-level module
//! the table does not know, on a crate a module must never import, and on the library
//! reaching into the binary. The table itself must keep the issue's rules (engine and
//! protocol never import socket or adapter, the codecs import no runtime or transport
//! crate, edges run one way), so loosening the table fails too.

#![allow(clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const DOC: &str = "docs/ARCHITECTURE.md";

/// One row of the table.
#[derive(Debug, Default)]
struct Rule {
    imports: BTreeSet<String>,
    /// External crates (or `std::` modules) the module never names.
    never: Vec<String>,
}

type Table = BTreeMap<String, Rule>;

/// The names between backticks in a table cell (`—` for none).
fn names(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// The table whose header starts with `| Module`.
fn parse_table(doc: &str) -> Table {
    let mut table = Table::new();
    let mut lines = doc.lines().skip_while(|line| !line.starts_with("| Module"));
    assert!(
        lines.next().is_some(),
        "{DOC} has no `| Module | Imports | Never imports |` table"
    );
    for line in lines.take_while(|line| line.starts_with('|')) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // `["", module, imports, never, ""]`; the separator row has no backticks.
        let Some(module) = cells.get(1).and_then(|cell| names(cell).into_iter().next()) else {
            continue;
        };
        assert_eq!(cells.len(), 5, "{DOC}: a row has three cells: {line}");
        let rule = Rule {
            imports: names(cells[2]).into_iter().collect(),
            never: names(cells[3]),
        };
        assert!(
            table.insert(module.clone(), rule).is_none(),
            "{DOC}: `{module}` twice"
        );
    }
    assert!(!table.is_empty(), "{DOC}: the table has no rows");
    table
}

// ---- a small Rust tokenizer: identifiers, `::` and braces; comments and literals dropped ----

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    PathSep,
    Open,
    Close,
    Punct(char),
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    line: usize,
}

fn tokenize(source: &str) -> Vec<Token> {
    let chars: Vec<char> = source.chars().collect();
    let mut tokens = Vec::new();
    let (mut i, mut line) = (0, 1);
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    // Skips a quoted string starting after its opening quote; `hashes` closes a raw one.
    let skip_string = |mut i: usize, raw: Option<usize>, line: &mut usize| -> usize {
        while i < chars.len() {
            match chars[i] {
                '\n' => *line += 1,
                '\\' if raw.is_none() => i += 1,
                '"' => match raw {
                    None => return i + 1,
                    Some(n) if (1..=n).all(|k| at(i + k) == '#') => return i + 1 + n,
                    Some(_) => {}
                },
                _ => {}
            }
            i += 1;
        }
        i
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\n' => {
                line += 1;
                i += 1;
            }
            c if c.is_whitespace() => i += 1,
            '/' if at(i + 1) == '/' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if at(i + 1) == '*' => {
                let mut depth = 0;
                while i < chars.len() {
                    if chars[i] == '/' && at(i + 1) == '*' {
                        depth += 1;
                        i += 2;
                    } else if chars[i] == '*' && at(i + 1) == '/' {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        if chars[i] == '\n' {
                            line += 1;
                        }
                        i += 1;
                    }
                }
            }
            '"' => i = skip_string(i + 1, None, &mut line),
            '\'' => {
                // A char literal (`'a'`, `'\n'`, `'\u{1e}'`) or a lifetime (`'a`).
                if at(i + 1) == '\\' {
                    // Past the quote, the backslash and the escaped char (maybe a quote).
                    i += 3;
                    while i < chars.len() && chars[i] != '\'' {
                        i += 1;
                    }
                    i += 1;
                } else if at(i + 2) == '\'' {
                    i += 3;
                } else {
                    i += 1;
                }
            }
            ':' if at(i + 1) == ':' => {
                tokens.push(Token {
                    tok: Tok::PathSep,
                    line,
                });
                i += 2;
            }
            '{' => {
                tokens.push(Token {
                    tok: Tok::Open,
                    line,
                });
                i += 1;
            }
            '}' => {
                tokens.push(Token {
                    tok: Tok::Close,
                    line,
                });
                i += 1;
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                let ident: String = chars[start..i].iter().collect();
                match (ident.as_str(), at(i)) {
                    ("r" | "br" | "cr", _)
                        if at(i) == '"' || (at(i) == '#' && matches!(at(i + 1), '"' | '#')) =>
                    {
                        let mut hashes = 0;
                        while at(i) == '#' {
                            hashes += 1;
                            i += 1;
                        }
                        if at(i) == '"' {
                            i = skip_string(i + 1, Some(hashes), &mut line);
                        }
                    }
                    ("b" | "c", '"') => i = skip_string(i + 1, None, &mut line),
                    ("b", '\'') => {
                        i += 1;
                        if at(i) == '\\' {
                            i += 2;
                        } else {
                            i += 1;
                        }
                        while i < chars.len() && chars[i] != '\'' {
                            i += 1;
                        }
                        i += 1;
                    }
                    _ => tokens.push(Token {
                        tok: Tok::Ident(ident),
                        line,
                    }),
                }
            }
            c if c.is_ascii_digit() => {
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
            c => {
                tokens.push(Token {
                    tok: Tok::Punct(c),
                    line,
                });
                i += 1;
            }
        }
    }
    tokens
}

/// Parses the path (or `use` tree) starting at `i`: every path it names, and where it ends.
fn parse_paths(tokens: &[Token], mut i: usize) -> (Vec<Vec<String>>, usize) {
    let mut prefix: Vec<String> = Vec::new();
    loop {
        match tokens.get(i).map(|t| &t.tok) {
            Some(Tok::Ident(segment)) => {
                prefix.push(segment.clone());
                i += 1;
            }
            Some(Tok::Open) => {
                let mut paths = Vec::new();
                i += 1;
                loop {
                    match tokens.get(i).map(|t| &t.tok) {
                        None => break,
                        Some(Tok::Close) => {
                            i += 1;
                            break;
                        }
                        // `a as b`: the alias names nothing.
                        Some(Tok::Ident(word)) if word == "as" => i += 2,
                        Some(Tok::Ident(_) | Tok::Open) => {
                            let (inner, next) = parse_paths(tokens, i);
                            for path in inner {
                                paths.push(prefix.iter().cloned().chain(path).collect());
                            }
                            i = next;
                        }
                        Some(_) => i += 1,
                    }
                }
                return (paths, i);
            }
            _ => return (vec![prefix], i),
        }
        match tokens.get(i).map(|t| &t.tok) {
            Some(Tok::PathSep) => i += 1,
            _ => return (vec![prefix], i),
        }
    }
}

/// Every path of a file with its line and how many inline `mod x { }` enclose it.
fn paths_of(source: &str) -> Vec<(Vec<String>, usize, usize)> {
    let tokens = tokenize(source);
    // Inline-module depth at each token.
    let mut inline = vec![0; tokens.len()];
    let (mut depth, mut mods) = (0usize, Vec::<usize>::new());
    for (index, token) in tokens.iter().enumerate() {
        match token.tok {
            Tok::Open => {
                depth += 1;
                let is_mod = index >= 2
                    && tokens[index - 2].tok == Tok::Ident("mod".into())
                    && matches!(tokens[index - 1].tok, Tok::Ident(_));
                if is_mod {
                    mods.push(depth);
                }
            }
            Tok::Close => {
                if mods.last() == Some(&depth) {
                    mods.pop();
                }
                depth = depth.saturating_sub(1);
            }
            _ => {}
        }
        inline[index] = mods.len();
    }
    let mut paths = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let starts = matches!(tokens[i].tok, Tok::Ident(_))
            && tokens.get(i + 1).map(|t| &t.tok) == Some(&Tok::PathSep)
            && (i == 0 || tokens[i - 1].tok != Tok::PathSep);
        if !starts {
            i += 1;
            continue;
        }
        let (found, next) = parse_paths(&tokens, i);
        for path in found {
            paths.push((path, tokens[i].line, inline[i]));
        }
        i = next.max(i + 1);
    }
    paths
}

// ---- the check ----

/// The crate root: its top-level modules and what it re-exports (`crate::Io` is `socket`).
struct Root {
    modules: Vec<String>,
    reexports: BTreeMap<String, String>,
}

fn parse_root(lib_rs: &str) -> Root {
    let tokens = tokenize(lib_rs);
    let mut modules = Vec::new();
    let mut reexports = BTreeMap::new();
    for (index, token) in tokens.iter().enumerate() {
        let next = tokens.get(index + 1).map(|t| &t.tok);
        if let (Tok::Ident(word), Some(Tok::Ident(name))) = (&token.tok, next)
            && word == "mod"
        {
            modules.push(name.clone());
        }
        if token.tok == Tok::Ident("use".into()) {
            for path in parse_paths(&tokens, index + 1).0 {
                if let (Some(module), Some(name)) = (path.first(), path.last()) {
                    reexports.insert(name.clone(), module.clone());
                }
            }
        }
    }
    Root { modules, reexports }
}

/// A source file: its path under `src/` and its text.
struct Source {
    path: PathBuf,
    text: String,
}

/// Every violation of `table` in `sources`, one line each.
fn check(table: &Table, lib_rs: &str, sources: &[Source]) -> Vec<String> {
    let root = parse_root(lib_rs);
    let mut errors = Vec::new();
    for module in &root.modules {
        if module == "bin" {
            errors.push(
                "src/lib.rs: the library declares `mod bin`: it never imports the binary".into(),
            );
        } else if !table.contains_key(module) {
            errors.push(format!(
                "src/lib.rs: top-level module `{module}` is not in {DOC}'s table: add its row (what it imports, what it never imports)"
            ));
        }
    }
    for source in sources {
        let parts: Vec<String> = source
            .path
            .iter()
            .map(|part| part.to_string_lossy().trim_end_matches(".rs").to_owned())
            .collect();
        if parts == ["lib"] {
            continue;
        }
        let module = parts[0].clone();
        let shown = Path::new("src").join(&source.path).display().to_string();
        let Some(rule) = table.get(&module) else {
            errors.push(format!(
                "{shown}: top-level module `{module}` is not in {DOC}'s table: add its row"
            ));
            continue;
        };
        let is_bin = module == "bin";
        if !is_bin {
            for (number, line) in source.text.lines().enumerate() {
                let reaches_bin = (line.contains("#[path") || line.contains("include"))
                    && (line.contains("bin/") || line.contains("../../../src/"));
                if reaches_bin {
                    errors.push(format!(
                        "{shown}:{}: the library reaches into the binary: {}",
                        number + 1,
                        line.trim()
                    ));
                }
            }
        }
        // Module depth of the file: `engine/mod.rs` is 1, `engine/server.rs` 2.
        let depth = parts.len() - usize::from(parts.last().is_some_and(|p| p == "mod"));
        for (path, line, inline) in paths_of(&source.text) {
            let at = format!("{shown}:{line}");
            let first = path[0].as_str();
            let target = match first {
                "crate" if !is_bin => path.get(1),
                "ioscale" if is_bin => path.get(1),
                "super" if !is_bin => {
                    let climbs = path.iter().take_while(|s| *s == "super").count();
                    let left = (depth + inline) as isize - climbs as isize;
                    if left > 0 {
                        continue;
                    }
                    if left < 0 {
                        errors.push(format!(
                            "{at}: `{}` climbs past the crate root",
                            path.join("::")
                        ));
                        continue;
                    }
                    path.get(climbs)
                }
                _ => {
                    // `std::net` denies `std::net::IpAddr`, not `std::fmt`.
                    let denied = rule.never.iter().find(|never| {
                        let segments: Vec<&str> = never.split("::").collect();
                        segments.len() <= path.len()
                            && segments.iter().zip(&path).all(|(a, b)| a == b)
                    });
                    if let Some(never) = denied {
                        errors.push(format!(
                            "{at}: `{module}` never imports `{never}` ({DOC}), found `{}`",
                            path.join("::")
                        ));
                    }
                    continue;
                }
            };
            let Some(target) = target else { continue };
            let target = if table.contains_key(target) {
                target.clone()
            } else if let Some(owner) = root.reexports.get(target) {
                owner.clone()
            } else if root.modules.contains(target) {
                // Reported once, above, for `src/lib.rs`.
                continue;
            } else {
                errors.push(format!(
                    "{at}: `{}` names `{target}`, which is neither a module of {DOC}'s table nor a re-export of the crate root",
                    path.join("::")
                ));
                continue;
            };
            if target != module && !rule.imports.contains(&target) {
                errors.push(format!(
                    "{at}: `{module}` imports `{target}` (`{}`), an edge not in {DOC}'s table",
                    path.join("::")
                ));
            }
        }
    }
    errors
}

/// The rules of the issue, on the table itself.
fn check_table(table: &Table) -> Vec<String> {
    let mut errors = Vec::new();
    for lower in ["protocol", "engine"] {
        let rule = table.get(lower);
        for upper in ["socket", "adapter"] {
            if rule.is_none_or(|rule| rule.imports.contains(upper)) {
                errors.push(format!(
                    "{DOC}: `{lower}` must be in the table and never import `{upper}`"
                ));
            }
        }
    }
    match table.get("protocol") {
        Some(protocol) => {
            if !protocol.imports.is_empty() {
                errors.push(format!(
                    "{DOC}: `protocol` is the bottom layer: it imports nothing"
                ));
            }
            for transport in ["tokio", "hyper", "tokio_tungstenite", "fred"] {
                if !protocol.never.iter().any(|never| never == transport) {
                    errors.push(format!("{DOC}: `protocol` must never import `{transport}`"));
                }
            }
        }
        None => errors.push(format!("{DOC}: no `protocol` row")),
    }
    for (module, rule) in table {
        if rule.imports.contains("bin") {
            errors.push(format!("{DOC}: `{module}` imports the binary"));
        }
        for target in &rule.imports {
            if !table.contains_key(target) {
                errors.push(format!(
                    "{DOC}: `{module}` imports `{target}`, which has no row"
                ));
            }
        }
    }
    // Edges run one way: the table is acyclic.
    let mut placed: BTreeSet<&str> = BTreeSet::new();
    while placed.len() < table.len() {
        let ready: Vec<&str> = table
            .iter()
            .filter(|(module, rule)| {
                !placed.contains(module.as_str())
                    && rule
                        .imports
                        .iter()
                        .all(|t| placed.contains(t.as_str()) || !table.contains_key(t))
            })
            .map(|(module, _)| module.as_str())
            .collect();
        if ready.is_empty() {
            let cycle: Vec<&str> = table
                .keys()
                .map(String::as_str)
                .filter(|m| !placed.contains(m))
                .collect();
            errors.push(format!("{DOC}: the edges between {cycle:?} form a cycle"));
            break;
        }
        placed.extend(ready);
    }
    errors
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn the_table() -> Table {
    let doc = fs::read_to_string(manifest_dir().join(DOC)).expect("docs/ARCHITECTURE.md");
    parse_table(&doc)
}

#[test]
fn the_code_has_only_the_edges_of_the_architecture_table() {
    let table = the_table();
    // The library crate's sources, and the binary's (the root package's `src/`), which the
    // check knows as the module `bin`.
    let src = manifest_dir().join("crates/ioscale/src");
    let bin_src = manifest_dir().join("src");
    let mut sources = Vec::new();
    for (root, prefix) in [(&src, ""), (&bin_src, "bin")] {
        let mut files = Vec::new();
        rust_files(root, &mut files);
        files.sort();
        sources.extend(files.iter().map(|file| Source {
            path: Path::new(prefix).join(file.strip_prefix(root).expect("under src")),
            text: fs::read_to_string(file).expect("readable source"),
        }));
    }
    let lib_rs = fs::read_to_string(src.join("lib.rs")).expect("crates/ioscale/src/lib.rs");
    let mut errors = check_table(&table);
    errors.extend(check(&table, &lib_rs, &sources));
    assert!(
        errors.is_empty(),
        "{} violation(s) of the layering:\n{}",
        errors.len(),
        errors.join("\n")
    );
    // Sanity: the scan saw the layers it checks.
    for module in ["protocol", "engine", "socket", "adapter"] {
        assert!(
            sources.iter().any(|s| s.path.starts_with(module)),
            "no file of `{module}` under src/"
        );
    }
}

#[test]
fn the_table_keeps_the_rules_of_the_layering() {
    assert_eq!(check_table(&the_table()), Vec::<String>::new());
}

/// The checker itself: each kind of violation is caught, and nothing else.
#[test]
fn the_check_catches_upward_imports_unknown_modules_and_transport_crates() {
    let table = the_table();
    let lib_rs = "pub mod protocol;\npub mod engine;\npub mod socket;\npub mod adapter;\npub mod bin_helpers;\npub use socket::{Io, Socket};\n";
    let file = |path: &str, text: &str| Source {
        path: PathBuf::from(path),
        text: text.to_owned(),
    };
    let sources = [
        // Fine: downward edges, intra-module `super::`, comments and strings.
        file(
            "engine/server.rs",
            "use crate::protocol::engineio::{Frame, Packet as P};\nuse super::session::Session;\n// crate::socket::Io in a comment\nconst S: &str = \"crate::socket\";\n#[cfg(test)]\nmod tests { use super::*; use super::super::Engine; }\n",
        ),
        // Upward: the engine names the socket layer, twice (path and root re-export).
        file(
            "engine/session.rs",
            "fn f(_: crate::socket::Socket) {}\nfn g(_: &crate::Io) {}\n",
        ),
        // Upward through `super::` from a top-level file, and grouped.
        file(
            "protocol/mod.rs",
            "use super::adapter::Adapter;\nuse crate::{engine::Frame, protocol::Sid};\n",
        ),
        // A transport crate in the codecs.
        file(
            "protocol/socketio.rs",
            "use tokio::sync::mpsc;\n#[tokio::test]\nasync fn t() {}\nfn n(_: std::net::IpAddr) {}\n",
        ),
        // A module the table does not know.
        file("bin_helpers.rs", "pub fn help() {}\n"),
        // The binary may import the library.
        file(
            "bin/ioscale/main.rs",
            "use crate::config::Options;\nuse ioscale::socket::Io;\n",
        ),
        // The library reaching into the binary.
        file(
            "socket/io.rs",
            "#[path = \"../bin/ioscale/config.rs\"]\nmod config;\n",
        ),
    ];
    let errors = check(&table, lib_rs, &sources);
    let expect = [
        "src/lib.rs: top-level module `bin_helpers` is not in",
        "src/engine/session.rs:1: `engine` imports `socket`",
        "src/engine/session.rs:2: `engine` imports `socket`",
        "src/protocol/mod.rs:1: `protocol` imports `adapter`",
        "src/protocol/mod.rs:2: `protocol` imports `engine`",
        "src/protocol/socketio.rs:1: `protocol` never imports `tokio`",
        "src/protocol/socketio.rs:2: `protocol` never imports `tokio`",
        "src/protocol/socketio.rs:4: `protocol` never imports `std::net`",
        "src/bin_helpers.rs: top-level module `bin_helpers` is not in",
        "src/socket/io.rs:1: the library reaches into the binary",
    ];
    for expected in expect {
        assert!(
            errors.iter().any(|error| error.starts_with(expected)),
            "missing {expected:?} in:\n{}",
            errors.join("\n")
        );
    }
    assert_eq!(errors.len(), expect.len(), "{}", errors.join("\n"));

    // A cycle or an engine that may import the socket layer is refused in the table itself.
    let mut loose = the_table();
    loose
        .get_mut("engine")
        .expect("engine row")
        .imports
        .insert("socket".into());
    let errors = check_table(&loose);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("`engine` must be in the table and never import `socket`")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("form a cycle")),
        "{errors:?}"
    );
}
