//! Attribute name → column name, as Strapi 4 derives it.
//!
//! `@strapi/database` 4.x names the column of a scalar attribute `lodash.snakeCase(name)`:
//! `displayTitle` → `display_title`, `HTMLBody` → `html_body`, and digits become words of their
//! own (`h1Title` → `h_1_title`). This is lodash's word splitting (its `reUnicodeWord`
//! alternatives, tried in the same order at each position), joined with `_` and lowercased.
//! Strapi's content-type builder only accepts ASCII attribute names (`^[A-Za-z][_0-9A-Za-z]*$`),
//! for which this is exact. For other characters lodash's classes are followed but its `deburr`
//! step (`é` → `e`) is not; a column derived differently from Strapi is then simply not found in
//! the table and the attribute is skipped with a warning, never guessed.

/// lodash's character classes, as its word regexps use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// `rsUpper`: A-Z and Latin-1 capitals.
    Upper,
    /// `rsLower`: a-z and Latin-1 small letters.
    Lower,
    /// `\d` (ASCII digits only, as in a JavaScript regexp without the `u` flag).
    Digit,
    /// `rsBreak`: ASCII punctuation and controls, Latin-1 punctuation, general punctuation,
    /// spaces. Never part of a word.
    Break,
    /// `rsMisc`: any other letter (Greek, CJK, ...): joins upper or lower runs.
    Misc,
}

fn class(c: char) -> Class {
    match c {
        'A'..='Z' | '\u{c0}'..='\u{d6}' | '\u{d8}'..='\u{de}' => Class::Upper,
        'a'..='z' | '\u{df}'..='\u{f6}' | '\u{f8}'..='\u{ff}' => Class::Lower,
        '0'..='9' => Class::Digit,
        '\u{0}'..='\u{bf}' | '\u{d7}' | '\u{f7}' | '\u{2000}'..='\u{206f}' => Class::Break,
        // Dingbats and characters outside the BMP (surrogate pairs in JavaScript) are not
        // matched by lodash's word regexp except as emoji; treat them as separators.
        '\u{2700}'..='\u{27bf}' => Class::Break,
        c if c.is_whitespace() || u32::from(c) > 0xFFFF => Class::Break,
        _ => Class::Misc,
    }
}

/// `lodash.snakeCase`: the column Strapi 4 stores attribute `name` in.
pub fn snake_case(name: &str) -> String {
    // lodash removes apostrophes before splitting (`reApos`).
    let chars: Vec<char> = name
        .chars()
        .filter(|c| !matches!(c, '\'' | '\u{2019}'))
        .collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (n, word) in words(&chars).into_iter().enumerate() {
        if n > 0 {
            out.push('_');
        }
        for c in word {
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// lodash `words`: ASCII-only strings without case changes or digit/letter boundaries are split
/// on non-alphanumerics; everything else goes through the unicode word regexp.
fn words(chars: &[char]) -> Vec<&[char]> {
    if has_unicode_word(chars) {
        unicode_words(chars)
    } else {
        chars
            .split(|c| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect()
    }
}

/// lodash `reHasUnicodeWord`:
/// `/[a-z][A-Z]|[A-Z]{2}[a-z]|[0-9][a-zA-Z]|[a-zA-Z][0-9]|[^a-zA-Z0-9 ]/`.
fn has_unicode_word(chars: &[char]) -> bool {
    let lower = |c: char| c.is_ascii_lowercase();
    let upper = |c: char| c.is_ascii_uppercase();
    let alpha = |c: char| c.is_ascii_alphabetic();
    let digit = |c: char| c.is_ascii_digit();
    chars
        .iter()
        .any(|&c| !(c.is_ascii_alphanumeric() || c == ' '))
        || chars.windows(2).any(|w| {
            (lower(w[0]) && upper(w[1]))
                || (digit(w[0]) && alpha(w[1]))
                || (alpha(w[0]) && digit(w[1]))
        })
        || chars
            .windows(3)
            .any(|w| upper(w[0]) && upper(w[1]) && lower(w[2]))
}

fn unicode_words(chars: &[char]) -> Vec<&[char]> {
    let cls: Vec<Class> = chars.iter().map(|&c| class(c)).collect();
    let mut words = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match word_at(chars, &cls, i) {
            Some(end) => {
                words.push(&chars[i..end]);
                i = end;
            }
            None => i += 1,
        }
    }
    words
}

/// End of the word starting at `i`, trying lodash's alternatives in its order.
fn word_at(chars: &[char], cls: &[Class], i: usize) -> Option<usize> {
    use Class::{Break, Lower, Misc, Upper};
    let n = cls.len();
    let at = |k: usize| cls.get(k).copied();
    let run = |from: usize, ok: &dyn Fn(Class) -> bool| {
        let mut k = from;
        while k < n && ok(cls[k]) {
            k += 1;
        }
        k
    };
    let opt_upper = if at(i) == Some(Upper) { i + 1 } else { i };

    // 1. `Upper? Lower+` followed by a break, an upper or the end.
    if at(opt_upper) == Some(Lower) {
        let end = run(opt_upper, &|c| c == Lower);
        if end == n || matches!(cls[end], Break | Upper) {
            return Some(end);
        }
    }
    // 2. `(Upper|Misc)+` followed by a break, `Upper (Lower|Misc)` or the end (backtracking).
    if matches!(at(i), Some(Upper | Misc)) {
        let max = run(i, &|c| matches!(c, Upper | Misc));
        for end in (i + 1..=max).rev() {
            let next_starts_word =
                at(end) == Some(Upper) && matches!(at(end + 1), Some(Lower | Misc));
            if end == n || cls[end] == Break || next_starts_word {
                return Some(end);
            }
        }
    }
    // 3. `Upper? (Lower|Misc)+`.
    if matches!(at(opt_upper), Some(Lower | Misc)) {
        return Some(run(opt_upper, &|c| matches!(c, Lower | Misc)));
    }
    // 4. `Upper+`.
    if at(i) == Some(Upper) {
        return Some(run(i, &|c| c == Upper));
    }
    // 5. and 6. Ordinals: `\d*(1ST|2ND|3RD|[04-9]TH)` before a boundary or a lowercase letter,
    // `\d*(1st|2nd|3rd|[04-9]th)` before a boundary or an uppercase letter.
    if let Some(end) = ordinal(chars, i, true).or_else(|| ordinal(chars, i, false)) {
        return Some(end);
    }
    // 7. `\d+`.
    if at(i) == Some(Class::Digit) {
        return Some(run(i, &|c| c == Class::Digit));
    }
    None
}

fn ordinal(chars: &[char], i: usize, upper: bool) -> Option<usize> {
    let n = chars.len();
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let suffixes: [&str; 3] = if upper {
        ["1ST", "2ND", "3RD"]
    } else {
        ["1st", "2nd", "3rd"]
    };
    let th = if upper { "TH" } else { "th" };
    let matches_at = |at: usize, lit: &str| {
        lit.chars()
            .enumerate()
            .all(|(k, c)| chars.get(at + k) == Some(&c))
    };
    // `(?=\b|[a-z_])` (upper form) or `(?=\b|[A-Z_])` (lower form); the ordinal ends in a
    // letter, so `\b` means the end or a non-word character.
    let followed_ok = |end: usize| match chars.get(end) {
        None => true,
        Some(&c) if !is_word(c) || c == '_' => true,
        Some(&c) => {
            if upper {
                c.is_ascii_lowercase()
            } else {
                c.is_ascii_uppercase()
            }
        }
    };
    let mut digits_end = i;
    while digits_end < n && chars[digits_end].is_ascii_digit() {
        digits_end += 1;
    }
    // `\d*` is greedy: try the longest digit prefix first.
    for k in (i..=digits_end).rev() {
        for lit in suffixes {
            if matches_at(k, lit) && followed_ok(k + 3) {
                return Some(k + 3);
            }
        }
        let digit_th = chars
            .get(k)
            .is_some_and(|c| c.is_ascii_digit() && !matches!(c, '1' | '2' | '3'))
            && matches_at(k + 1, th);
        if digit_th && followed_ok(k + 3) {
            return Some(k + 3);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::snake_case;

    /// Each pair checked against lodash 4.17.21 `_.snakeCase` (the version Strapi 4 ships).
    #[test]
    fn matches_lodash_snake_case() {
        let cases = [
            ("displayTitle", "display_title"),
            ("headlineText", "headline_text"),
            ("createdAt", "created_at"),
            ("publishedAt", "published_at"),
            ("field2Name", "field_2_name"),
            ("h1Title", "h_1_title"),
            ("HTMLBody", "html_body"),
            ("XMLHttpRequest", "xml_http_request"),
            ("already_snake", "already_snake"),
            ("provider_metadata", "provider_metadata"),
            ("ABCdef", "ab_cdef"),
            ("ABC1", "abc_1"),
            ("ABC", "abc"),
            ("ID", "id"),
            ("userID", "user_id"),
            ("userIDs", "user_i_ds"),
            ("MyAPI", "my_api"),
            ("iPhone", "i_phone"),
            ("the1stPlace", "the_1st_place"),
            ("x21stCentury", "x_21st_century"),
            ("a11th", "a_11_th"),
            ("4thOfJuly", "4th_of_july"),
            ("3RDparty", "3rd_party"),
            ("1ST", "1st"),
            ("abc123", "abc_123"),
            ("123abc", "123_abc"),
            ("aB1C", "a_b_1_c"),
            ("top10List", "top_10_list"),
            ("v2", "v_2"),
            ("URLPath2", "url_path_2"),
            ("camelCase2D", "camel_case_2_d"),
            ("area51", "area_51"),
            ("isEntryValid", "is_entry_valid"),
            ("__private", "private"),
            ("A_B_C", "a_b_c"),
            ("a-b", "a_b"),
            ("Abc Def", "abc_def"),
            ("when", "when"),
            ("日本語Text", "日本語_text"),
        ];
        for (name, want) in cases {
            assert_eq!(snake_case(name), want, "snake_case({name:?})");
        }
    }
}
