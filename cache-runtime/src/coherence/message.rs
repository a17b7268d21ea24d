//! The notices on the invalidation channel, as the scripts publish them:
//! `g <ns> <generation>` (a namespace has a new generation: a token, or a
//! fence, which views treat as unknown), `k <ns> <entry key>` (one entry
//! was invalidated or fenced) and `t <ns> <tag key>` (a tag of the
//! namespace was invalidated).

use crate::entry::token_value;
#[cfg(test)]
use crate::entry::{TOKEN_LEN, Token};

/// One invalidation, as published.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Message<'a> {
    /// `g <ns> <token>`: the namespace has a new generation.
    Generation { ns: &'a str, token: u64 },
    /// `k <ns> <entry key>`: one entry was invalidated.
    Key { ns: &'a str, key: &'a str },
    /// `t <ns> <tag key>`: the entries of one tag value were invalidated.
    Tag { ns: &'a str },
}

impl Message<'_> {
    #[cfg(test)]
    pub(crate) fn generation(ns: &str, token: &Token) -> Vec<u8> {
        let mut m = Vec::with_capacity(3 + ns.len() + TOKEN_LEN);
        m.extend_from_slice(b"g ");
        m.extend_from_slice(ns.as_bytes());
        m.push(b' ');
        m.extend_from_slice(token);
        m
    }

    #[cfg(test)]
    pub(crate) fn key(ns: &str, key: &str) -> Vec<u8> {
        let mut m = Vec::with_capacity(3 + ns.len() + key.len());
        m.extend_from_slice(b"k ");
        m.extend_from_slice(ns.as_bytes());
        m.push(b' ');
        m.extend_from_slice(key.as_bytes());
        m
    }

    pub(crate) fn parse(bytes: &[u8]) -> Option<Message<'_>> {
        let text = std::str::from_utf8(bytes).ok()?;
        let (kind, rest) = text.split_once(' ')?;
        let (ns, arg) = rest.split_once(' ')?;
        match kind {
            "g" => Some(Message::Generation {
                ns,
                token: token_value(arg.as_bytes()),
            }),
            "k" => Some(Message::Key { ns, key: arg }),
            "t" => Some(Message::Tag { ns }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let t = crate::entry::token();
        let g = Message::generation("flight_count", &t);
        assert_eq!(
            Message::parse(&g),
            Some(Message::Generation {
                ns: "flight_count",
                token: token_value(&t)
            })
        );
        let k = Message::key("airport", "app:{airport}:v1:F R A");
        assert_eq!(
            Message::parse(&k),
            Some(Message::Key {
                ns: "airport",
                key: "app:{airport}:v1:F R A"
            })
        );
        assert_eq!(
            Message::parse(b"t orders app:{orders}:#t:user:7"),
            Some(Message::Tag { ns: "orders" })
        );
        assert_eq!(Message::parse(b"x y z"), None);
        assert_eq!(Message::parse(b"g"), None);
        assert_eq!(Message::parse(&[0xff, b' ', b'a', b' ', b'b']), None);
    }
}
