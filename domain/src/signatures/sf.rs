//! The small part of RFC 8941 (Structured Field Values) that RFC 9421 and
//! RFC 9530 need: dictionaries whose members are items or inner lists, with
//! parameters, and the canonical serialisation of an inner list (the
//! `@signature-params` line is defined as that serialisation).

use std::fmt::Write as _;

use base64::Engine as _;

use super::BASE64;

/// A bare item (RFC 8941 section 3.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum BareItem {
    Integer(i64),
    /// Kept as written: nothing here computes with decimals.
    Decimal(String),
    String(String),
    Token(String),
    Bytes(Vec<u8>),
    Boolean(bool),
}

/// Ordered parameters; a repeated key keeps its last value, in the place of
/// its first occurrence (RFC 8941 section 4.2.3.2).
pub(super) type Parameters = Vec<(String, BareItem)>;

/// An item with its parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Item {
    pub(super) bare: BareItem,
    pub(super) params: Parameters,
}

/// A dictionary member's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Member {
    Item(Item),
    InnerList(Vec<Item>, Parameters),
}

/// Why a structured field could not be parsed. The reasons are fixed
/// strings so that nothing a peer sent is echoed back.
pub(super) type ParseError = &'static str;

/// Parses a dictionary (RFC 8941 section 4.2.2). Repeated keys keep the last
/// value, as the RFC requires.
pub(super) fn parse_dictionary(input: &str) -> Result<Vec<(String, Member)>, ParseError> {
    let mut p = Parser {
        s: input.as_bytes(),
        i: 0,
    };
    let mut out: Vec<(String, Member)> = Vec::new();
    p.skip_sp();
    if p.at_end() {
        return Ok(out);
    }
    loop {
        let key = p.key()?;
        let member = if p.eat(b'=') {
            p.member()?
        } else {
            Member::Item(Item {
                bare: BareItem::Boolean(true),
                params: p.params()?,
            })
        };
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = member,
            None => out.push((key, member)),
        }
        p.skip_ows();
        if p.at_end() {
            return Ok(out);
        }
        if !p.eat(b',') {
            return Err("expected `,` between dictionary members");
        }
        p.skip_ows();
        if p.at_end() {
            return Err("trailing `,` at the end of the dictionary");
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn at_end(&self) -> bool {
        self.i >= self.s.len()
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn skip_sp(&mut self) {
        while self.peek() == Some(b' ') {
            self.i += 1;
        }
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn key(&mut self) -> Result<String, ParseError> {
        let start = self.i;
        match self.peek() {
            Some(c) if c.is_ascii_lowercase() || c == b'*' => self.i += 1,
            _ => return Err("a key must start with a lower-case letter or `*`"),
        }
        while let Some(c) = self.peek() {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || b"_-.*".contains(&c) {
                self.i += 1;
            } else {
                break;
            }
        }
        Ok(self.text(start))
    }

    /// The input between `start` and the cursor; only ASCII was accepted in
    /// that range, so the conversion cannot lose anything.
    fn text(&self, start: usize) -> String {
        String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
    }

    fn member(&mut self) -> Result<Member, ParseError> {
        if self.peek() == Some(b'(') {
            self.inner_list()
        } else {
            Ok(Member::Item(self.item()?))
        }
    }

    fn inner_list(&mut self) -> Result<Member, ParseError> {
        self.i += 1;
        let mut items = Vec::new();
        loop {
            self.skip_sp();
            if self.eat(b')') {
                let params = self.params()?;
                return Ok(Member::InnerList(items, params));
            }
            items.push(self.item()?);
            match self.peek() {
                Some(b' ' | b')') => {}
                None => return Err("unterminated inner list"),
                Some(_) => return Err("expected a space or `)` after an inner-list item"),
            }
        }
    }

    fn item(&mut self) -> Result<Item, ParseError> {
        let bare = self.bare_item()?;
        let params = self.params()?;
        Ok(Item { bare, params })
    }

    fn params(&mut self) -> Result<Parameters, ParseError> {
        let mut params: Parameters = Vec::new();
        while self.eat(b';') {
            self.skip_sp();
            let key = self.key()?;
            let value = if self.eat(b'=') {
                self.bare_item()?
            } else {
                BareItem::Boolean(true)
            };
            match params.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => params.push((key, value)),
            }
        }
        Ok(params)
    }

    fn bare_item(&mut self) -> Result<BareItem, ParseError> {
        match self.peek() {
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'"') => self.string(),
            Some(b':') => self.bytes(),
            Some(b'?') => self.boolean(),
            Some(c) if c.is_ascii_alphabetic() || c == b'*' => Ok(self.token()),
            _ => Err("expected an item"),
        }
    }

    fn number(&mut self) -> Result<BareItem, ParseError> {
        let start = self.i;
        self.eat(b'-');
        let digits_start = self.i;
        let mut dot = None;
        while let Some(c) = self.peek() {
            if c.is_ascii_digit() {
                self.i += 1;
            } else if c == b'.' && dot.is_none() {
                dot = Some(self.i);
                self.i += 1;
            } else {
                break;
            }
        }
        let text = self.text(start);
        match dot {
            None => {
                let len = self.i - digits_start;
                if len == 0 || len > 15 {
                    return Err("an integer has 1 to 15 digits");
                }
                text.parse()
                    .map(BareItem::Integer)
                    .map_err(|_| "invalid integer")
            }
            Some(dot) => {
                let int_len = dot - digits_start;
                let frac_len = self.i - dot - 1;
                if int_len == 0 || int_len > 12 || frac_len == 0 || frac_len > 3 {
                    return Err("invalid decimal");
                }
                Ok(BareItem::Decimal(text))
            }
        }
    }

    fn string(&mut self) -> Result<BareItem, ParseError> {
        self.i += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err("unterminated string"),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(BareItem::String(out));
                }
                Some(b'\\') => {
                    self.i += 1;
                    match self.peek() {
                        Some(c @ (b'"' | b'\\')) => {
                            out.push(char::from(c));
                            self.i += 1;
                        }
                        _ => return Err("invalid escape in a string"),
                    }
                }
                Some(c @ 0x20..=0x7e) => {
                    out.push(char::from(c));
                    self.i += 1;
                }
                Some(_) => return Err("strings may only hold printable ASCII"),
            }
        }
    }

    fn token(&mut self) -> BareItem {
        let start = self.i;
        self.i += 1;
        while let Some(c) = self.peek() {
            if is_tchar(c) || c == b':' || c == b'/' {
                self.i += 1;
            } else {
                break;
            }
        }
        BareItem::Token(self.text(start))
    }

    fn bytes(&mut self) -> Result<BareItem, ParseError> {
        self.i += 1;
        let start = self.i;
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || b"+/=".contains(&c) {
                self.i += 1;
            } else {
                break;
            }
        }
        let encoded = &self.s[start..self.i];
        if !self.eat(b':') {
            return Err("unterminated byte sequence");
        }
        BASE64
            .decode(encoded)
            .map(BareItem::Bytes)
            .map_err(|_| "invalid base64 in a byte sequence")
    }

    fn boolean(&mut self) -> Result<BareItem, ParseError> {
        self.i += 1;
        let value = match self.peek() {
            Some(b'1') => true,
            Some(b'0') => false,
            _ => return Err("a boolean is `?0` or `?1`"),
        };
        self.i += 1;
        Ok(BareItem::Boolean(value))
    }
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// Serialises an inner list with its parameters (RFC 8941 section 4.1.1.1).
pub(super) fn serialize_inner_list(items: &[Item], params: &Parameters) -> String {
    let mut out = String::from("(");
    for (n, item) in items.iter().enumerate() {
        if n > 0 {
            out.push(' ');
        }
        serialize_bare(&mut out, &item.bare);
        serialize_params(&mut out, &item.params);
    }
    out.push(')');
    serialize_params(&mut out, params);
    out
}

/// Appends `;key=value` for each parameter (`;key` alone for `true`).
pub(super) fn serialize_params(out: &mut String, params: &Parameters) {
    for (key, value) in params {
        out.push(';');
        out.push_str(key);
        if *value != BareItem::Boolean(true) {
            out.push('=');
            serialize_bare(out, value);
        }
    }
}

fn serialize_bare(out: &mut String, bare: &BareItem) {
    match bare {
        BareItem::Integer(n) => {
            // Writing into a String cannot fail.
            let _ = write!(out, "{n}");
        }
        BareItem::Decimal(text) | BareItem::Token(text) => out.push_str(text),
        BareItem::String(s) => {
            out.push('"');
            for c in s.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        }
        BareItem::Bytes(bytes) => {
            out.push(':');
            out.push_str(&BASE64.encode(bytes));
            out.push(':');
        }
        BareItem::Boolean(b) => out.push_str(if *b { "?1" } else { "?0" }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(s: &str) -> Item {
        Item {
            bare: BareItem::String(s.to_owned()),
            params: Vec::new(),
        }
    }

    #[test]
    fn parses_and_reserialises_a_signature_input() {
        let input = r#"sig1=("@method"  "@target-uri" "content-digest");created=1618884473;keyid="k\"1";alg="rsa-v1_5-sha256" ,  sig2=:AAEC:;x"#;
        let dict = parse_dictionary(input).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(dict.len(), 2);
        let Member::InnerList(items, params) = &dict[0].1 else {
            panic!("sig1 is not an inner list");
        };
        assert_eq!(
            items,
            &vec![
                string("@method"),
                string("@target-uri"),
                string("content-digest")
            ]
        );
        assert_eq!(
            serialize_inner_list(items, params),
            r#"("@method" "@target-uri" "content-digest");created=1618884473;keyid="k\"1";alg="rsa-v1_5-sha256""#
        );
        assert_eq!(
            dict[1].1,
            Member::Item(Item {
                bare: BareItem::Bytes(vec![0, 1, 2]),
                params: vec![("x".to_owned(), BareItem::Boolean(true))],
            })
        );
    }

    #[test]
    fn refuses_broken_input() {
        for bad in [
            "sig1=(\"a\"",
            "Sig1=?1",
            "a=1,",
            "a=\"unterminated",
            "a=:AA",
            "a=1 b=2",
            "a=1234567890123456",
        ] {
            assert!(parse_dictionary(bad).is_err(), "{bad} was accepted");
        }
    }
}
