//! The Containerfile's own word processing, for the instructions whose arguments the builder
//! reads (not the shell's: RUN, CMD and ENTRYPOINT in shell form go to the shell as written).
//! Quotes are removed, the escape character (`\` or the `# escape=` directive's) takes the
//! next character literally, and variables expand: `$name`, `${name}`, `${name:-word}`,
//! `${name-word}`, `${name:+word}`, `${name+word}`, `${name:?message}`, `${name?message}`,
//! and the prefix and suffix removals `${name#glob}`, `##`, `%`, `%%`.

/// How a variable's value is looked up: None for an unset variable.
pub trait Vars {
    fn get(&self, name: &str) -> Option<String>;
}

impl<F: Fn(&str) -> Option<String>> Vars for F {
    fn get(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// Expands `text` as one word (whitespace kept, as for ENV values and WORKDIR).
pub fn expand_word(text: &str, escape: char, vars: &dyn Vars) -> Result<String, String> {
    let mut lexer = Lexer { chars: text.chars().collect(), pos: 0, escape, vars };
    let words = lexer.run(false, None)?;
    Ok(words.into_iter().next().map(|w| w.text).unwrap_or_default())
}

/// Expands `text` into words split at unquoted whitespace (as for COPY's sources, EXPOSE,
/// VOLUME). A word made only of unquoted variables that expand to nothing is no word.
pub fn expand_words(text: &str, escape: char, vars: &dyn Vars) -> Result<Vec<String>, String> {
    let mut lexer = Lexer { chars: text.chars().collect(), pos: 0, escape, vars };
    Ok(lexer.run(true, None)?.into_iter().filter(|w| w.kept || !w.text.is_empty()).map(|w| w.text).collect())
}

/// Names of the variables `text` refers to (for the build cache: an instruction depends on
/// the build arguments it uses).
pub fn referenced_names(text: &str, escape: char) -> Vec<String> {
    let seen = std::cell::RefCell::new(Vec::<String>::new());
    let record = |name: &str| {
        let mut s = seen.borrow_mut();
        if !s.iter().any(|n| n == name) {
            s.push(name.to_string());
        }
        None
    };
    // Errors (`${x:?}` of an unset variable) end the scan; what was seen so far counts.
    let _ = expand_words(text, escape, &record);
    seen.into_inner()
}

struct Word {
    text: String,
    /// Quoted or literal characters in it: kept even when empty.
    kept: bool,
}

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    vars: &'a dyn Vars,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        self.pos += c.is_some() as usize;
        c
    }

    /// Words up to the end, or up to the unmatched `stop` (the `}` closing a `${…}` word).
    fn run(&mut self, split: bool, stop: Option<char>) -> Result<Vec<Word>, String> {
        let mut words = Vec::new();
        let mut cur = Word { text: String::new(), kept: false };
        let mut started = false;
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                break;
            }
            self.pos += 1;
            if split && c.is_whitespace() {
                if started {
                    words.push(std::mem::replace(&mut cur, Word { text: String::new(), kept: false }));
                    started = false;
                }
                continue;
            }
            started = true;
            match c {
                '\'' => {
                    cur.kept = true;
                    loop {
                        match self.next() {
                            Some('\'') => break,
                            Some(ch) => cur.text.push(ch),
                            None => return Err("a single quote is not closed".into()),
                        }
                    }
                }
                '"' => {
                    cur.kept = true;
                    self.double_quoted(&mut cur.text)?;
                }
                '$' => {
                    let value = self.dollar()?;
                    match value {
                        Some(v) if split => {
                            // Unquoted: the value's own whitespace separates words.
                            let mut parts = v.split(char::is_whitespace);
                            cur.text.push_str(parts.next().unwrap_or_default());
                            for part in parts {
                                if !cur.text.is_empty() || cur.kept {
                                    words.push(std::mem::replace(&mut cur, Word { text: String::new(), kept: false }));
                                }
                                cur.text.push_str(part);
                            }
                        }
                        Some(v) => cur.text.push_str(&v),
                        None => {}
                    }
                }
                c if c == self.escape => {
                    cur.kept = true;
                    match self.next() {
                        Some(ch) => cur.text.push(ch),
                        None => cur.text.push(c),
                    }
                }
                c => {
                    cur.kept = true;
                    cur.text.push(c);
                }
            }
        }
        if started || !split {
            words.push(cur);
        }
        Ok(words)
    }

    fn double_quoted(&mut self, out: &mut String) -> Result<(), String> {
        loop {
            match self.next() {
                Some('"') => return Ok(()),
                Some('$') => {
                    if let Some(v) = self.dollar()? {
                        out.push_str(&v);
                    }
                }
                Some(c) if c == self.escape => match self.next() {
                    Some(ch) if ch == '"' || ch == '$' || ch == self.escape => out.push(ch),
                    Some(ch) => {
                        out.push(c);
                        out.push(ch);
                    }
                    None => return Err("a double quote is not closed".into()),
                },
                Some(c) => out.push(c),
                None => return Err("a double quote is not closed".into()),
            }
        }
    }

    /// After a `$`: the expansion (None: nothing), or the `$` itself when no name follows.
    fn dollar(&mut self) -> Result<Option<String>, String> {
        match self.peek() {
            Some('{') => {
                self.pos += 1;
                self.braced().map(Some)
            }
            Some(c) if c == '_' || c.is_ascii_alphabetic() => {
                let name = self.name();
                Ok(self.vars.get(&name))
            }
            _ => Ok(Some("$".into())),
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek().filter(|c| *c == '_' || c.is_ascii_alphanumeric()) {
            name.push(c);
            self.pos += 1;
        }
        name
    }

    /// `${…}` after its `{`.
    fn braced(&mut self) -> Result<String, String> {
        let name = self.name();
        if name.is_empty() {
            return Err(format!("a variable's name is missing in ${{{}", self.rest_preview()));
        }
        let value = self.vars.get(&name);
        let Some(op) = self.next() else { return Err(format!("${{{name} is not closed")) };
        if op == '}' {
            return Ok(value.unwrap_or_default());
        }
        let colon = op == ':';
        let op = if colon { self.next().ok_or_else(|| format!("${{{name}: is not closed"))? } else { op };
        let long = matches!(op, '#' | '%') && self.peek() == Some(op) && {
            self.pos += 1;
            true
        };
        let word = self.run(false, Some('}'))?.into_iter().next().map(|w| w.text).unwrap_or_default();
        if self.next() != Some('}') {
            return Err(format!("${{{name} is not closed"));
        }
        // With a colon, an empty value counts as unset.
        let set = value.as_ref().is_some_and(|v| !colon || !v.is_empty());
        match op {
            '-' => Ok(if set { value.unwrap_or_default() } else { word }),
            '+' => Ok(if set { word } else { String::new() }),
            '?' if set => Ok(value.unwrap_or_default()),
            '?' => Err(if word.is_empty() { format!("{name}: is not set") } else { format!("{name}: {word}") }),
            '#' | '%' if !colon => {
                let v = value.unwrap_or_default();
                Ok(remove_affix(&v, &word, op == '#', long).to_string())
            }
            _ => Err(format!("unsupported variable substitution ${{{name}{}{op}…}}", if colon { ":" } else { "" })),
        }
    }

    fn rest_preview(&self) -> String {
        self.chars[self.pos..].iter().take(16).collect()
    }
}

/// `${v#glob}` (prefix, shortest), `##` (longest), `%` (suffix, shortest), `%%` (longest).
fn remove_affix<'v>(value: &'v str, glob: &str, prefix: bool, longest: bool) -> &'v str {
    let cuts: Vec<usize> = value.char_indices().map(|(i, _)| i).chain([value.len()]).collect();
    let candidates: Box<dyn Iterator<Item = &usize>> = match (prefix, longest) {
        (true, false) => Box::new(cuts.iter()),
        (true, true) => Box::new(cuts.iter().rev()),
        (false, false) => Box::new(cuts.iter().rev()),
        (false, true) => Box::new(cuts.iter()),
    };
    for &cut in candidates {
        let (part, rest) = if prefix { (&value[..cut], &value[cut..]) } else { (&value[cut..], &value[..cut]) };
        if glob_match(glob, part) {
            return rest;
        }
    }
    value
}

/// Shell glob matching of a whole string: `*`, `?`, `[…]` (with `!` or `^` negation and
/// ranges), and `\` quoting the next character.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    glob_at(&p, &t, &|_| true)
}

/// As `glob_match`, with `*`, `?` and classes never matching a character `crosses` refuses
/// (`/` for paths).
pub(crate) fn glob_at(p: &[char], t: &[char], may_match: &dyn Fn(char) -> bool) -> bool {
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        let step = match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
                continue;
            }
            Some('?') if may_match(t[ti]) => Some(pi + 1),
            Some('[') => class(p, pi, t[ti]).filter(|_| may_match(t[ti])),
            Some('\\') if p.get(pi + 1) == Some(&t[ti]) => Some(pi + 2),
            Some(c) if *c == t[ti] && *c != '\\' => Some(pi + 1),
            _ => None,
        };
        match step {
            Some(next) => {
                pi = next;
                ti += 1;
            }
            None => match star {
                Some((sp, st)) if may_match(t[st]) => {
                    star = Some((sp, st + 1));
                    pi = sp + 1;
                    ti = st + 1;
                }
                _ => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// A `[…]` class at `p[at]` against `c`: the index after the class when it matches.
fn class(p: &[char], at: usize, c: char) -> Option<usize> {
    let mut i = at + 1;
    let negated = matches!(p.get(i), Some('!') | Some('^'));
    i += negated as usize;
    let mut matched = false;
    let mut first = true;
    loop {
        let lo = match p.get(i) {
            None => return None,
            Some(']') if !first => break,
            Some('\\') => {
                i += 1;
                *p.get(i)?
            }
            Some(ch) => *ch,
        };
        first = false;
        i += 1;
        if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|ch| *ch != ']') {
            let hi = p[i + 1];
            i += 2;
            matched |= lo <= c && c <= hi;
        } else {
            matched |= lo == c;
        }
    }
    (matched != negated).then_some(i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<String> {
        match name {
            "A" => Some("apple".into()),
            "SPACED" => Some("one two".into()),
            "EMPTY" => Some(String::new()),
            "PATHV" => Some("/usr/local/lib/file.tar.gz".into()),
            _ => None,
        }
    }

    fn word(s: &str) -> String {
        expand_word(s, '\\', &vars).unwrap()
    }

    fn words(s: &str) -> Vec<String> {
        expand_words(s, '\\', &vars).unwrap()
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(word(r#"a "b c" 'd $A' \$A"#), "a b c d $A $A");
        assert_eq!(word(r#""x\"y\\z\n""#), r#"x"y\z\n"#);
        assert_eq!(word(r"a\ b"), "a b");
        assert_eq!(expand_word("`$A", '`', &vars).unwrap(), "$A");
        assert_eq!(expand_word(r"C:\dir", '`', &vars).unwrap(), r"C:\dir");
        assert!(expand_word("'open", '\\', &vars).unwrap_err().contains("single quote"));
        assert!(expand_word("\"open", '\\', &vars).unwrap_err().contains("double quote"));
    }

    #[test]
    fn variables() {
        assert_eq!(word("$A-${A}x$NOPE."), "apple-applex.");
        assert_eq!(word("${NOPE:-dflt} ${EMPTY:-e} ${EMPTY-e} ${A:-x}"), "dflt e  apple");
        assert_eq!(word("${A:+alt}|${NOPE:+alt}|${EMPTY+set}|${EMPTY:+set}"), "alt||set|");
        assert_eq!(word("${NOPE:-${A}}"), "apple");
        assert_eq!(word("${NOPE:-\"q}\"}"), "q}");
        assert_eq!(word("$ $1 5$"), "$ $1 5$");
        assert_eq!(expand_word("${NOPE:?is required}", '\\', &vars).unwrap_err(), "NOPE: is required");
        assert_eq!(word("${A:?x}"), "apple");
        assert!(expand_word("${A", '\\', &vars).is_err());
        assert!(expand_word("${}", '\\', &vars).is_err());
        assert!(expand_word("${A/p/q}", '\\', &vars).unwrap_err().contains("unsupported"));
    }

    #[test]
    fn affix_removal() {
        assert_eq!(word("${PATHV#*/}"), "usr/local/lib/file.tar.gz");
        assert_eq!(word("${PATHV##*/}"), "file.tar.gz");
        assert_eq!(word("${PATHV%.*}"), "/usr/local/lib/file.tar");
        assert_eq!(word("${PATHV%%.*}"), "/usr/local/lib/file");
        assert_eq!(word("${PATHV#nomatch}"), "/usr/local/lib/file.tar.gz");
    }

    #[test]
    fn splitting() {
        assert_eq!(words("  a  'b c'  \"\" $NOPE $SPACED x$A "), ["a", "b c", "", "one", "two", "xapple"]);
        assert_eq!(words("\"$SPACED\""), ["one two"]);
        assert!(words("   ").is_empty());
    }

    #[test]
    fn names_referenced() {
        assert_eq!(referenced_names("$A ${B:-$C} '$D' \"$E\" $A", '\\'), ["A", "B", "C", "E"]);
    }

    #[test]
    fn globs() {
        assert!(glob_match("*.txt", "a.txt"));
        assert!(!glob_match("*.txt", "a.txt.bak"));
        assert!(glob_match("a?c", "abc"));
        assert!(glob_match("[a-c]x", "bx"));
        assert!(!glob_match("[!a-c]x", "bx"));
        assert!(glob_match("[]]", "]"));
        assert!(glob_match("\\*", "*"));
        assert!(!glob_match("\\*", "x"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "axxbyyc"));
    }
}
