//! `.containerignore` / `.dockerignore`: which context paths the build leaves out, by
//! docker's rules. One pattern a line (`#` starts a comment line); `*`, `?` and `[…]` match
//! within a path component, `**` any number of components; a leading `!` takes paths back
//! in; the last pattern that matches a path (or one of its parent directories) decides.

use crate::words::glob_at;

#[derive(Debug, Clone, Default)]
pub struct Ignore {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone)]
struct Pattern {
    components: Vec<Vec<char>>,
    exception: bool,
}

impl Ignore {
    /// Parses the file's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Ignore, String> {
        let mut patterns = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (exception, body) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let cleaned = clean(body);
            if cleaned.is_empty() {
                if exception {
                    return Err(format!("{origin}:{}: \"!\" needs a pattern after it", i + 1));
                }
                continue;
            }
            for c in cleaned.split('/') {
                if c.matches('[').count() > c.matches(']').count() {
                    return Err(format!("{origin}:{}: {body:?} has a [ without its ]", i + 1));
                }
            }
            patterns.push(Pattern { components: cleaned.split('/').map(|c| c.chars().collect()).collect(), exception });
        }
        Ok(Ignore { patterns })
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `path` (relative to the context, `/`-separated) is left out.
    pub fn excluded(&self, path: &str) -> bool {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
        let mut out = false;
        for p in &self.patterns {
            // The pattern matches the path or a directory above it.
            if (1..=parts.len()).any(|n| matches(&p.components, &parts[..n])) {
                out = !p.exception;
            }
        }
        out
    }

    /// Whether an excluded directory may still hold paths an exception takes back in (so a
    /// walk must enter it).
    pub fn may_include_below(&self, dir: &str) -> bool {
        let depth = dir.split('/').filter(|p| !p.is_empty()).count();
        self.patterns
            .iter()
            .any(|p| p.exception && (p.components.len() > depth || p.components.iter().any(|c| is_double_star(c))))
    }
}

fn is_double_star(c: &[char]) -> bool {
    c == ['*', '*']
}

fn matches(pattern: &[Vec<char>], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if is_double_star(first) => (0..=path.len()).any(|skip| matches(rest, &path[skip..])),
        Some((first, rest)) => match path.split_first() {
            Some((name, more)) => {
                let name: Vec<char> = name.chars().collect();
                glob_at(first, &name, &|c| c != '/') && matches(rest, more)
            }
            None => false,
        },
    }
}

/// As Go's path.Clean, relative: no leading `/`, no `.` or empty components, `..` resolved
/// (never above the root).
fn clean(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ig(text: &str) -> Ignore {
        Ignore::parse(text, ".dockerignore").unwrap()
    }

    #[test]
    fn docker_rules() {
        let i = ig("# comment\n*.md\n!README.md\ntemp?\n/build/\n**/*.o\nsecret/**\n!secret/keep\n");
        assert!(i.excluded("notes.md"));
        assert!(!i.excluded("README.md"));
        assert!(!i.excluded("docs/notes.md"), "* does not cross a directory");
        assert!(i.excluded("temp1"));
        assert!(i.excluded("temp1/inside/file"), "a matching parent excludes what is below");
        assert!(!i.excluded("temp12"));
        assert!(i.excluded("build/x"));
        assert!(i.excluded("main.o"));
        assert!(i.excluded("a/b/c/main.o"));
        assert!(i.excluded("secret/a"));
        assert!(!i.excluded("secret/keep"));
        assert!(!i.excluded("src/main.rs"));
        assert!(i.may_include_below("secret"));
        assert!(!i.may_include_below("temp1/inside/x"));
    }

    #[test]
    fn last_match_wins() {
        let i = ig("!a\na\n");
        assert!(i.excluded("a"));
        let i = ig("a\n!a\n");
        assert!(!i.excluded("a"));
        let i = ig("dir\n!dir/keep\n");
        assert!(i.excluded("dir/other"));
        assert!(!i.excluded("dir/keep"));
    }

    #[test]
    fn bad_patterns() {
        assert!(Ignore::parse("[abc\n", "x").unwrap_err().contains("x:1"));
        assert!(Ignore::parse("!\n", "x").is_err());
        assert!(ig("\n  \n./\n").is_empty());
    }
}
