//! Reading the subset of Erlang terms that match files use: tuples, lists, binaries, strings,
//! atoms, integers and floats, with `%` comments. It does not evaluate Erlang (no variables,
//! records, maps, `$c` characters or `16#` bases, which no match file needs), and it does not
//! know what a match file means: that is `erlang.rs`.

use super::MatchFileError;

/// Where a term starts, 1-based, columns counted in characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Pos {
    pub(super) line: usize,
    pub(super) column: usize,
}

/// One Erlang term, as far as match files go.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Kind {
    Tuple(Vec<Term>),
    List(Vec<Term>),
    /// A binary `<<"..">>` or a string `".."`: both are text in a match file.
    Text(String),
    Atom(String),
    Int(i64),
    Float(f64),
}

#[derive(Clone, Debug, PartialEq)]
pub(super) struct Term {
    pub(super) kind: Kind,
    pub(super) pos: Pos,
}

impl Term {
    /// What the term is, for "expected X, found Y" messages.
    pub(super) fn describe(&self) -> String {
        match &self.kind {
            Kind::Tuple(items) => format!("a tuple of {}", items.len()),
            Kind::List(_) => "a list".into(),
            Kind::Text(s) => format!("the text {s:?}"),
            Kind::Atom(a) => format!("the atom `{a}`"),
            Kind::Int(i) => format!("the integer {i}"),
            Kind::Float(f) => format!("the number {f}"),
        }
    }

    /// `Some(text)` for a binary, a string or an atom: where the original wrote either.
    pub(super) fn as_text(&self) -> Option<&str> {
        match &self.kind {
            Kind::Text(s) | Kind::Atom(s) => Some(s),
            _ => None,
        }
    }

    pub(super) fn invalid(&self, message: impl Into<String>) -> MatchFileError {
        MatchFileError::Invalid {
            line: self.pos.line,
            column: self.pos.column,
            message: message.into(),
        }
    }

    /// `{Atom, Value}` as used for every key-value pair in a match file.
    pub(super) fn as_pair(&self, what: &str) -> Result<(&str, &Term), MatchFileError> {
        if let Kind::Tuple(items) = &self.kind {
            if let [Term { kind: Kind::Atom(key), .. }, value] = items.as_slice() {
                return Ok((key, value));
            }
        }
        Err(self.invalid(format!("expected {what}, found {}", self.describe())))
    }
}

/// How deep tuples and lists may nest. A match file needs six levels (`{steps, [{start,
/// [{home_players, [{25, <<"Albil">>}]}]}]}`); the reader recurses once per level, so a file of
/// nothing but `[` must end in an error, not in a stack overflow.
pub(super) const MAX_DEPTH: usize = 64;

/// Reads `Term.` repeated up to the end of the text.
pub(super) fn read(text: &str) -> Result<Vec<Term>, MatchFileError> {
    Reader::new(text).file()
}

/// A recursive-descent reader over the file's characters. Files are small (kilobytes), so
/// holding them as a `Vec<char>` keeps column counting trivial.
struct Reader {
    chars: Vec<char>,
    at: usize,
    line: usize,
    column: usize,
    /// Tuples and lists open around the reader.
    depth: usize,
}

impl Reader {
    fn new(text: &str) -> Reader {
        Reader { chars: text.chars().collect(), at: 0, line: 1, column: 1, depth: 0 }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.at + ahead).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.at += 1;
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    fn pos(&self) -> Pos {
        Pos { line: self.line, column: self.column }
    }

    fn found(&self) -> String {
        match self.peek() {
            None => "end of file".into(),
            Some('\n') => "end of line".into(),
            Some(c) => format!("`{c}`"),
        }
    }

    fn expected(&self, what: &str) -> MatchFileError {
        MatchFileError::Syntax {
            line: self.line,
            column: self.column,
            message: format!("expected {what}, found {}", self.found()),
        }
    }

    fn skip_blank(&mut self) {
        while let Some(c) = self.peek() {
            if c == '%' {
                while self.peek().is_some_and(|c| c != '\n') {
                    self.bump();
                }
            } else if c.is_whitespace() {
                self.bump();
            } else {
                break;
            }
        }
    }

    fn eat(&mut self, c: char, what: &str) -> Result<(), MatchFileError> {
        self.skip_blank();
        if self.peek() == Some(c) {
            self.bump();
            Ok(())
        } else {
            Err(self.expected(what))
        }
    }

    /// `Term.` repeated up to the end of the file.
    fn file(&mut self) -> Result<Vec<Term>, MatchFileError> {
        let mut terms = Vec::new();
        loop {
            self.skip_blank();
            if self.peek().is_none() {
                return Ok(terms);
            }
            let term = self.term()?;
            let start = term.pos;
            self.eat(
                '.',
                &format!(
                    "`.` to end the term begun at line {}, column {}",
                    start.line, start.column
                ),
            )?;
            terms.push(term);
        }
    }

    fn term(&mut self) -> Result<Term, MatchFileError> {
        self.skip_blank();
        let pos = self.pos();
        let kind = match self.peek() {
            Some('{') => Kind::Tuple(self.sequence('{', '}')?),
            Some('[') => Kind::List(self.sequence('[', ']')?),
            Some('<') if self.peek_at(1) == Some('<') => Kind::Text(self.binary()?),
            Some('"') => Kind::Text(self.quoted('"')?),
            Some('\'') => Kind::Atom(self.quoted('\'')?),
            Some(c) if c.is_ascii_lowercase() => Kind::Atom(self.atom()),
            Some(c) if c.is_ascii_digit() || c == '-' => self.number()?,
            _ => return Err(self.expected("a term")),
        };
        Ok(Term { kind, pos })
    }

    /// `{a, b, ...}` or `[a, b, ...]`, possibly empty, at most [`MAX_DEPTH`] deep.
    fn sequence(&mut self, open: char, close: char) -> Result<Vec<Term>, MatchFileError> {
        if self.depth == MAX_DEPTH {
            return Err(MatchFileError::Syntax {
                line: self.line,
                column: self.column,
                message: format!(
                    "tuples and lists nested more than {MAX_DEPTH} deep (a match file needs 6)"
                ),
            });
        }
        self.depth += 1;
        let items = self.items(open, close);
        self.depth -= 1;
        items
    }

    fn items(&mut self, open: char, close: char) -> Result<Vec<Term>, MatchFileError> {
        self.bump(); // `open`, already peeked
        let mut items = Vec::new();
        self.skip_blank();
        if self.peek() == Some(close) {
            self.bump();
            return Ok(items);
        }
        loop {
            items.push(self.term()?);
            self.skip_blank();
            match self.peek() {
                Some(',') => {
                    self.bump();
                }
                Some(c) if c == close => {
                    self.bump();
                    return Ok(items);
                }
                _ => {
                    let what = format!("`,` or `{close}` (the `{open}` is unclosed)");
                    return Err(self.expected(&what));
                }
            }
        }
    }

    /// `<<"text">>`, `<<"text"/utf8>>` or `<<>>`.
    fn binary(&mut self) -> Result<String, MatchFileError> {
        self.bump();
        self.bump();
        self.skip_blank();
        let mut text = String::new();
        if self.peek() == Some('"') {
            text = self.quoted('"')?;
            self.skip_blank();
            // Files written for OTP 17+ mark non-ASCII binaries this way; the text is the same.
            if self.peek() == Some('/') {
                self.bump();
                if self.atom() != "utf8" {
                    return Err(self.expected("`utf8` after `/`"));
                }
            }
        }
        self.eat('>', "`>>` to close the binary")?;
        if self.peek() != Some('>') {
            return Err(self.expected("`>>` to close the binary"));
        }
        self.bump();
        Ok(text)
    }

    /// A string `"..."` or a quoted atom `'...'`, with the escapes a match file may need.
    fn quoted(&mut self, quote: char) -> Result<String, MatchFileError> {
        let start = self.pos();
        self.bump();
        let mut text = String::new();
        loop {
            match self.bump() {
                None => {
                    return Err(MatchFileError::Syntax {
                        line: start.line,
                        column: start.column,
                        message: format!("this {quote} is never closed (reached end of file)"),
                    })
                }
                Some(c) if c == quote => return Ok(text),
                Some('\\') => {
                    let escaped = match self.peek() {
                        Some('n') => '\n',
                        Some('t') => '\t',
                        Some('r') => '\r',
                        Some(c @ ('"' | '\'' | '\\')) => c,
                        _ => return Err(self.expected("an escape (\\\" \\' \\\\ \\n \\t \\r)")),
                    };
                    self.bump();
                    text.push(escaped);
                }
                Some(c) => text.push(c),
            }
        }
    }

    fn atom(&mut self) -> String {
        let mut atom = String::new();
        while let Some(c) =
            self.peek().filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '@')
        {
            atom.push(c);
            self.bump();
        }
        atom
    }

    /// `-12`, `3000`, `1.5`, `2.0e3`. A `.` is part of a number only when a digit follows:
    /// `{sleep, 3000}.` ends with a term's dot, not a float.
    fn number(&mut self) -> Result<Kind, MatchFileError> {
        let start = self.pos();
        let mut text = String::new();
        if self.peek() == Some('-') {
            text.push('-');
            self.bump();
        }
        let digits = |r: &mut Reader, text: &mut String| {
            while let Some(c) = r.peek().filter(char::is_ascii_digit) {
                text.push(c);
                r.bump();
            }
        };
        if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
            return Err(self.expected("a digit"));
        }
        digits(self, &mut text);
        let mut float = false;
        if self.peek() == Some('.') && self.peek_at(1).is_some_and(|c| c.is_ascii_digit()) {
            float = true;
            text.push('.');
            self.bump();
            digits(self, &mut text);
            if matches!(self.peek(), Some('e' | 'E')) {
                text.push('e');
                self.bump();
                if let Some(sign @ ('+' | '-')) = self.peek() {
                    text.push(sign);
                    self.bump();
                }
                if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    return Err(self.expected("the exponent's digits"));
                }
                digits(self, &mut text);
            }
        }
        let out_of_range = || MatchFileError::Syntax {
            line: start.line,
            column: start.column,
            message: format!("the number {text} is out of range"),
        };
        if float {
            text.parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(Kind::Float)
                .ok_or_else(out_of_range)
        } else {
            text.parse::<i64>().map(Kind::Int).map_err(|_| out_of_range())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(text: &str) -> Result<Vec<Kind>, MatchFileError> {
        Ok(Reader::new(text).file()?.into_iter().map(|t| t.kind).collect())
    }

    fn text(s: &str) -> Kind {
        Kind::Text(s.into())
    }

    /// The terms written back in a canonical form, positions left out.
    fn show(k: &Kind) -> String {
        let all = |v: &[Term]| v.iter().map(|t| show(&t.kind)).collect::<Vec<_>>().join(",");
        match k {
            Kind::Tuple(v) => format!("{{{}}}", all(v)),
            Kind::List(v) => format!("[{}]", all(v)),
            Kind::Text(s) => format!("{s:?}"),
            Kind::Atom(a) => format!("'{a}'"),
            Kind::Int(i) => i.to_string(),
            Kind::Float(f) => format!("{f:?}"),
        }
    }

    #[test]
    fn reads_every_kind_of_term() {
        let got = terms(concat!(
            "% a comment\n",
            "{a, 'Quoted atom', -12, 3.5, 2.0e3, <<>>, <<\"b\\\"in\">>, %% another\n",
            "  \"s\\\\t\\n\", [], [x@y, {}]}.\n[1]."
        ))
        .unwrap();
        let got: Vec<String> = got.iter().map(show).collect();
        assert_eq!(
            got,
            [r#"{'a','Quoted atom',-12,3.5,2000.0,"","b\"in","s\\t\n",[],['x@y',{}]}"#, "[1]"]
        );
    }

    #[test]
    fn terms_know_where_they_start() {
        let file = Reader::new("{a,\n  [b]}.").file().unwrap();
        let Kind::Tuple(items) = &file[0].kind else { panic!("{file:?}") };
        assert_eq!(file[0].pos, Pos { line: 1, column: 1 });
        assert_eq!(items[1].pos, Pos { line: 2, column: 3 });
    }

    #[test]
    fn a_dot_after_an_integer_ends_the_term() {
        assert_eq!(terms("1.\n2 .").unwrap(), vec![Kind::Int(1), Kind::Int(2)]);
        assert_eq!(terms("<<\"Pérez\"/utf8>>.").unwrap(), vec![text("Pérez")]);
    }

    #[test]
    fn nesting_deeper_than_a_match_file_needs_is_an_error() {
        let deep = |n: usize| format!("{}{}.", "[".repeat(n), "]".repeat(n));
        assert_eq!(terms(&deep(MAX_DEPTH)).map(|t| t.len()).ok(), Some(1));
        let err = terms(&deep(MAX_DEPTH + 1)).unwrap_err().to_string();
        assert_eq!(
            err,
            "line 1, column 65: tuples and lists nested more than 64 deep (a match file needs 6)"
        );
        // Far deeper than any stack: refused at the limit, nothing recursed past it.
        let err = terms(&"{a, [".repeat(100_000)).unwrap_err().to_string();
        assert!(err.contains("nested more than 64 deep"), "{err}");
    }

    #[test]
    fn syntax_errors_say_where_and_what_was_expected() {
        let cases = [
            ("{home, <<\"elp\">>", "line 1, column 17: expected `,` or `}`", "end of file"),
            (
                "{home, <<\"elp\">>}\n{visit, x}.",
                "line 2, column 1: expected `.` to end the term begun at line 1, column 1",
                "found `{`",
            ),
            ("{a, \"open}.\n", "line 1, column 5: this \" is never closed", "end of file"),
            ("{a, <<\"x\">}.", "line 1, column 11: expected `>>`", "found `}`"),
            ("{a, B}.", "line 1, column 5: expected a term", "found `B`"),
            ("{a, \"\\q\"}.", "line 1, column 7: expected an escape", "found `q`"),
            (
                "{a, 99999999999999999999}.",
                "line 1, column 5: the number 99999999999999999999 is out of range",
                "",
            ),
        ];
        for (input, start, found) in cases {
            let err = terms(input).unwrap_err();
            assert!(matches!(err, MatchFileError::Syntax { .. }), "{input}: {err:?}");
            let msg = err.to_string();
            assert!(msg.starts_with(start) && msg.contains(found), "{input}: {msg}");
        }
    }
}
