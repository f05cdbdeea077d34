//! Characters a policy cannot use outside strings, named for people: a NUL byte or a control
//! character shows as nothing or a space, and a Cyrillic `р` looks exactly like a Latin `p`.
//! A diagnostic names such a character by code point and, for a look-alike, the ASCII letter.

/// Common letters that look like ASCII ones: (character, ASCII look-alike, Unicode name).
const CONFUSABLES: &[(char, char, &str)] = &[
    ('а', 'a', "CYRILLIC SMALL LETTER A"),
    ('в', 'b', "CYRILLIC SMALL LETTER VE"),
    ('е', 'e', "CYRILLIC SMALL LETTER IE"),
    ('і', 'i', "CYRILLIC SMALL LETTER BYELORUSSIAN-UKRAINIAN I"),
    ('ј', 'j', "CYRILLIC SMALL LETTER JE"),
    ('к', 'k', "CYRILLIC SMALL LETTER KA"),
    ('м', 'm', "CYRILLIC SMALL LETTER EM"),
    ('н', 'h', "CYRILLIC SMALL LETTER EN"),
    ('о', 'o', "CYRILLIC SMALL LETTER O"),
    ('р', 'p', "CYRILLIC SMALL LETTER ER"),
    ('с', 'c', "CYRILLIC SMALL LETTER ES"),
    ('т', 't', "CYRILLIC SMALL LETTER TE"),
    ('у', 'y', "CYRILLIC SMALL LETTER U"),
    ('х', 'x', "CYRILLIC SMALL LETTER HA"),
    ('ѕ', 's', "CYRILLIC SMALL LETTER DZE"),
    ('ԁ', 'd', "CYRILLIC SMALL LETTER KOMI DE"),
    ('ԛ', 'q', "CYRILLIC SMALL LETTER QA"),
    ('ԝ', 'w', "CYRILLIC SMALL LETTER WE"),
    ('А', 'A', "CYRILLIC CAPITAL LETTER A"),
    ('В', 'B', "CYRILLIC CAPITAL LETTER VE"),
    ('Е', 'E', "CYRILLIC CAPITAL LETTER IE"),
    ('К', 'K', "CYRILLIC CAPITAL LETTER KA"),
    ('М', 'M', "CYRILLIC CAPITAL LETTER EM"),
    ('Н', 'H', "CYRILLIC CAPITAL LETTER EN"),
    ('О', 'O', "CYRILLIC CAPITAL LETTER O"),
    ('Р', 'P', "CYRILLIC CAPITAL LETTER ER"),
    ('С', 'C', "CYRILLIC CAPITAL LETTER ES"),
    ('Т', 'T', "CYRILLIC CAPITAL LETTER TE"),
    ('Х', 'X', "CYRILLIC CAPITAL LETTER HA"),
    ('α', 'a', "GREEK SMALL LETTER ALPHA"),
    ('ι', 'i', "GREEK SMALL LETTER IOTA"),
    ('κ', 'k', "GREEK SMALL LETTER KAPPA"),
    ('ν', 'v', "GREEK SMALL LETTER NU"),
    ('ο', 'o', "GREEK SMALL LETTER OMICRON"),
    ('ρ', 'p', "GREEK SMALL LETTER RHO"),
    ('τ', 't', "GREEK SMALL LETTER TAU"),
    ('υ', 'u', "GREEK SMALL LETTER UPSILON"),
    ('Α', 'A', "GREEK CAPITAL LETTER ALPHA"),
    ('Β', 'B', "GREEK CAPITAL LETTER BETA"),
    ('Ε', 'E', "GREEK CAPITAL LETTER EPSILON"),
    ('Η', 'H', "GREEK CAPITAL LETTER ETA"),
    ('Ι', 'I', "GREEK CAPITAL LETTER IOTA"),
    ('Κ', 'K', "GREEK CAPITAL LETTER KAPPA"),
    ('Μ', 'M', "GREEK CAPITAL LETTER MU"),
    ('Ν', 'N', "GREEK CAPITAL LETTER NU"),
    ('Ο', 'O', "GREEK CAPITAL LETTER OMICRON"),
    ('Ρ', 'P', "GREEK CAPITAL LETTER RHO"),
    ('Τ', 'T', "GREEK CAPITAL LETTER TAU"),
    ('Χ', 'X', "GREEK CAPITAL LETTER CHI"),
    ('Υ', 'Y', "GREEK CAPITAL LETTER UPSILON"),
    ('Ζ', 'Z', "GREEK CAPITAL LETTER ZETA"),
];

/// Names of characters that are invisible or look like a space.
const INVISIBLE: &[(char, &str)] = &[
    ('\0', "NULL"),
    ('\u{a0}', "NO-BREAK SPACE"),
    ('\u{200b}', "ZERO WIDTH SPACE"),
    ('\u{200c}', "ZERO WIDTH NON-JOINER"),
    ('\u{200d}', "ZERO WIDTH JOINER"),
    ('\u{2060}', "WORD JOINER"),
    ('\u{3000}', "IDEOGRAPHIC SPACE"),
    ('\u{feff}', "ZERO WIDTH NO-BREAK SPACE"),
];

/// A character no name, keyword or operator contains: anything but printable ASCII and the
/// whitespace the grammar skips.
pub fn is_foreign(c: char) -> bool {
    !(c.is_ascii_graphic() || matches!(c, ' ' | '\t' | '\r' | '\n'))
}

/// "U+0440 CYRILLIC SMALL LETTER ER", or "U+00E9" when the name is not in the table.
pub fn describe(c: char) -> String {
    let code = format!("U+{:04X}", c as u32);
    let name = CONFUSABLES
        .iter()
        .find(|(x, _, _)| *x == c)
        .map(|(_, _, n)| *n)
        .or_else(|| INVISIBLE.iter().find(|(x, _)| *x == c).map(|(_, n)| *n));
    match name {
        Some(n) => format!("{code} {n}"),
        None if c.is_control() => format!("{code} (a control character)"),
        None => code,
    }
}

/// The ASCII letter `c` looks like, if it is a known look-alike.
pub fn ascii_lookalike(c: char) -> Option<char> {
    CONFUSABLES.iter().find(|(x, _, _)| *x == c).map(|(_, a, _)| *a)
}

/// `word` with every known look-alike replaced by its ASCII letter, if that leaves it ASCII.
pub fn ascii_spelling(word: &str) -> Option<String> {
    let out: String = word.chars().map(|c| ascii_lookalike(c).unwrap_or(c)).collect();
    (out != word && out.is_ascii()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_spellings() {
        assert_eq!(describe('р'), "U+0440 CYRILLIC SMALL LETTER ER");
        assert_eq!(describe('\0'), "U+0000 NULL");
        assert_eq!(describe('\u{1}'), "U+0001 (a control character)");
        assert_eq!(describe('é'), "U+00E9");
        assert_eq!(ascii_spelling("gрu").as_deref(), Some("gpu"));
        assert_eq!(ascii_spelling("gpu"), None);
        assert_eq!(ascii_spelling("gрé"), None);
        assert!(is_foreign('р') && is_foreign('\0') && !is_foreign('p') && !is_foreign('\n'));
    }
}
