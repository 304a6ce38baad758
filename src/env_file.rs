//! The `.env` file: the variables it sets fill what the environment leaves unset (flags
//! override both). A line that cannot be parsed stops the program with the file and the line
//! number, exit 2 as any bad value, rather than being skipped silently.

use std::path::PathBuf;

/// Loads the first `.env` of the working directory or its parents (dotenvy's search).
pub fn load() -> Result<(), String> {
    let Some(path) = find() else {
        return Ok(());
    };
    match dotenvy::from_path(&path) {
        Ok(()) => Ok(()),
        Err(dotenvy::Error::LineParse(..)) => {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let line = bad_line(&text).map_or_else(String::new, |line| format!(":{line}"));
            // The line itself is not echoed: it may hold a secret.
            Err(format!(
                "{}{line}: malformed line (expected NAME=value; quote a value holding spaces, \
                 quotes or #)",
                path.display()
            ))
        }
        Err(error) => Err(format!("{}: {error}", path.display())),
    }
}

fn find() -> Option<PathBuf> {
    let cwd = std::env::current_dir().ok()?;
    cwd.ancestors()
        .map(|dir| dir.join(".env"))
        .find(|candidate| candidate.is_file())
}

/// `(entries parsed, whether an error followed)` of a `.env` text.
fn parse(text: &str) -> (usize, bool) {
    let mut entries = 0;
    for item in dotenvy::from_read_iter(text.as_bytes()) {
        if item.is_err() {
            return (entries, true);
        }
        entries += 1;
    }
    (entries, false)
}

/// The 1-based number of the line where parsing fails: the shortest prefix of lines that
/// fails after as many good entries as the whole text (a quoted value may span lines, and a
/// prefix cutting it fails too, but one entry earlier).
fn bad_line(text: &str) -> Option<usize> {
    let (entries, failed) = parse(text);
    if !failed {
        return None;
    }
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    (1..=lines.len()).find(|&n| parse(&lines[..n].concat()) == (entries, true))
}

#[cfg(test)]
mod tests {
    use super::bad_line;

    #[test]
    fn names_the_malformed_line() {
        assert_eq!(bad_line("A=1\n# comment\n\nB=2\n"), None);
        assert_eq!(bad_line("A=1\n# comment\nNOT VALID\nB=2\n"), Some(3));
        // A quoted value over two lines is fine; the error after it is on line 4.
        assert_eq!(bad_line("A=1\nB=\"two\nlines\"\nC D\n"), Some(4));
        // An unterminated quote is reported where it opens.
        assert_eq!(bad_line("A=1\nB=\"open\nC=3\n"), Some(2));
    }
}
