//! The Containerfile (Dockerfile) format: parser directives, comments, line continuations,
//! heredocs, instructions with their `--flags`, and the split into stages. Arguments are kept
//! as written: variables are expanded when the build reaches them (`words`), with the values
//! the stage has then.

use std::fmt;

/// Where a Containerfile is wrong: 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}: {}", self.line, self.column, self.message)
    }
}

impl std::error::Error for ParseError {}

fn error(line: usize, column: usize, message: impl Into<String>) -> ParseError {
    ParseError { line, column, message: message.into() }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyword {
    From,
    Run,
    Cmd,
    Entrypoint,
    Copy,
    Add,
    Env,
    Arg,
    Workdir,
    User,
    Expose,
    Label,
    Volume,
    Stopsignal,
    Healthcheck,
    Shell,
    Onbuild,
    Maintainer,
}

impl Keyword {
    fn parse(word: &str) -> Option<Keyword> {
        Some(match word.to_ascii_uppercase().as_str() {
            "FROM" => Keyword::From,
            "RUN" => Keyword::Run,
            "CMD" => Keyword::Cmd,
            "ENTRYPOINT" => Keyword::Entrypoint,
            "COPY" => Keyword::Copy,
            "ADD" => Keyword::Add,
            "ENV" => Keyword::Env,
            "ARG" => Keyword::Arg,
            "WORKDIR" => Keyword::Workdir,
            "USER" => Keyword::User,
            "EXPOSE" => Keyword::Expose,
            "LABEL" => Keyword::Label,
            "VOLUME" => Keyword::Volume,
            "STOPSIGNAL" => Keyword::Stopsignal,
            "HEALTHCHECK" => Keyword::Healthcheck,
            "SHELL" => Keyword::Shell,
            "ONBUILD" => Keyword::Onbuild,
            "MAINTAINER" => Keyword::Maintainer,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Keyword::From => "FROM",
            Keyword::Run => "RUN",
            Keyword::Cmd => "CMD",
            Keyword::Entrypoint => "ENTRYPOINT",
            Keyword::Copy => "COPY",
            Keyword::Add => "ADD",
            Keyword::Env => "ENV",
            Keyword::Arg => "ARG",
            Keyword::Workdir => "WORKDIR",
            Keyword::User => "USER",
            Keyword::Expose => "EXPOSE",
            Keyword::Label => "LABEL",
            Keyword::Volume => "VOLUME",
            Keyword::Stopsignal => "STOPSIGNAL",
            Keyword::Healthcheck => "HEALTHCHECK",
            Keyword::Shell => "SHELL",
            Keyword::Onbuild => "ONBUILD",
            Keyword::Maintainer => "MAINTAINER",
        }
    }

    /// The `--flags` the instruction takes.
    fn flags(self) -> &'static [&'static str] {
        match self {
            Keyword::From => &["platform"],
            Keyword::Run => &["mount", "network", "security"],
            Keyword::Copy => &["from", "chown", "chmod", "link", "parents", "exclude"],
            Keyword::Add => &["chown", "chmod", "link", "checksum", "keep-git-dir", "exclude", "unpack"],
            Keyword::Healthcheck => &["interval", "timeout", "start-period", "start-interval", "retries"],
            _ => &[],
        }
    }

    fn takes_heredocs(self) -> bool {
        matches!(self, Keyword::Run | Keyword::Copy | Keyword::Add)
    }
}

impl fmt::Display for Keyword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A `--name=value` (or bare `--name`) before an instruction's arguments, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    pub name: String,
    pub value: Option<String>,
    pub column: usize,
}

/// A here-document: `<<NAME` (or `<<-NAME`, tabs stripped; `<<"NAME"`, not expanded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    pub name: String,
    pub content: String,
    /// Unquoted: variables in it expand (COPY's; RUN's are the shell's to expand).
    pub expand: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// The line it starts on.
    pub line: usize,
    pub keyword: Keyword,
    /// The instruction as one line, continuations joined (for the history and the cache).
    pub text: String,
    pub flags: Vec<Flag>,
    /// The arguments after the flags, as written (not expanded).
    pub args: String,
    pub heredocs: Vec<Heredoc>,
}

impl Instruction {
    /// The arguments as a JSON array of strings (the exec form), if they are one.
    pub fn exec_form(&self) -> Option<Vec<String>> {
        json_array(&self.args)
    }

    pub fn flag(&self, name: &str) -> Option<&Flag> {
        self.flags.iter().rev().find(|f| f.name == name)
    }

    pub fn flags_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Flag> + 'a {
        self.flags.iter().filter(move |f| f.name == name)
    }

    /// An error about this instruction, at its line.
    pub fn error(&self, message: impl fmt::Display) -> ParseError {
        error(self.line, 1, format!("{}: {message}", self.keyword))
    }
}

fn json_array(args: &str) -> Option<Vec<String>> {
    let t = args.trim();
    if !t.starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(t).ok()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub from: Instruction,
    /// `FROM image AS name`, lower-cased (stage names are case-insensitive).
    pub name: Option<String>,
    /// The base as written (variables expand with the global ARGs).
    pub base: String,
    pub instructions: Vec<Instruction>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Containerfile {
    pub escape: char,
    pub syntax: Option<String>,
    /// ARGs before the first FROM: usable in FROM lines (and, declared again, in stages).
    pub global_args: Vec<Instruction>,
    pub stages: Vec<Stage>,
}

impl Containerfile {
    /// The stage `name` (a name given with AS, or an index), case-insensitively.
    pub fn stage_index(&self, name: &str) -> Option<usize> {
        let lower = name.to_ascii_lowercase();
        self.stages
            .iter()
            .position(|s| s.name.as_deref() == Some(lower.as_str()))
            .or_else(|| lower.parse::<usize>().ok().filter(|i| *i < self.stages.len() && lower == i.to_string()))
    }
}

/// Parses a Containerfile.
pub fn parse(text: &str) -> Result<Containerfile, ParseError> {
    let lines: Vec<&str> = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).collect();
    let (escape, syntax, first) = directives(&lines)?;
    let instructions = instructions(&lines, first, escape)?;
    let mut global_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for ins in instructions {
        match (ins.keyword, stages.last_mut()) {
            (Keyword::From, _) => {
                let stage = from_stage(ins)?;
                if let Some(name) = &stage.name {
                    if stages.iter().any(|s| s.name.as_ref() == Some(name)) {
                        return Err(stage.from.error(format!("a stage named {name:?} exists already")));
                    }
                }
                stages.push(stage);
            }
            (Keyword::Arg, None) => global_args.push(ins),
            (_, None) => {
                return Err(error(
                    ins.line,
                    1,
                    format!("{} before the first FROM (only ARG may come before it)", ins.keyword),
                ))
            }
            (_, Some(stage)) => stage.instructions.push(ins),
        }
    }
    if stages.is_empty() {
        return Err(error(lines.len().max(1), 1, "no FROM instruction: nothing to build"));
    }
    Ok(Containerfile { escape, syntax, global_args, stages })
}

/// `# escape=` and `# syntax=` at the very top: the escape character, the syntax, and the
/// index of the first line after them.
fn directives(lines: &[&str]) -> Result<(char, Option<String>, usize), ParseError> {
    let mut escape = None;
    let mut syntax = None;
    let mut check = false;
    for (i, line) in lines.iter().enumerate() {
        let Some((key, value)) = directive(line) else { return Ok((escape.unwrap_or('\\'), syntax, i)) };
        let seen = match key.as_str() {
            "escape" => {
                let c = match value.as_str() {
                    "\\" => '\\',
                    "`" => '`',
                    _ => return Err(error(i + 1, 1, format!("escape directive: {value:?} is not \\ or `"))),
                };
                escape.replace(c).is_some()
            }
            "syntax" => syntax.replace(value).is_some(),
            "check" => std::mem::replace(&mut check, true),
            // An unknown directive is a comment, and ends the directives.
            _ => return Ok((escape.unwrap_or('\\'), syntax, i)),
        };
        if seen {
            return Err(error(i + 1, 1, format!("the {key} directive is given twice")));
        }
    }
    Ok((escape.unwrap_or('\\'), syntax, lines.len()))
}

fn directive(line: &str) -> Option<(String, String)> {
    let rest = line.trim_start().strip_prefix('#')?;
    let (key, value) = rest.split_once('=')?;
    let key = key.trim();
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    let value = value.trim();
    (!value.is_empty()).then(|| (key.to_ascii_lowercase(), value.to_string()))
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// The line without its continuation mark: (content, continues).
fn continuation(line: &str, escape: char) -> (&str, bool) {
    let t = line.trim_end_matches([' ', '\t']);
    match t.strip_suffix(escape) {
        Some(body) => (body, true),
        None => (line, false),
    }
}

fn instructions(lines: &[&str], first: usize, escape: char) -> Result<Vec<Instruction>, ParseError> {
    let mut out = Vec::new();
    let mut i = first;
    while i < lines.len() {
        let line = lines[i];
        let start = i + 1;
        i += 1;
        if line.trim().is_empty() || is_comment(line) {
            continue;
        }
        let (body, mut more) = continuation(line, escape);
        let mut text = body.to_string();
        while more {
            let Some(next) = lines.get(i) else { break };
            i += 1;
            // Comments and empty lines inside a continued instruction are skipped.
            if is_comment(next) || next.trim().is_empty() {
                continue;
            }
            let (body, again) = continuation(next, escape);
            text.push_str(body);
            more = again;
        }
        let indent = text.len() - text.trim_start().len();
        let text = text.trim().to_string();
        let (word, rest) = text.split_once(char::is_whitespace).unwrap_or((&text, ""));
        let keyword = Keyword::parse(word)
            .ok_or_else(|| error(start, indent + 1, format!("unknown instruction {:?}", word.to_ascii_uppercase())))?;
        let args_column = indent + word.len() + 1 + (rest.len() - rest.trim_start().len()) + 1;
        let (flags, args) = flags(rest.trim_start(), keyword, start, args_column)?;
        let mut ins = Instruction { line: start, keyword, text: text.clone(), flags, args, heredocs: Vec::new() };
        if keyword.takes_heredocs() {
            for (name, strip_tabs, expand) in heredoc_markers(&ins.args, escape) {
                let mut content = String::new();
                loop {
                    let Some(l) = lines.get(i) else {
                        return Err(error(
                            start,
                            1,
                            format!("{keyword}: the here-document {name} has no end line {name:?}"),
                        ));
                    };
                    i += 1;
                    let l = if strip_tabs { l.trim_start_matches('\t') } else { l };
                    if l == name {
                        break;
                    }
                    content.push_str(l);
                    content.push('\n');
                }
                ins.heredocs.push(Heredoc { name, content, expand });
            }
        }
        check(&ins, escape)?;
        out.push(ins);
    }
    Ok(out)
}

/// Leading `--name[=value]` words; `--` ends them. The rest: the arguments.
fn flags(rest: &str, keyword: Keyword, line: usize, column: usize) -> Result<(Vec<Flag>, String), ParseError> {
    let mut flags = Vec::new();
    let mut pos = 0;
    let bytes = rest.as_bytes();
    loop {
        while pos < bytes.len() && (bytes[pos] == b' ' || bytes[pos] == b'\t') {
            pos += 1;
        }
        if !rest[pos..].starts_with("--") {
            break;
        }
        // The word ends at unquoted whitespace.
        let mut end = pos;
        let mut quote = None;
        for (j, c) in rest[pos..].char_indices() {
            match (quote, c) {
                (None, ' ' | '\t') => break,
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                _ => {}
            }
            end = pos + j + c.len_utf8();
        }
        let word = &rest[pos + 2..end];
        let at = column + pos;
        pos = end;
        if word.is_empty() {
            break;
        }
        let (name, value) = match word.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (word, None),
        };
        if !keyword.flags().contains(&name) {
            return Err(error(line, at, format!("{keyword} has no flag --{name}")));
        }
        flags.push(Flag { name: name.to_string(), value, column: at });
    }
    Ok((flags, rest[pos..].trim().to_string()))
}

/// The here-documents an instruction's arguments open: (name, strip tabs, expand).
fn heredoc_markers(args: &str, escape: char) -> Vec<(String, bool, bool)> {
    let mut out = Vec::new();
    if json_array(args).is_some() {
        return out;
    }
    let chars: Vec<char> = args.chars().collect();
    let mut i = 0;
    let mut quote: Option<char> = None;
    while i < chars.len() {
        let c = chars[i];
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == escape => i += 1,
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '<' && chars.get(i + 1) == Some(&'<') && chars.get(i + 2) != Some(&'<') => {
                let mut j = i + 2;
                let strip_tabs = chars.get(j) == Some(&'-');
                j += strip_tabs as usize;
                let q = chars.get(j).copied().filter(|c| *c == '"' || *c == '\'');
                j += q.is_some() as usize;
                let name_start = j;
                while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_' || chars[j] == '-') {
                    j += 1;
                }
                let name: String = chars[name_start..j].iter().collect();
                let closed = match q {
                    Some(q) if chars.get(j) == Some(&q) => {
                        j += 1;
                        true
                    }
                    Some(_) => false,
                    None => true,
                };
                if !name.is_empty() && closed {
                    out.push((name, strip_tabs, q.is_none()));
                    i = j;
                    continue;
                }
            }
            None => {}
        }
        i += 1;
    }
    out
}

/// What can be checked before the build: the arguments' shape.
fn check(ins: &Instruction, escape: char) -> Result<(), ParseError> {
    let args = ins.args.as_str();
    let exec = ins.exec_form();
    let needs_args = !matches!(ins.keyword, Keyword::Cmd | Keyword::Entrypoint | Keyword::Run);
    if args.is_empty() && needs_args {
        return Err(ins.error("arguments are missing"));
    }
    let words = || crate::words::expand_words(args, escape, &|_: &str| Some(String::new())).map_err(|e| ins.error(e));
    match ins.keyword {
        Keyword::Run if args.is_empty() => return Err(ins.error("a command is missing")),
        Keyword::Shell if exec.as_ref().is_none_or(|v| v.is_empty()) => {
            return Err(ins.error("the shell must be a JSON array of strings, e.g. [\"/bin/sh\", \"-c\"]"))
        }
        Keyword::Copy | Keyword::Add => {
            let count = match &exec {
                Some(v) => v.len(),
                None => words()?.len() + ins.heredocs.len(),
            };
            if count < 2 {
                return Err(ins.error("a source and a destination are needed"));
            }
        }
        Keyword::Env | Keyword::Label => {
            for (k, v) in key_values(ins, escape)? {
                for part in [k, v] {
                    crate::words::expand_word(&part, escape, &|_: &str| Some(String::new()))
                        .map_err(|e| ins.error(e))?;
                }
            }
        }
        Keyword::Arg => {
            for w in words()? {
                let name = w.split_once('=').map_or(w.as_str(), |(n, _)| n);
                if name.is_empty() {
                    return Err(ins.error("an ARG needs a name"));
                }
            }
        }
        Keyword::Workdir | Keyword::User | Keyword::Stopsignal | Keyword::Maintainer => {}
        Keyword::Healthcheck => {
            let (first, rest) = args.split_once(char::is_whitespace).unwrap_or((args, ""));
            match first.to_ascii_uppercase().as_str() {
                "NONE" if rest.trim().is_empty() && ins.flags.is_empty() => {}
                "NONE" => return Err(ins.error("HEALTHCHECK NONE takes no arguments or flags")),
                "CMD" if !rest.trim().is_empty() => {}
                _ => return Err(ins.error("expected CMD followed by a command, or NONE")),
            }
        }
        Keyword::Onbuild => {
            let trigger = parse_onbuild(ins)?;
            if matches!(trigger.keyword, Keyword::Onbuild | Keyword::From | Keyword::Maintainer) {
                return Err(ins.error(format!("{} is not allowed as an ONBUILD trigger", trigger.keyword)));
            }
        }
        _ => {}
    }
    Ok(())
}

/// The instruction an ONBUILD carries, parsed as if it stood on its own line.
pub fn parse_onbuild(ins: &Instruction) -> Result<Instruction, ParseError> {
    let trigger = instructions(&[ins.args.as_str()], 0, '\\').map_err(|mut e| {
        e.line = ins.line;
        e
    })?;
    trigger.into_iter().next().ok_or_else(|| ins.error("the trigger instruction is missing"))
}

/// ENV's and LABEL's `key=value …` pairs (or ENV's old `key value`), as written.
pub fn key_values(ins: &Instruction, escape: char) -> Result<Vec<(String, String)>, ParseError> {
    let words = raw_words(&ins.args, escape);
    let mut out = Vec::new();
    if ins.keyword == Keyword::Env && words.first().is_some_and(|w| !w.contains('=')) {
        // `ENV key value with spaces`: the rest of the line is the value.
        let key = words[0].clone();
        let value = ins.args.trim_start()[key.len()..].trim().to_string();
        if value.is_empty() {
            return Err(ins.error(format!("{key} needs a value: ENV {key}=VALUE")));
        }
        return Ok(vec![(key, value)]);
    }
    for w in words {
        let Some((k, v)) = w.split_once('=') else {
            return Err(ins.error(format!("{w:?} is not KEY=VALUE")));
        };
        if k.is_empty() {
            return Err(ins.error(format!("{w:?} has no key")));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

/// Splits at unquoted whitespace, quotes and escapes kept (for a second pass that expands).
pub fn raw_words(text: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) if c == q => {
                quote = None;
                cur.push(c);
            }
            Some('"') if c == escape => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            Some(_) => cur.push(c),
            None if c == escape => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                cur.push(c);
            }
            None if c.is_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            None => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

fn from_stage(ins: Instruction) -> Result<Stage, ParseError> {
    let words = raw_words(&ins.args, '\\');
    let (base, name) = match words.as_slice() {
        [base] => (base.clone(), None),
        [base, as_, name] if as_.eq_ignore_ascii_case("as") => {
            let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if !valid {
                return Err(ins.error(format!("{name:?} is not a valid stage name")));
            }
            (base.clone(), Some(name.to_ascii_lowercase()))
        }
        _ => return Err(ins.error("expected FROM IMAGE [AS NAME]")),
    };
    Ok(Stage { from: ins, name, base, instructions: Vec::new() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_comments_and_continuations() {
        let cf = parse(
            "# syntax=docker/dockerfile:1\n# escape=`\n\n# a comment\nFROM busybox AS Base\nRUN echo a `\n  # inside\n\n  && echo b\n\
             copy --chown=1:2 --chmod=0644 a b /dst/\n",
        )
        .unwrap();
        assert_eq!(cf.escape, '`');
        assert_eq!(cf.syntax.as_deref(), Some("docker/dockerfile:1"));
        let s = &cf.stages[0];
        assert_eq!(s.name.as_deref(), Some("base"));
        assert_eq!(s.base, "busybox");
        assert_eq!(s.instructions[0].keyword, Keyword::Run);
        assert_eq!(s.instructions[0].args, "echo a   && echo b");
        assert_eq!(s.instructions[0].line, 6);
        let copy = &s.instructions[1];
        assert_eq!(copy.keyword, Keyword::Copy);
        assert_eq!(copy.line, 10);
        assert_eq!(copy.flag("chown").unwrap().value.as_deref(), Some("1:2"));
        assert_eq!(copy.flag("chmod").unwrap().value.as_deref(), Some("0644"));
        assert_eq!(copy.args, "a b /dst/");
    }

    #[test]
    fn a_directive_after_an_instruction_is_a_comment() {
        let cf = parse("FROM scratch\n# escape=`\nRUN a \\\n b\n").unwrap();
        assert_eq!(cf.escape, '\\');
        assert_eq!(cf.stages[0].instructions[0].args, "a  b");
    }

    #[test]
    fn errors_name_line_and_column() {
        let e = parse("FROM scratch\n\n  FRUM x\n").unwrap_err();
        assert_eq!((e.line, e.column), (3, 3));
        assert!(e.message.contains("FRUM"), "{e}");
        let e = parse("FROM scratch\nCOPY --form=x a b\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 6));
        assert!(e.message.contains("--form"), "{e}");
        let e = parse("RUN true\nFROM scratch\n").unwrap_err();
        assert_eq!(e.line, 1);
        let e = parse("ARG X\n").unwrap_err();
        assert!(e.message.contains("no FROM"), "{e}");
        let e = parse("# escape=x\nFROM scratch").unwrap_err();
        assert_eq!(e.line, 1);
        let e = parse("FROM a AS x\nFROM b AS X\n").unwrap_err();
        assert!(e.message.contains("exists"), "{e}");
        let e = parse("FROM a\nCOPY onlyone\n").unwrap_err();
        assert!(e.message.contains("destination"), "{e}");
        let e = parse("FROM a\nSHELL /bin/bash\n").unwrap_err();
        assert!(e.message.contains("JSON"), "{e}");
        let e = parse("FROM a\nONBUILD FROM b\n").unwrap_err();
        assert!(e.message.contains("trigger"), "{e}");
        let e = parse("FROM a\nENV K=\"unclosed\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = parse("FROM a\nRUN <<EOF\necho\n").unwrap_err();
        assert!(e.message.contains("EOF"), "{e}");
    }

    #[test]
    fn global_args_and_stages() {
        let cf = parse("ARG BASE=busybox\nFROM ${BASE} AS one\nARG BASE\nFROM one\nRUN x\n").unwrap();
        assert_eq!(cf.global_args.len(), 1);
        assert_eq!(cf.stages.len(), 2);
        assert_eq!(cf.stages[0].base, "${BASE}");
        assert_eq!(cf.stages[0].instructions[0].keyword, Keyword::Arg);
        assert_eq!(cf.stage_index("ONE"), Some(0));
        assert_eq!(cf.stage_index("1"), Some(1));
        assert_eq!(cf.stage_index("2"), None);
        assert_eq!(cf.stage_index("01"), None);
    }

    #[test]
    fn heredocs() {
        let cf = parse(
            "FROM a\nRUN <<EOF\necho one\n  echo two\nEOF\nCOPY <<-\"FILE\" <<X /dst/\n\t\tliteral $V\n\tFILE\nx $V\nX\nRUN echo '<<notadoc'\n",
        )
        .unwrap();
        let ins = &cf.stages[0].instructions;
        assert_eq!(
            ins[0].heredocs,
            [Heredoc { name: "EOF".into(), content: "echo one\n  echo two\n".into(), expand: true }]
        );
        assert_eq!(ins[1].heredocs.len(), 2);
        assert_eq!(ins[1].heredocs[0].content, "literal $V\n");
        assert!(!ins[1].heredocs[0].expand);
        assert_eq!(ins[1].heredocs[1].content, "x $V\n");
        assert_eq!(ins[2].line, 11);
        assert!(ins[2].heredocs.is_empty());
    }

    #[test]
    fn exec_forms_and_key_values() {
        let cf = parse(
            "FROM a\nCMD [\"/bin/echo\", \"hi there\"]\nENTRYPOINT [not json\nENV A=1 B=\"two words\" C='$x'\nENV OLD value with  spaces\n\
             LABEL \"com.example.k\"=v other=\"x y\"\nONBUILD RUN echo hi\n",
        )
        .unwrap();
        let ins = &cf.stages[0].instructions;
        assert_eq!(ins[0].exec_form().unwrap(), ["/bin/echo", "hi there"]);
        assert_eq!(ins[1].exec_form(), None);
        assert_eq!(
            key_values(&ins[2], '\\').unwrap(),
            [("A".into(), "1".into()), ("B".into(), "\"two words\"".into()), ("C".into(), "'$x'".into())]
        );
        assert_eq!(key_values(&ins[3], '\\').unwrap(), [("OLD".into(), "value with  spaces".into())]);
        assert_eq!(key_values(&ins[4], '\\').unwrap()[0].0, "\"com.example.k\"");
        let trigger = parse_onbuild(&ins[5]).unwrap();
        assert_eq!((trigger.keyword, trigger.args.as_str()), (Keyword::Run, "echo hi"));
    }
}
